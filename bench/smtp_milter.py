"""
SMTP delivery with rspamd in the path vs without: two scratch servers (one
with ``smtpd_milters`` pointing at a real rspamd proxy worker in milter mode,
one without), 1 KB messages at C = 8, measured in alternating slices so both
see the same phases of the disk; prints each rate (accepted and in the
Maildir) and the ratio::

    python bench/smtp_milter.py --count 2000 --concurrency 8 --workers 2
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from smtp_delivery import ScratchServer, send, wait_for  # noqa: E402
from tests.milter.rspamd import Rspamd  # noqa: E402


def nxdomain_dns() -> tuple[subprocess.Popen[bytes], int]:
    """A loopback DNS server answering NXDOMAIN (rspamd's SPF/RBL look-ups fail at once)."""
    code = "from tests.milter.rspamd import nxdomain_server; nxdomain_server()"
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, cwd=ROOT)
    assert process.stdout is not None
    return process, int(process.stdout.readline())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2, help="rspamd proxy (self_scan) workers")
    parser.add_argument("--slices", type=int, default=5)
    args = parser.parse_args(argv)
    scratch = tempfile.mkdtemp(prefix="smtp-milter-bench-")
    dns, dns_port = nxdomain_dns()
    rspamd = Rspamd(workers=args.workers, dns_port=dns_port).wait_ready()
    servers: dict[str, ScratchServer] = {}
    try:
        # Both resolve through the NXDOMAIN server too, so mail authentication costs the same.
        common = {"mail_authentication_checks": "no"}
        servers["no milter"] = ScratchServer(tempfile.mkdtemp(prefix="plain-", dir=scratch), settings=common)
        servers["rspamd"] = ScratchServer(tempfile.mkdtemp(prefix="rspamd-", dir=scratch),
                                          settings={**common, "smtpd_milters": rspamd.address})  # fmt: skip
        send(servers["rspamd"].port, 20, args.size, 2)  # warm-up: rspamd compiles on first use
        wait_for(servers["rspamd"].maildir, 20)
        send(servers["no milter"].port, 20, args.size, 2)
        wait_for(servers["no milter"].maildir, 20)
        elapsed = dict.fromkeys(servers, 0.0)
        accepting = dict.fromkeys(servers, 0.0)
        delivered = dict.fromkeys(servers, 20)
        for index in range(args.slices):
            share = args.count // args.slices + (1 if index < args.count % args.slices else 0)
            for name, server in servers.items():
                start = time.perf_counter()
                seconds, _ = send(server.port, share, args.size, args.concurrency)
                delivered[name] += share
                wait_for(server.maildir, delivered[name])
                elapsed[name] += time.perf_counter() - start
                accepting[name] += seconds
        rates = {name: args.count / seconds for name, seconds in elapsed.items()}
        for name in servers:
            print(f"{name:9}: {args.size // 1024} KB, C={args.concurrency}, N={args.count}: "
                  f"accepted {args.count / accepting[name]:6.0f} msg/s, in Maildir {rates[name]:6.0f} msg/s")  # fmt: skip
        print(f"with rspamd ({args.workers} worker(s)) in the path: {rates['rspamd'] / rates['no milter']:.0%}"
              f" of the throughput without ({args.slices} alternating slices)")  # fmt: skip
    finally:
        for server in servers.values():
            server.stop()
        rspamd.stop()
        dns.terminate()
        dns.wait()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
