"""
A burst of SMTP connections: how many clients get the 220 banner in time.

Starts a server (``twistd -n mailserver``) with the given ``listen_backlog``
and opens N connections to it at once from one asyncio client; each waits
up to T seconds for the banner.  Compares Twisted's old default backlog
(50) with ours (the kernel's somaxconn, at most 4096)::

    python bench/connection_burst.py --count 2000 --timeout 3
    python bench/connection_burst.py --backlog 50 --count 2000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from smtp_delivery import ScratchServer  # noqa: E402


async def _client(port: int, timeout: float, start: asyncio.Event) -> str:
    await start.wait()
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
    except (OSError, asyncio.TimeoutError):
        return "no connection"
    try:
        line = await asyncio.wait_for(reader.readline(), timeout)
        return "banner" if line.startswith(b"220 ") else "refused" if line else "closed"
    except (OSError, asyncio.TimeoutError):
        return "no banner"
    finally:
        writer.close()


def burst(port: int, count: int, timeout: float) -> tuple[dict[str, int], float]:
    async def run() -> tuple[dict[str, int], float]:
        start = asyncio.Event()
        tasks = [asyncio.create_task(_client(port, timeout, start)) for _ in range(count)]
        await asyncio.sleep(0)
        began = time.monotonic()
        start.set()
        results = await asyncio.gather(*tasks)
        outcome: dict[str, int] = {}
        for result in results:
            outcome[result] = outcome.get(result, 0) + 1
        return outcome, time.monotonic() - began

    return asyncio.run(run())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=2000, help="connections opened at once")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds each client waits for the banner")
    parser.add_argument("--backlog", type=int, action="append", help="listen_backlog values (default: 50 and 0)")
    args = parser.parse_args(argv)
    for backlog in args.backlog or [50, 0]:
        with tempfile.TemporaryDirectory(prefix="burst-") as root:
            server = ScratchServer(root, settings={"listen_backlog": str(backlog), "smtpd_max_connections": str(args.count * 2)})
            try:
                outcome, seconds = burst(server.port, args.count, args.timeout)
            finally:
                server.stop()
        label = "somaxconn" if backlog == 0 else str(backlog)
        print(f"listen_backlog={label:>9}  {args.count} clients  {seconds:5.2f}s  " +
              "  ".join(f"{name}={n}" for name, n in sorted(outcome.items())))


if __name__ == "__main__":
    main()
