"""
The cost of idle IMAP sessions, and how fast one delivery wakes them all.

Starts a scratch server (as ``bench/compare.py`` does: its own cgroup,
``imap_client_limit``, ``login_per_ip_limit`` and
``mail_max_userip_connections`` set to 0, so every client may come from
127.0.0.1), raises this process's RLIMIT_NOFILE, opens N connections that
each LOGIN, SELECT INBOX and IDLE, and prints:

- the server's RSS before and with the N sessions, per session (and, with
  ``--peer`` as root, Dovecot's PSS per session summed over its processes);
- one message delivered by SMTP: the time from its end of data to each
  session's ``* N EXISTS`` (p50, p99, max).

::

    python bench/imap_idle.py --connections 1000
    python bench/imap_idle.py --connections 5000
    sudo python bench/imap_idle.py --connections 1000 --peer
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.join(HERE, "peers")]
from compare import DOMAIN, PASSWORD, READER, OurServer, fill  # noqa: E402
from smtp_delivery import free_port  # noqa: E402

MAX_CONNECTIONS = 10_000
LOGIN_BATCH = 200


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class IdleSession:
    """One client: LOGIN, SELECT INBOX, IDLE; then waits for EXISTS."""

    def __init__(self) -> None:
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.woken_at: float | None = None

    async def open(self, port: int) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", port)
        await self.reader.readline()
        for tag, command in ((b"a", f"LOGIN {READER}@{DOMAIN} {PASSWORD}"), (b"b", "SELECT INBOX")):
            self.writer.write(tag + b" " + command.encode() + b"\r\n")
            await self._until(tag + b" ")
        self.writer.write(b"c IDLE\r\n")
        await self._until(b"+")

    async def _until(self, prefix: bytes) -> bytes:
        for _ in range(1000):
            line = await self.reader.readline()
            if not line:
                raise RuntimeError("connection closed")
            if line.startswith(prefix):
                if prefix.endswith(b" ") and b" OK" not in line[:8]:
                    raise RuntimeError(line)
                return line
        raise RuntimeError(f"no {prefix!r} line")

    async def wait_for_exists(self) -> None:
        for _ in range(1000):
            line = await self.reader.readline()
            if not line:
                raise RuntimeError("connection closed while idling")
            if line.startswith(b"* ") and line.rstrip().endswith(b" EXISTS"):
                self.woken_at = time.perf_counter()
                return

    async def close(self) -> None:
        try:
            self.writer.write(b"DONE\r\nd LOGOUT\r\n")
            await self.writer.drain()
        except OSError:
            pass
        self.writer.close()


async def deliver(port: int) -> float:
    """One message by SMTP; the time its end of data was sent."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def reply() -> bytes:
        while True:
            line = await reader.readline()
            if line[3:4] != b"-":
                return line

    await reply()
    sent = 0.0
    for command in (b"EHLO bench.example", b"MAIL FROM:<a@remote.example>",
                    f"RCPT TO:<{READER}@{DOMAIN}>".encode(), b"DATA"):
        writer.write(command + b"\r\n")
        await reply()
    sent = time.perf_counter()
    writer.write(b"Subject: wake up\r\n\r\nhello\r\n.\r\n")
    line = await reply()
    if not line.startswith(b"250"):
        raise RuntimeError(line)
    writer.write(b"QUIT\r\n")
    writer.close()
    return sent


async def run(imap_port: int, smtp_port: int | None, count: int, pid_rss) -> dict[str, float]:
    sessions = [IdleSession() for _ in range(count)]
    warm = IdleSession()
    await warm.open(imap_port)
    await warm.close()
    await asyncio.sleep(0.5)
    before = pid_rss()
    start = time.perf_counter()
    for offset in range(0, count, LOGIN_BATCH):
        await asyncio.gather(*(s.open(imap_port) for s in sessions[offset:offset + LOGIN_BATCH]))
    opened = time.perf_counter() - start
    await asyncio.sleep(1)
    during = pid_rss()
    result = {"before": before, "during": during, "per_session": (during - before) / count, "open_s": opened}
    if smtp_port is not None:
        waiters = [asyncio.ensure_future(s.wait_for_exists()) for s in sessions]
        sent = await deliver(smtp_port)
        await asyncio.wait_for(asyncio.gather(*waiters), timeout=120)
        delays = sorted(s.woken_at - sent for s in sessions)
        result.update(p50=delays[len(delays) // 2], p99=delays[min(len(delays) - 1, int(len(delays) * 0.99))],
                      max=delays[-1])
    for offset in range(0, count, LOGIN_BATCH):
        await asyncio.gather(*(s.close() for s in sessions[offset:offset + LOGIN_BATCH]))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--peer", action="store_true", help="also measure Dovecot (root, bench/peers)")
    args = parser.parse_args(argv)
    count = max(1, min(args.connections, MAX_CONNECTIONS))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, count * 2 + 1000) if hard != resource.RLIM_INFINITY else count * 2 + 1000
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < count + 100:
        parser.error(f"RLIMIT_NOFILE {hard} is too low for {count} connections")
    scratch = tempfile.mkdtemp(prefix="imap-idle-")
    os.chmod(scratch, 0o755)
    try:
        os.mkdir(os.path.join(scratch, "ours"))
        server = OurServer(os.path.join(scratch, "ours"), extra="imap_timeout = 30m\n")
        try:
            fill(os.path.join(server.mail, DOMAIN, READER), 10)
            r = asyncio.run(run(server.imap_port, server.smtp_port, count, lambda: rss(server.process.pid)))
        finally:
            server.stop()
        print(f"ours: {count} IDLE sessions opened in {r['open_s']:.1f} s; RSS {r['before'] / 1e6:.1f} MB -> "
              f"{r['during'] / 1e6:.1f} MB, {r['per_session'] / 1024:.1f} KB per session (target <= 50 KB)")
        print(f"ours: one delivery woke all {count}: * N EXISTS after p50 {r['p50'] * 1000:.0f} ms, "
              f"p99 {r['p99'] * 1000:.0f} ms, max {r['max'] * 1000:.0f} ms (target p99 < 1 s)")
        if args.peer:
            from dovecot import DovecotInstance

            root = os.path.join(scratch, "dovecot")
            os.mkdir(root)
            mail = os.path.join(root, "mail")
            fill(os.path.join(mail, DOMAIN, READER), 10)
            limit = count + 100
            dovecot = DovecotInstance(
                root, mail, free_port(), free_port(), user=READER,
                extra=(f"mail_max_userip_connections = {limit}\n"
                       f"service imap {{\n  process_limit = {limit}\n}}\n"
                       f"service imap-login {{\n  client_limit = {limit}\n  process_limit = {limit}\n}}\n"
                       f"default_client_limit = {limit * 2}\ndefault_vsz_limit = 256M\n"),
            )
            dovecot.give_to_mail_user()
            try:
                d = asyncio.run(run(dovecot.imap_port, None, count, dovecot.accounting.pss_bytes))
            finally:
                dovecot.stop()
            print(f"dovecot: {count} IDLE sessions; PSS {d['before'] / 1e6:.1f} MB -> {d['during'] / 1e6:.1f} MB, "
                  f"{d['per_session'] / 1024:.1f} KB per session (all its processes)")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
