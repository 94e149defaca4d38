"""
What SMTP acceptor processes would buy (issue 15's proposal, not built):
one server taking C connections against two servers taking C / 2 each,
both delivering into the same Maildir (one ``data_directory``; file names
are unique per pid), alternating in pairs (A B A B ...).  Two independent
servers stand in for two acceptor processes sharing a listening socket:
what they cannot show is the cost of telling the IMAP process about new
mail, which is one datagram per delivery batch in the proposal.

Prints each pair's delivered msg/s and server CPU per message (user +
system of the server processes, from ``/proc/PID/stat``) and the ratio::

    python bench/acceptors_estimate.py [--count 2000] [--concurrency 8] [--pairs 3]
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
sys.path[:0] = [HERE, os.path.join(HERE, "peers")]
from accounting import CLK_TCK, _stat  # noqa: E402
from smtp_delivery import ScratchServer, connection, wait_for  # noqa: E402

MAX_COUNT = 20_000


def cpu_seconds(server: ScratchServer) -> float:
    fields = _stat(server.process.pid) or []
    return sum(int(field) for field in fields[11:13]) / CLK_TCK


def delivered(maildir: str) -> int:
    new = os.path.join(maildir, "new")
    return len(os.listdir(new)) if os.path.isdir(new) else 0


def run(servers: list[ScratchServer], count: int, concurrency: int, size: int) -> tuple[float, float]:
    """Messages per second and server CPU ms per message for C{count} messages spread over C{servers}."""
    per_server = concurrency // len(servers)
    share = count // concurrency
    total = share * per_server * len(servers)
    maildir = servers[0].maildir  # the same Maildir for all of them
    before, cpu = delivered(maildir), sum(cpu_seconds(s) for s in servers)

    async def clients() -> None:
        await asyncio.gather(*(connection(s.port, share, size) for s in servers for _ in range(per_server)))

    start = time.perf_counter()
    asyncio.run(clients())
    wait_for(maildir, before + total)
    elapsed = time.perf_counter() - start
    return total / elapsed, (sum(cpu_seconds(s) for s in servers) - cpu) / total * 1000


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=2000, help=f"messages per run (at most {MAX_COUNT})")
    parser.add_argument("--concurrency", type=int, default=8, help="connections in all (even)")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--size", type=int, default=1024)
    args = parser.parse_args(argv)
    if not 1 <= args.count <= MAX_COUNT or args.concurrency < 2 or args.concurrency % 2 or not 1 <= args.pairs <= 20:
        parser.error(f"count 1..{MAX_COUNT}, an even concurrency of at least 2, pairs 1..20")
    scratch = tempfile.mkdtemp(prefix="acceptors-")
    servers: list[ScratchServer] = []
    try:
        for name in ("one", "two-a", "two-b"):
            os.makedirs(os.path.join(scratch, name))
        shared = {"data_directory": os.path.join(scratch, "two-a", "data")}
        for name in ("one", "two-a", "two-b"):  # stopped in the end even if a later one fails to start
            servers.append(ScratchServer(os.path.join(scratch, name), settings=shared if name != "one" else None))
        one, two = servers[0], servers[1:]
        print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} CPUs)")
        print(f"SMTP -> one Maildir, {args.size} B, C = {args.concurrency}, {args.count} messages per run")
        ratios = []
        for pair in range(1, args.pairs + 1):
            rate1, cpu1 = run([one], args.count, args.concurrency, args.size)
            rate2, cpu2 = run(two, args.count, args.concurrency, args.size)
            ratios.append(rate2 / rate1)
            print(f"  pair {pair}: one process {rate1:5.0f} msg/s, {cpu1:.2f} ms CPU/msg; "
                  f"two processes {rate2:5.0f} msg/s, {cpu2:.2f} ms CPU/msg; rate {rate2 / rate1:.2f}x", flush=True)
        ratios.sort()
        print(f"  median rate ratio: {ratios[len(ratios) // 2]:.2f}x")
        print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
