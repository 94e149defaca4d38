"""
IMAP LOGIN latency under load, with and without the verified-password cache.

Starts a scratch server (as ``bench/compare.py`` does) whose user has a
default-cost Argon2id hash, then has C clients each LOGIN and LOGOUT N
times at once (the same user and password, as mail clients polling do) and
prints p50/p99/max of the LOGIN round trip and the server's CPU per login;
once with ``auth_cache_size = 0`` (every login hashed in the two-thread
hashing pool) and once with the default cache::

    python bench/login_cache.py [--clients 20] [--logins 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.join(HERE, "peers"), os.path.dirname(HERE)]
from compare import DOMAIN, PASSWORD, READER, OurServer  # noqa: E402

MAX_CLIENTS, MAX_LOGINS = 200, 100


async def client(port: int, logins: int, times: list[float]) -> None:
    for _ in range(logins):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await reader.readline()
        start = time.perf_counter()
        writer.write(f"a LOGIN {READER}@{DOMAIN} {PASSWORD}\r\n".encode())
        for _ in range(100):
            line = await reader.readline()
            if line.startswith(b"a "):
                break
        if not line.startswith(b"a OK"):
            raise RuntimeError(line)
        times.append(time.perf_counter() - start)
        writer.write(b"b LOGOUT\r\n")
        await writer.drain()
        writer.close()


def run(cache: bool, clients: int, logins: int) -> None:
    from mailserver.auth.schemes import hash_password

    root = tempfile.mkdtemp(prefix="login-cache-")
    try:
        server = OurServer(root, extra="" if cache else "auth_cache_size = 0\n")
        with open(os.path.join(root, "passwd"), "w") as handle:
            handle.write(f"{READER}@{DOMAIN}:{hash_password('ARGON2ID', PASSWORD.encode())}::::::\n")
        time.sleep(2.5)  # the passwd-file is re-read within a second of a change
        times: list[float] = []
        try:
            asyncio.run(client(server.imap_port, 1, []))  # the first login fills the cache
            cpu = server.accounting.cpu_seconds()
            start = time.perf_counter()

            async def everyone() -> None:
                await asyncio.gather(*(client(server.imap_port, logins, times) for _ in range(clients)))

            asyncio.run(everyone())
            wall = time.perf_counter() - start
            cpu = server.accounting.cpu_seconds() - cpu
        finally:
            server.stop()
        times.sort()
        count = len(times)
        print(f"cache {'on ' if cache else 'off'}: {count} LOGINs by {clients} clients in {wall:.1f} s: "
              f"p50 {times[count // 2] * 1000:.0f} ms, p99 {times[min(count - 1, int(count * 0.99))] * 1000:.0f} ms, "
              f"max {times[-1] * 1000:.0f} ms; server CPU {cpu / count * 1000:.1f} ms per login", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--logins", type=int, default=10, help="logins per client")
    args = parser.parse_args(argv)
    clients = max(1, min(args.clients, MAX_CLIENTS))
    logins = max(1, min(args.logins, MAX_LOGINS))
    for cache in (False, True):
        run(cache, clients, logins)
    return 0


if __name__ == "__main__":
    sys.exit(main())
