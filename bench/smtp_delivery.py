"""
SMTP delivery throughput: N messages of S bytes over C concurrent loopback
connections to a running server, until every message is in the Maildir.

By default it starts its own server (``twistd -n mailserver``) on a free
loopback port in a scratch directory; ``--port`` targets a server already
running on 127.0.0.1 (then ``--maildir`` names the Maildir to watch).
It prints accepted msgs/s, the time until all messages are in ``new/``, the
raw disk limit for the same pattern (write + fsync + rename, with C
threads) measured in the same run -- in slices that alternate with the
server's, so both see the same disk -- and the ratio between the two::

    python bench/smtp_delivery.py --count 1000 --size 1024 --concurrency 8
    python bench/smtp_delivery.py --matrix          # 1 KB and 100 KB at C = 1 and 8
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from typing import Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from disk_limit import MAX_COUNT, measure_raw_disk  # noqa: E402

RECIPIENT = "bench@example.com"
CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_environment() -> dict[str, str]:
    """The environment of a server child: this checkout's mailserver and plugin first, not an installed copy."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (CHECKOUT, os.environ.get("PYTHONPATH"))))}


class ScratchServer:
    """
    A twistd child on 127.0.0.1 with one user, in a scratch directory;
    C{settings} replace or add main.cf parameters of the base configuration.
    """

    def __init__(self, root: str, rules: int = 0, settings: dict[str, str] | None = None,
                 launcher: list[str] | None = None) -> None:
        """C{launcher}: the command that runs the server, given C{--config PATH} (default: twistd)."""
        self.root = root
        self.port = free_port()
        self.maildir = os.path.join(root, "data", "mail", "example.com", "bench")
        config = os.path.join(root, "main.cf")
        base = {
            "myhostname": "mx.example.com", "mydestination": "$myhostname, example.com",
            "data_directory": f"{root}/data", "passwd_file": f"{root}/passwd",
            "smtpd_listen": f"tcp:{self.port}:interface=127.0.0.1",
            "submission_listen": "", "smtps_listen": "", "pop3_listen": "", "pop3s_listen": "",
            "imap_listen": "", "imaps_listen": "", "managesieve_listen": "",
            "smtpd_client_connection_count_limit": "0",
            "message_size_limit": "0", "smtpd_timeout": "3600s",
        }
        with open(config, "w") as handle:
            handle.writelines(f"{name} = {value}\n" for name, value in {**base, **(settings or {})}.items())
        with open(os.path.join(root, "passwd"), "w") as handle:
            handle.write(f"{RECIPIENT}:{{PLAIN}}x::::::\n")
        if rules:
            with open(os.path.join(root, "header_checks"), "w") as handle:
                handle.writelines(f"/^Subject:.*forbidden{n}word/ REJECT rule {n}\n" for n in range(rules))
            with open(os.path.join(root, "body_checks"), "w") as handle:
                handle.writelines(f"/never(seen|used){n}here/ REJECT rule {n}\n" for n in range(rules))
            with open(config, "a") as handle:
                handle.write(f"header_checks = regexp:{root}/header_checks\nbody_checks = regexp:{root}/body_checks\n"
                             "body_checks_size_limit = 0\n")
        command = launcher or [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n",
                               "--pidfile=", "--logfile", os.path.join(root, "twistd.log"), "mailserver"]
        self.process = subprocess.Popen([*command, "--config", config], cwd=root, env=server_environment())
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        self.stop()
        with open(os.path.join(root, "twistd.log")) as log:
            raise RuntimeError("server did not start:\n" + log.read()[-3000:])

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if the reactor thread is too busy to stop within 10 s."""
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)


def message(size: int, n: int) -> bytes:
    head = f"From: bench@remote.example\r\nTo: {RECIPIENT}\r\nSubject: bench {n}\r\n\r\n".encode()
    line = b"x" * 76 + b"\r\n"
    body = line * max(0, (size - len(head)) // len(line))
    return head + body


SENDER = "bench@remote.example"


async def connection(port: int, share: int, size: int, group_data: bool = True,
                     latencies: list[float] | None = None,
                     make: Callable[[int, int], bytes] = message, sender: str = SENDER) -> None:
    """
    One client connection: EHLO once, then each message with PIPELINING
    (RFC 2920).  With C{group_data} the end of a message and the next
    MAIL, RCPT and DATA go in one write -- RFC 2920 section 3.1 lets message
    content open a group and DATA close it -- so a message costs one round
    trip; without it, two (the envelope, then the content).  C{latencies}
    gets each message's time from its end of data to its 250.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def expect(*codes: bytes) -> None:
        for code in codes:
            for _ in range(100):
                line = await reader.readline()
                if not line:
                    raise RuntimeError("connection closed")
                if line[3:4] != b"-":
                    break
            if not line.startswith(code):
                raise RuntimeError(line)

    await expect(b"220")
    writer.write(b"EHLO bench.example\r\n")
    await expect(b"250")
    envelope = f"MAIL FROM:<{sender}>\r\nRCPT TO:<{RECIPIENT}>\r\nDATA\r\n".encode()
    if share:
        writer.write(envelope)
        await expect(b"250", b"250", b"354")
    for n in range(share):
        content = make(size, n).replace(b"\r\n.", b"\r\n..") + b".\r\n"
        start = time.perf_counter()
        if group_data and n + 1 < share:
            writer.write(content + envelope)
            await expect(b"250")
            if latencies is not None:
                latencies.append(time.perf_counter() - start)
            await expect(b"250", b"250", b"354")
        else:
            writer.write(content)
            await expect(b"250")
            if latencies is not None:
                latencies.append(time.perf_counter() - start)
            if n + 1 < share:
                writer.write(envelope)
                await expect(b"250", b"250", b"354")
    writer.write(b"QUIT\r\n")
    await expect(b"221")
    writer.close()


