"""
Cost of quotas on SMTP delivery: two servers, one without quota and one
with ``quota_rule = *:storage=10G:messages=1000000`` (every RCPT and end of
DATA read ``maildirsize`` in a thread; every delivery appends to it), fed
N messages of 1 KB over C = 8 connections in alternating slices so both see
the same phases of the disk::

    python bench/quota_delivery.py --count 1000
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from smtp_delivery import ScratchServer, send, wait_for  # noqa: E402

QUOTA = {"quota_rule": "*:storage=10G:messages=1000000"}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--slices", type=int, default=5)
    args = parser.parse_args(argv)
    scratch = tempfile.mkdtemp(prefix="quota-bench-")
    servers = {}
    try:
        for name, settings in (("no quota", {}), ("quota", QUOTA)):
            servers[name] = ScratchServer(tempfile.mkdtemp(prefix="s-", dir=scratch), settings=settings)
        elapsed = dict.fromkeys(servers, 0.0)
        delivered = dict.fromkeys(servers, 0)
        for index in range(args.slices):
            share = args.count // args.slices + (1 if index < args.count % args.slices else 0)
            for name, server in servers.items():
                start = time.perf_counter()
                send(server.port, share, args.size, args.concurrency)
                delivered[name] += share
                wait_for(server.maildir, delivered[name])
                elapsed[name] += time.perf_counter() - start
        rates = {name: args.count / seconds for name, seconds in elapsed.items()}
        for name, rate in rates.items():
            print(f"{name}: {args.size // 1024} KB, C={args.concurrency}, N={args.count}: {rate:7.0f} msg/s")
        print(f"cost of quotas: {1 - rates['quota'] / rates['no quota']:.0%} of throughput "
              f"({args.slices} alternating slices)")
        with open(os.path.join(servers["quota"].maildir, "maildirsize")) as handle:
            lines = handle.read().splitlines()
        print(f"maildirsize: {lines[0]}, {len(lines) - 1} usage lines (recalculated past 5120 bytes)")
    finally:
        for server in servers.values():
            server.stop()


if __name__ == "__main__":
    main()
