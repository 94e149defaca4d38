"""
Our SMTP server's CPU per delivered message, A/B across checkouts (issue 15).

Starts one scratch server per ``--tree`` (a checkout of this repository;
default: this one) exactly as ``compare.py`` does (its own cgroup, so the
CPU counts every thread), then runs the same SMTP workload on each in turn,
``--rounds`` times (A B A B ...), and prints each run's server CPU per
message (user + system), the rate, and the medians.  With ``--py-spy FILE``
the first tree's server is profiled during one extra run (``py-spy record
--gil``; bench only)::

    sudo /tmp/venv/bin/python bench/smtp_cpu.py --tree /work/main --tree . --count 2000
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.join(HERE, "peers")]
import compare  # noqa: E402
from accounting import CLK_TCK  # noqa: E402


def _log_lines(server: compare.OurServer) -> int:
    """Lines in twistd's log, rotated files included."""
    total = 0
    for name in os.listdir(server.root):
        if name.startswith("twistd.log"):
            with open(os.path.join(server.root, name), "rb") as handle:
                total += handle.read().count(b"\n")
    return total


def _user_system(server: compare.OurServer) -> tuple[float, float]:
    """User and system CPU seconds of the server's cgroup (v1 ``cpuacct.stat``), or (0, 0)."""
    path = os.path.join(server.accounting.cgroup or "", "cpuacct.stat")
    if not server.accounting.cgroup or not os.path.exists(path):
        return 0.0, 0.0
    with open(path) as handle:
        ticks = dict(line.split() for line in handle)
    return int(ticks["user"]) / CLK_TCK, int(ticks["system"]) / CLK_TCK


def _churn(directory: str, count: int) -> None:
    """Create and delete C{count} small files in C{directory}, as a peer's queue does."""
    if count <= 0:
        return
    paths = [os.path.join(directory, f"churn.{n}") for n in range(count)]
    for path in paths:
        with open(path, "wb") as handle:
            handle.write(b"x" * 512)
    for path in paths:
        os.unlink(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", action="append", help="a checkout to run (repeatable; default: this one)")
    parser.add_argument("--count", type=int, default=2000, help="messages per run")
    parser.add_argument("--size", type=int, default=1024, help="message size in bytes")
    parser.add_argument("--concurrency", type=int, default=8, help="connections")
    parser.add_argument("--rounds", type=int, default=3, help="runs per tree (alternating)")
    parser.add_argument("--churn", type=int, default=0, metavar="N",
                        help="before each run, create and delete N files in the Maildir's tmp/ (as a peer's "
                             "queue files in the same block group do in compare.py: ext4 without a journal "
                             "then scans past those inodes for 30 s when it allocates new ones)")
    parser.add_argument("--settle", type=float, default=0.0, metavar="SECONDS",
                        help="wait this long after the warm-up (31: the inodes an earlier benchmark freed "
                             "no longer slow this one's file creation; see compare.settled)")
    parser.add_argument("--py-spy", metavar="FILE", help="profile the first tree's server into FILE (raw format)")
    parser.add_argument("--py-spy-args", default="--gil", help="extra py-spy record options")
    args = parser.parse_args(argv)
    count = max(1, min(args.count, compare.MAX_COUNT))
    trees = [os.path.abspath(t) for t in (args.tree or [compare.REPO])]
    scratch = tempfile.mkdtemp(prefix="smtp-cpu-")
    servers: list[compare.OurServer] = []
    figures: dict[int, list[dict[str, float]]] = {i: [] for i in range(len(trees))}
    try:
        for index, tree in enumerate(trees):
            root = os.path.join(scratch, str(index))
            os.mkdir(root)
            compare.REPO = tree  # OurServer puts compare.REPO on PYTHONPATH
            servers.append(compare.OurServer(root))
            compare.smtp_run(servers[-1], 200, args.size, args.concurrency)  # warm
        time.sleep(max(0.0, args.settle))
        for _ in range(max(1, min(args.rounds, 20))):
            for index, server in enumerate(servers):
                os.sync()  # as compare.py: no run pays for the previous one's dirty buffers
                _churn(os.path.join(server.maildir, "tmp"), args.churn)
                lines, (user, system) = _log_lines(server), _user_system(server)
                result = compare.smtp_run(server, count, args.size, args.concurrency)
                result["log_lines"] = (_log_lines(server) - lines) / count
                after = _user_system(server)
                result["user_ms"] = (after[0] - user) / count * 1000
                result["system_ms"] = (after[1] - system) / count * 1000
                figures[index].append(result)
                print(f"  {trees[index]}: cpu {result['cpu_ms']:.3f} ms/msg, rate {result['rate']:.0f} msg/s, "
                      f"(user {result['user_ms']:.2f}, system {result['system_ms']:.2f}), "
                      f"log lines/msg {result['log_lines']:.2f}", flush=True)
        for index, tree in enumerate(trees):
            cpu = statistics.median(r["cpu_ms"] for r in figures[index])
            rate = statistics.median(r["rate"] for r in figures[index])
            user = statistics.median(r["user_ms"] for r in figures[index])
            system = statistics.median(r["system_ms"] for r in figures[index])
            print(f"median {tree}: cpu {cpu:.3f} ms/msg (user {user:.2f}, system {system:.2f}), rate {rate:.0f} msg/s")
        if args.py_spy:
            server = servers[0]
            spy = subprocess.Popen(
                [shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy"), "record", "--format", "raw", "-o", args.py_spy, "--pid", str(server.accounting.pid),
                 *args.py_spy_args.split()],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            try:
                compare.smtp_run(server, count, args.size, args.concurrency)
            finally:
                spy.send_signal(2)
                spy.wait(timeout=60)
            print(f"profile: {args.py_spy}")
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
