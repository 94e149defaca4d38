"""
``FETCH 1:* BODY.PEEK[]`` throughput, A/B (issue 15).

Starts one server per checkout given with ``--repo`` (default: this one),
each over its own Maildir of N x 4 KB messages (LF line ends, as
``compare.py`` fills them), and runs the FETCH on each in turn, ``--runs``
times (A B A B ...), so both see the same phases of this shared machine.
Per run: MB/s, the server's CPU per message (user + system of its whole
process tree or cgroup) and the client's own CPU per message, so a client
that cannot keep up shows::

    flock /tmp/bench.lock /tmp/venv/bin/python bench/imap_body.py \\
        --repo /work/wt/base --repo . --runs 6

Needs no root and no peer: ours only (``compare.py`` runs Dovecot).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.join(HERE, "peers")]
import compare  # noqa: E402


def user_system(server: "compare.OurServer") -> tuple[float, float]:
    """The server's user and system CPU seconds (cgroup v1 C{cpuacct.stat}; else 0, 0)."""
    path = os.path.join(server.accounting.cgroup or "/nonexistent", "cpuacct.stat")
    if not os.path.exists(path):
        return 0.0, 0.0
    with open(path) as handle:
        fields = dict(line.split() for line in handle)
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields["user"]) / tick, int(fields["system"]) / tick


def one_run(server: "compare.OurServer", count: int, items: str) -> dict[str, float]:
    """One FETCH of every message on a fresh session; rates and CPU per message."""
    client = compare.imap_login(server.imap_port)
    cpu = server.accounting.cpu_seconds()
    user, system = user_system(server)
    mine = time.process_time()
    before = client.received
    start = time.perf_counter()
    lines = client.imap(f"FETCH 1:* {items}")
    elapsed = time.perf_counter() - start
    mine = time.process_time() - mine
    cpu = server.accounting.cpu_seconds() - cpu
    user_after, system_after = user_system(server)
    client.close()
    if len(lines) < count:
        raise RuntimeError(f"{len(lines)} FETCH responses for {count}")
    return {"mb_s": (client.received - before) / 1e6 / elapsed, "server_us": cpu / count * 1e6,
            "client_us": mine / count * 1e6, "user_us": (user_after - user) / count * 1e6,
            "system_us": (system_after - system) / count * 1e6}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", action="append", help="a checkout to run (repeatable; default: this one)")
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5, help="FETCHes per checkout (at most 50)")
    parser.add_argument("--items", default="BODY.PEEK[]", help="the FETCH items")
    args = parser.parse_args(argv)
    repos = [os.path.abspath(r) for r in (args.repo or [os.path.dirname(HERE)])]
    count = max(1, min(args.messages, compare.MAX_COUNT))
    runs = max(1, min(args.runs, 50))
    scratch = tempfile.mkdtemp(prefix="imap-body-")
    servers = []
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    try:
        for n, repo in enumerate(repos):
            root = os.path.join(scratch, str(n))
            os.mkdir(root)
            compare.REPO = repo  # OurServer puts it on the server's PYTHONPATH
            server = compare.OurServer(root)
            servers.append(server)
            compare.fill(os.path.join(server.mail, compare.DOMAIN, compare.READER), count)
            compare.imap_login(server.imap_port).close()  # warm: index built
            one_run(server, count, args.items)  # warm: page cache
        results: list[list[dict[str, float]]] = [[] for _ in repos]
        for run in range(runs):
            for n, server in enumerate(servers):
                result = one_run(server, count, args.items)
                results[n].append(result)
                print(f"  run {run + 1} {repos[n]}: {result['mb_s']:.0f} MB/s, server {result['server_us']:.1f}"
                      f" us/msg (user {result['user_us']:.0f}, system {result['system_us']:.0f}),"
                      f" client {result['client_us']:.1f} us/msg", flush=True)
        for n, repo in enumerate(repos):
            found = results[n]
            print(f"{repo}: median " + ", ".join(
                f"{key} {statistics.median(r[key] for r in found):.1f} "
                f"({min(r[key] for r in found):.1f}-{max(r[key] for r in found):.1f})"
                for key in ("mb_s", "server_us", "user_us", "system_us", "client_us")))
    finally:
        compare.stop_all(servers, scratch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
