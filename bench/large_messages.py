"""
Memory under many large messages: C concurrent connections each send one
message of S bytes (150 x 10 MB by default) to a scratch server
(``twistd -n mailserver``, started as ``bench/smtp_delivery.py`` does).
Prints the messages delivered, the wall time, and the daemon's peak RSS
(``VmHWM`` in ``/proc/PID/status``); the target is under 300 MB::

    PYTHONPATH=. python bench/large_messages.py
    PYTHONPATH=. python bench/large_messages.py --count 50 --size 20000000 --rules 100
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from smtp_delivery import RECIPIENT, ScratchServer, message, wait_for  # noqa: E402

MAX_COUNT = 500
MAX_SIZE = 100 * 1024 * 1024


def peak_rss_kib(pid: int) -> tuple[int, int]:
    """C{(VmHWM, VmRSS)} of process C{pid} in KiB."""
    fields = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmHWM", "VmRSS"):
                fields[name] = int(value.split()[0])
    return fields["VmHWM"], fields["VmRSS"]


async def _one(port: int, content: bytes, piece: int) -> bool:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def reply() -> bytes:
        while True:
            line = await reader.readline()
            if not line or line[3:4] != b"-":
                return line

    try:
        await reply()
        writer.write(b"EHLO bench.example\r\n")
        await reply()
        writer.write(f"MAIL FROM:<bench@remote.example>\r\nRCPT TO:<{RECIPIENT}>\r\nDATA\r\n".encode())
        for _ in range(3):
            await reply()
        view = memoryview(content)
        for start in range(0, len(view), piece):  # bounded: len(content) / piece writes
            writer.write(view[start : start + piece])
            await writer.drain()
        writer.write(b".\r\n")
        accepted = (await reply()).startswith(b"250")
        writer.write(b"QUIT\r\n")
        await reply()
        return accepted
    finally:
        writer.close()


def send_all(port: int, count: int, size: int, concurrency: int) -> int:
    content = message(size, 0)

    async def main() -> int:
        limit = asyncio.Semaphore(concurrency)

        async def bounded() -> bool:
            async with limit:
                return await _one(port, content, 1 << 16)

        results = await asyncio.gather(*(bounded() for _ in range(count)))
        return sum(results)

    return asyncio.run(main())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=150, help=f"messages (at most {MAX_COUNT})")
    parser.add_argument("--size", type=int, default=10 * 1024 * 1024, help="message size in bytes")
    parser.add_argument("--concurrency", type=int, default=150, help="connections at once")
    parser.add_argument("--rules", type=int, default=0, help="header_checks and body_checks rules (each)")
    args = parser.parse_args(argv)
    if not 1 <= args.count <= MAX_COUNT or not 1 <= args.size <= MAX_SIZE or not 1 <= args.concurrency <= MAX_COUNT:
        parser.error(f"count 1..{MAX_COUNT}, size 1..{MAX_SIZE}, concurrency 1..{MAX_COUNT}")
    scratch = tempfile.mkdtemp(prefix="large-bench-")
    server = ScratchServer(scratch, rules=args.rules)
    try:
        idle, _ = peak_rss_kib(server.process.pid)
        start = time.perf_counter()
        accepted = send_all(server.port, args.count, args.size, args.concurrency)
        wait_for(server.maildir, accepted)
        elapsed = time.perf_counter() - start
        peak, now = peak_rss_kib(server.process.pid)
        incoming = os.path.join(scratch, "data", "incoming")
        left = len(os.listdir(incoming)) if os.path.isdir(incoming) else 0
        print(
            f"{args.count} x {args.size / 1e6:.1f} MB at C={args.concurrency}, {args.rules} + {args.rules} rules: "
            f"{accepted} delivered in "
            f"{elapsed:.1f} s; daemon peak RSS {peak / 1024:.0f} MB (at start {idle / 1024:.0f} MB, "
            f"now {now / 1024:.0f} MB); {left} files left in incoming/",
            flush=True,
        )
    finally:
        server.stop()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
