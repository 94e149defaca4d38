"""
The CPU per message of inbound authentication as the server runs it, in one
process, without SMTP or disk: SPF at MAIL FROM (L{SenderSPF}), then the
mailauth filter (L{InboundAuthentication}: the real L{Authenticator}, its
DNS answers cached, one real verification worker process), C messages in
flight on the reactor.  Prints the reactor thread's CPU per message (user,
system) and the worker's: figures that the other processes of the machine
disturb far less than the throughput of C{mailauth_throughput.py}::

    python bench/mailauth_path.py [--size 1024] [--concurrency 8] [--count 6000]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

from twisted.internet import defer, reactor  # noqa: E402
from twisted.internet.defer import Deferred, succeed  # noqa: E402
from twisted.names import dns  # noqa: E402

from mailauth_throughput import SENDER, SENDER_DOMAIN, signed_messages  # noqa: E402
from mailserver.address import parse_mailbox  # noqa: E402
from mailserver.delivery.authentication import InboundAuthentication, SenderSPF  # noqa: E402
from mailserver.envelope import Client, Envelope  # noqa: E402
from mailserver.mailauth.dkim_keys import generate  # noqa: E402
from mailserver.mailauth.inbound import Authenticator, InboundPolicy  # noqa: E402
from mailserver.mailauth.verify_process import VerifyProcesses  # noqa: E402
from mailserver.spooled import SpooledMessage  # noqa: E402

MAX_COUNT = 100_000


class ZoneResolver:
    """TXT answers from a dict (the sender domain's SPF, DMARC and DKIM keys), an hour's TTL."""

    def __init__(self, zone: dict[str, str]) -> None:
        self.zone = zone

    def lookupText(self, name: str, timeout: object = None) -> Deferred:
        text = self.zone.get(name)
        if text is None:
            return succeed(([], [], []))
        data = text.encode()
        record = dns.Record_TXT(*[data[i:i + 255] for i in range(0, len(data), 255)], ttl=3600)
        return succeed(([dns.RRHeader(name, dns.TXT, ttl=3600, payload=record)], [], []))


def cpu_of(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(size: int, concurrency: int, count: int) -> str:
    keys = [generate(SENDER_DOMAIN, "bench", "rsa"), generate(SENDER_DOMAIN, "bench", "ed25519")]
    message = signed_messages(keys)[size]
    zone = {SENDER_DOMAIN: "v=spf1 ip4:127.0.0.1 -all", f"_dmarc.{SENDER_DOMAIN}": "v=DMARC1; p=reject",
            **{key.dns_name: key.txt_value for key in keys}}
    authenticator = Authenticator(ZoneResolver(zone), reactor, InboundPolicy("mx.example.com"))
    pool = VerifyProcesses(reactor, 1, authenticator.dkim.in_thread)
    authenticator.dkim.processes = pool
    pool.start()
    try:
        spf = SenderSPF(authenticator, lambda client: False, False)
        mailauth = InboundAuthentication(authenticator, lambda client: False, reactor)
        client, sender = Client("127.0.0.1", "client.example.net"), parse_mailbox(SENDER)

        async def deliver(n: int) -> None:
            for _ in range(n):
                envelope = Envelope(client=client, sender=sender)
                await spf.check(envelope)
                result = await mailauth.filter(envelope, SpooledMessage(message))
                if result.error is not None or result.quarantine is not None:
                    raise RuntimeError(f"not accepted: {result}")

        async def round_(n: int) -> None:
            await defer.gatherResults([Deferred.fromCoroutine(deliver(n)) for _ in range(concurrency)])

        await round_(100)  # warm: the worker started, the cache filled
        workers = [worker.transport.pid for worker in pool.workers]
        before, worker_before, started = resource.getrusage(resource.RUSAGE_THREAD), sum(map(cpu_of, workers)), \
            time.perf_counter()
        await round_(count // concurrency)
        after, worker_after = resource.getrusage(resource.RUSAGE_THREAD), sum(map(cpu_of, workers))
        wall = time.perf_counter() - started
    finally:
        await pool.stop()
    done = count // concurrency * concurrency
    user, system = (after.ru_utime - before.ru_utime) / done * 1e6, (after.ru_stime - before.ru_stime) / done * 1e6
    return (f"{size // 1024} KB, C={concurrency}, N={done}: reactor {user + system:4.0f} µs/msg "
            f"(user {user:.0f}, system {system:.0f}), worker {(worker_after - worker_before) / done * 1e6:4.0f} µs/msg, "
            f"{done / wall:.0f} msg/s")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, choices=(1024, 10240), default=1024)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--count", type=int, default=6000, help=f"messages (at most {MAX_COUNT})")
    args = parser.parse_args(argv)
    if not args.concurrency <= args.count <= MAX_COUNT or args.concurrency < 1:
        parser.error(f"count must be concurrency..{MAX_COUNT}")
    outcome: list[str] = []
    finished = Deferred.fromCoroutine(measure(args.size, args.concurrency, args.count))
    finished.addCallbacks(outcome.append, lambda failure: outcome.append(failure.getTraceback()))
    finished.addBoth(lambda _: reactor.stop())
    reactor.run()
    print(outcome[0] if outcome else "interrupted")


if __name__ == "__main__":
    main()