async def _probe(port: int, done: asyncio.Event) -> list[float]:
    """Another session sending NOOP every 10 ms during the load: its reply times show stalls."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await reader.readline()
    latencies: list[float] = []
    while not done.is_set() and len(latencies) < 100_000:
        start = time.perf_counter()
        writer.write(b"NOOP\r\n")
        await reader.readline()
        latencies.append(time.perf_counter() - start)
        await asyncio.sleep(0.01)
    writer.close()
    return latencies


def send(port: int, count: int, size: int, concurrency: int, group_data: bool = True,
         make: Callable[[int, int], bytes] = message, sender: str = SENDER) -> tuple[float, list[float]]:
    """
    Seconds to have C{count} messages accepted (250) over C{concurrency}
    connections, and the NOOP reply times of a probe session meanwhile.
    """
    shares = [count // concurrency + (1 if i < count % concurrency else 0) for i in range(concurrency)]

    async def all_connections() -> list[float]:
        done = asyncio.Event()
        probe = asyncio.ensure_future(_probe(port, done))
        await asyncio.gather(*(connection(port, share, size, group_data, make=make, sender=sender) for share in shares))
        done.set()
        return await probe

    start = time.perf_counter()
    latencies = asyncio.run(all_connections())
    return time.perf_counter() - start, latencies


def wait_for(maildir: str, count: int, timeout: float = 600) -> None:
    new = os.path.join(maildir, "new")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.isdir(new) and len(os.listdir(new)) >= count:
            return
        time.sleep(0.01)
    raise RuntimeError(f"only {len(os.listdir(new))} of {count} messages arrived")


def run(port: int, maildir: str, count: int, size: int, concurrency: int, scratch: str,
        slices: int = 5, group_data: bool = True) -> float:
    """
    Deliver C{count} messages in C{slices} slices, each followed by the raw
    disk pattern for as many messages: this virtual disk's speed swings by a
    factor of five within a minute, so the server and the raw limit are
    measured turn and turn about and both see the same disk.
    """
    new = os.path.join(maildir, "new")
    delivered = len(os.listdir(new)) if os.path.isdir(new) else 0
    slices = max(1, min(slices, count // concurrency))
    accepted = in_maildir = raw_time = raw_single_time = 0.0
    latencies: list[float] = []
    for index in range(slices):
        share = count // slices + (1 if index < count % slices else 0)
        start = time.perf_counter()
        sending, probe = send(port, share, size, concurrency, group_data)
        delivered += share
        wait_for(maildir, delivered)
        in_maildir += time.perf_counter() - start
        accepted += sending
        latencies += probe
        raw_time += share / measure_raw_disk(scratch, share, size, concurrency)
        if concurrency > 1:
            raw_single_time += share / measure_raw_disk(scratch, share, size, 1)
    raw = count / raw_time
    raw_single = count / raw_single_time if concurrency > 1 else raw
    rate = count / in_maildir
    latencies.sort()
    print(
        f"size={size // 1024} KB C={concurrency} N={count} {1 if group_data else 2} RTT/msg: accepted {count / accepted:7.0f} msg/s, "
        f"all in Maildir after {in_maildir:6.2f} s ({rate:7.0f} msg/s); raw disk {raw:7.0f} msg/s "
        f"with {concurrency} thread(s), {raw_single:7.0f} with 1 ({slices} slices each); "
        f"ratio {rate / raw:5.0%} ({rate / raw_single:4.0%} of 1 thread); "
        f"probe NOOP max {latencies[-1] * 1000:.0f} ms, median {latencies[len(latencies) // 2] * 1000:.1f} ms"
        if latencies else "",
        flush=True,
    )
    return rate


def compare_checks(count: int, scratch: str, slices: int = 5) -> None:
    """
    Delivery of 10 KB messages at C = 8 through a server with empty tables
    and one with 100 + 100 rules, both running, in alternating slices so
    both see the same phases of the disk.
    """
    servers = {}
    try:
        for rules in (0, 100):
            servers[rules] = ScratchServer(tempfile.mkdtemp(prefix=f"rules{rules}-", dir=scratch), rules=rules)
        elapsed = {0: 0.0, 100: 0.0}
        delivered = {0: 0, 100: 0}
        for index in range(slices):
            share = count // slices + (1 if index < count % slices else 0)
            for rules, server in servers.items():
                start = time.perf_counter()
                send(server.port, share, 10240, 8)
                delivered[rules] += share
                wait_for(server.maildir, delivered[rules])
                elapsed[rules] += time.perf_counter() - start
        rates = {rules: count / seconds for rules, seconds in elapsed.items()}
        for rules, rate in rates.items():
            print(f"{rules} header rules + {rules} body rules: 10 KB, C=8, N={count}: {rate:7.0f} msg/s")
    finally:
        for server in servers.values():
            server.stop()
    print(f"cost of 100 + 100 rules on 10 KB messages: {1 - rates[100] / rates[0]:.0%} of throughput "
          f"({slices} alternating slices)")
    root = tempfile.mkdtemp(prefix="big-", dir=scratch)
    server = ScratchServer(root, rules=100)
    try:
        print("one 10 MB message, 100 + 100 rules:", end=" ")
        run(server.port, server.maildir, 1, 10 * 1024 * 1024, 1, scratch)
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1000, help=f"messages (at most {MAX_COUNT})")
    parser.add_argument("--size", type=int, default=1024, help="message size in bytes")
    parser.add_argument("--concurrency", type=int, default=8, help="connections")
    parser.add_argument("--matrix", action="store_true", help="1 KB and 100 KB at C = 1 and 8")
    parser.add_argument("--checks", action="store_true",
                        help="10 KB at C = 8 without and with 100 header + 100 body rules; one 10 MB message")
    parser.add_argument("--slices", type=int, default=5,
                        help="server and raw disk measured alternately in this many slices (default 5)")
    parser.add_argument("--round-trips", type=int, choices=(1, 2), default=1,
                        help="per message: 1 = content and next envelope in one write (default), "
                             "2 = envelope and content each wait for their replies")
    parser.add_argument("--port", type=int, help="a server already running on 127.0.0.1")
    parser.add_argument("--maildir", help="with --port: the Maildir of " + RECIPIENT)
    args = parser.parse_args(argv)
    if not 1 <= args.count <= MAX_COUNT or not 1 <= args.concurrency <= 64:
        parser.error("count must be 1..%d and concurrency 1..64" % MAX_COUNT)
    scratch = tempfile.mkdtemp(prefix="smtp-bench-")
    server = None
    try:
        if args.checks:
            compare_checks(args.count, scratch)
            return
        if args.port:
            if not args.maildir:
                parser.error("--port needs --maildir")
            port, maildir = args.port, args.maildir
        else:
            server = ScratchServer(scratch)
            port, maildir = server.port, server.maildir
        cases = [(1024, 1), (1024, 8), (102400, 1), (102400, 8)] if args.matrix else [(args.size, args.concurrency)]
        for size, concurrency in cases:
            run(port, maildir, args.count, size, concurrency, scratch, args.slices, args.round_trips == 1)
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
