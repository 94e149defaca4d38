"""
Milter round trips against a real rspamd: N messages over C concurrent
milter sessions, each message a full milter transaction (MAIL, RCPT, DATA,
headers, end of headers, body, end of message, abort), M messages per milter
connection (connect + HELO once per connection, as one SMTP connection
delivering M messages would).

Starts its own rspamd (proxy worker in milter mode, self_scan, offline
configuration of tests/milter/rspamd.py) with W scanning workers, and prints
messages/s, latency per message and the client's CPU time per message (what
the milter costs the server's reactor thread)::

    python bench/milter.py --count 2000 --concurrency 8 --size 1024
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from twisted.internet import defer, task  # noqa: E402

from mailserver.milter import codec  # noqa: E402
from mailserver.milter.client import REJECT, MilterSession, check_message, endpoint_connector  # noqa: E402
from mailserver.milter.settings import MilterSettings, parse_address  # noqa: E402
from tests.milter.rspamd import Rspamd  # noqa: E402

MACROS = {"j": "mx.example.com", "{daemon_name}": "mx.example.com", "v": "mailserver", "i": "BENCH"}


def make_message(size: int, n: int) -> bytes:
    head = (
        "Received: from client.example.com ([192.0.2.10]) by mx.example.com (mailserver)"
        f" with ESMTP id BENCH{n}; Fri, 4 Dec 2026 16:00:00 +0000\n"
        "From: Alice <alice@example.com>\nTo: Bob <bob@example.org>\n"
        f"Subject: Benchmark message {n}\nMessage-ID: <bench{n}@example.com>\n"
        "Date: Fri, 4 Dec 2026 16:00:00 +0000\n\n"
    )
    line = "The quick brown fox jumps over the lazy dog, again and again.\n"
    body = (line * (max(0, size - len(head)) // len(line) + 1))[: max(0, size - len(head))]
    return (head + body).encode()


async def worker(reactor: Any, spec: Any, todo: list[int], per_connection: int, size: int,
                 latencies: list[float], outcomes: dict[str, int]) -> None:  # fmt: skip
    settings = MilterSettings(spec, macros={b"C": ("j", "{daemon_name}", "v"), b"M": ("i",), b"E": ("i",)})
    while todo:
        session = MilterSession(settings, reactor, endpoint_connector(spec, reactor))
        await session.connect(MACROS, "client.example.com", codec.FAMILY_INET, 40000, "192.0.2.10")
        await session.helo("client.example.com")
        for _ in range(per_connection):
            if not todo:
                break
            n = todo.pop()
            started = time.perf_counter()
            await session.mail_from(["<alice@example.com>"], MACROS)
            await session.rcpt(["<bob@example.org>"], MACROS)
            await session.data(MACROS)
            verdict = await check_message(session, make_message(size, n), MACROS)
            session.abort()
            latencies.append(time.perf_counter() - started)
            key = "default" if verdict.default else verdict.action
            outcomes[key] = outcomes.get(key, 0) + 1
        await session.quit()


def child(code: str) -> tuple[subprocess.Popen[bytes], int]:
    """A Python child process that prints the port it serves on."""
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, cwd=ROOT)
    assert process.stdout is not None
    return process, int(process.stdout.readline())


async def run(reactor: Any, args: argparse.Namespace) -> None:
    children = []
    server: Any = None
    if args.null:
        null, port = child("from tests.milter.nullmilter import main; main()")
        children.append(null)
        address = f"inet:127.0.0.1:{port}"
    else:
        dns_port = 1
        if args.dns:  # rspamd's SPF, DMARC, RBL look-ups answered NXDOMAIN at once
            dns, dns_port = child("from tests.milter.rspamd import nxdomain_server; nxdomain_server()")
            children.append(dns)
        server = Rspamd(workers=args.workers, dns_port=dns_port).wait_ready()
        address = server.address
    try:
        spec = parse_address(address)
        # Warm up (rspamd compiles and caches on first use).
        await worker(reactor, spec, list(range(20)), 10, args.size, [], {})
        todo = list(range(args.count))
        latencies: list[float] = []
        outcomes: dict[str, int] = {}
        cpu, wall = time.process_time(), time.perf_counter()
        await defer.gatherResults([
            defer.Deferred.fromCoroutine(
                worker(reactor, spec, todo, args.per_connection, args.size, latencies, outcomes))
            for _ in range(args.concurrency)
        ])  # fmt: skip
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        if server is not None:
            server.stop()
        for process in children:
            process.terminate()
            process.wait()
    latencies.sort()
    done = len(latencies)
    what = ("null milter (client cost alone)" if args.null else
            f"rspamd milter, {args.workers} worker(s), DNS {'NXDOMAIN server' if args.dns else 'time-outs'}")
    print(f"{what}; C = {args.concurrency}, {done} messages of"
          f" {args.size} bytes, {args.per_connection} per milter connection")  # fmt: skip
    print(f"  throughput      {done / wall:8.1f} msg/s  ({wall:.2f} s)")
    print(f"  latency         p50 {statistics.median(latencies) * 1000:.1f} ms,"
          f" p99 {latencies[int(done * 0.99) - 1] * 1000:.1f} ms")  # fmt: skip
    print(f"  client CPU      {cpu / done * 1000:8.3f} ms/msg (reactor thread cost of the milter)")
    print(f"  outcomes        {outcomes}")
    if outcomes.get("default") or outcomes.get(REJECT):
        print("  WARNING: some messages were not scanned normally")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--concurrency", "-c", type=int, default=8)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--per-connection", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2, help="rspamd proxy (self_scan) workers")
    parser.add_argument("--no-dns", dest="dns", action="store_false",
                        help="no loopback DNS: rspamd's look-ups time out (0.1 s each)")
    parser.add_argument("--null", action="store_true",
                        help="a null milter (tests/milter/nullmilter.py) instead of rspamd")
    args = parser.parse_args()
    task.react(lambda reactor: defer.Deferred.fromCoroutine(run(reactor, args)))


if __name__ == "__main__":
    main()
