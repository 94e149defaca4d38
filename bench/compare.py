"""
This server side by side with Postfix and Dovecot (issue 15).

Runs ours and the peer alternately (A B A B ..., ``--pairs`` pairs, at least
three) on the same workload and prints each pair's ratio and the median,
the CPU each server used per message (user + system, all its processes:
see ``peers/accounting.py``), and the load average at the start and end::

    sudo /tmp/venv/bin/python bench/compare.py                 # everything
    sudo /tmp/venv/bin/python bench/compare.py --only smtp --count 2000

Workloads:

- ``smtp``: 1 KB messages at C = 1, 8, 32 and 100 KB at C = 8, against
  Postfix (smtpd -> cleanup -> qmgr -> virtual(8) into a Maildir): delivered
  msg/s (until the last file is in ``new/``), p50/p99 of the time from the
  end of a message's data to its ``250``.  Our 250 follows the Maildir
  fsync; Postfix's follows the queue file's fsync, delivery comes later.
- ``imap``: 10,000 x 4 KB in a Maildir, against Dovecot: LOGIN + SELECT
  (warm), ``FETCH 1:* (UID FLAGS RFC822.SIZE ENVELOPE)``, ``FETCH 1:*
  BODY.PEEK[]`` and 8 clients at once doing LOGIN, SELECT and the envelope
  FETCH.
- ``pop3``: RETR of every message of the same Maildir.

Needs root (Postfix's and Dovecot's masters change uid) and the packages
(``bench/peers/install.sh``).  Nothing is left running: every server is
stopped by its own pid.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pwd
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from typing import Callable

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path[:0] = [HERE, os.path.join(HERE, "peers")]
from accounting import Accounting  # noqa: E402
from dovecot import DovecotInstance  # noqa: E402
from imap_read import make_message  # noqa: E402
from postfix import MAIL_USER, PostfixInstance, _wait_for_port  # noqa: E402
from smtp_delivery import connection, free_port  # noqa: E402

SMTP_USER, READER, DOMAIN, PASSWORD = "bench", "reader", "example.com", "bench-password"
MAX_COUNT = 20_000
IMAP_CLIENTS = 8


class OurServer:
    """``twistd -n mailserver`` on loopback ports, in a cgroup of its own."""

    name = "ours"

    def __init__(self, root: str, extra: str = "") -> None:
        self.root = root
        self.smtp_port, self.imap_port, self.pop3_port = free_port(), free_port(), free_port()
        self.mail = os.path.join(root, "data", "mail")
        self.maildir = os.path.join(self.mail, DOMAIN, SMTP_USER)
        config = os.path.join(root, "main.cf")
        with open(config, "w") as handle:
            handle.write(
                f"myhostname = mx.example.net\nmydestination = $myhostname, {DOMAIN}\n"
                f"data_directory = {root}/data\npasswd_file = {root}/passwd\n"
                f"smtpd_listen = tcp:{self.smtp_port}:interface=127.0.0.1\n"
                f"imap_listen = tcp:{self.imap_port}:interface=127.0.0.1\n"
                f"pop3_listen = tcp:{self.pop3_port}:interface=127.0.0.1\n"
                "submission_listen =\nsmtps_listen =\npop3s_listen =\nimaps_listen =\nmanagesieve_listen =\n"
                "smtpd_client_connection_count_limit = 0\nmessage_size_limit = 0\n"
                "smtpd_timeout = 3600s\nlogin_per_ip_limit = 0\nimap_client_limit = 0\n"
                "mail_max_userip_connections = 0\n" + extra
            )
        with open(os.path.join(root, "passwd"), "w") as handle:
            for user in (SMTP_USER, READER):
                handle.write(f"{user}@{DOMAIN}:{{PLAIN}}{PASSWORD}::::::\n")
        self.accounting = Accounting("ours")
        self.process = self.accounting.spawn(
            [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile=",
             "--logfile", os.path.join(root, "twistd.log"), "mailserver", "--config", config],
            cwd=root, env=dict(os.environ, PYTHONPATH=REPO),
        )
        for port in (self.smtp_port, self.imap_port, self.pop3_port):
            _wait_for_port(port, self.process, os.path.join(root, "twistd.log"))

    def stop(self) -> None:
        self.accounting.stop()


# -- SMTP -------------------------------------------------------------------


def _count(maildir: str) -> int:
    new = os.path.join(maildir, "new")
    return len(os.listdir(new)) if os.path.isdir(new) else 0


def smtp_run(server, count: int, size: int, concurrency: int) -> dict[str, float]:
    port = server.smtp_port if isinstance(server, OurServer) else server.port
    before = _count(server.maildir)
    shares = [count // concurrency + (1 if i < count % concurrency else 0) for i in range(concurrency)]
    latencies: list[float] = []

    async def clients() -> None:
        await asyncio.gather(*(connection(port, s, size, True, latencies) for s in shares if s))

    cpu = server.accounting.cpu_seconds()
    start = time.perf_counter()
    asyncio.run(clients())
    deadline = time.monotonic() + 600
    while _count(server.maildir) < before + count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{server.name}: only {_count(server.maildir) - before} of {count} delivered")
        time.sleep(0.005)
    elapsed = time.perf_counter() - start
    cpu = server.accounting.cpu_seconds() - cpu
    latencies.sort()
    return {
        "rate": count / elapsed,
        "p50": latencies[len(latencies) // 2] * 1000,
        "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        "cpu_ms": cpu / count * 1000,
    }


# -- IMAP and POP3: a raw client, so the client's parsing costs little -------


class LineClient:
    """A blocking loopback client reading lines and IMAP literals."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=120)
        self.file = self.sock.makefile("rb", buffering=1 << 20)
        self.tag = 0
        self.received = 0

    def line(self) -> bytes:
        line = self.file.readline()
        if not line:
            raise RuntimeError("connection closed")
        self.received += len(line)
        return line

    def imap(self, command: str) -> list[bytes]:
        """Send a tagged command; return its untagged lines (literals skipped, counted)."""
        self.tag += 1
        tag = b"a%d " % self.tag
        self.sock.sendall(tag + command.encode() + b"\r\n")
        lines = []
        while True:
            line = self.line()
            if line.startswith(tag):
                if line[len(tag):len(tag) + 2] != b"OK":
                    raise RuntimeError(f"{command}: {line!r}")
                return lines
            lines.append(line)
            while line.endswith(b"}\r\n"):
                size = int(line[line.rindex(b"{") + 1:-3])
                self.received += len(self.file.read(size))
                line = self.line()

    def pop3(self, command: str, multiline: bool = False) -> int:
        self.sock.sendall(command.encode() + b"\r\n")
        first = self.line()
        if not first.startswith(b"+OK"):
            raise RuntimeError(f"{command}: {first!r}")
        size = 0
        while multiline:
            line = self.line()
            if line == b".\r\n":
                break
            size += len(line)
        return size

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def fill(maildir: str, count: int) -> None:
    """C{count} messages of about 4 KB with LF line ends, as our store and Postfix's virtual(8) write them."""
    for sub in ("tmp", "new", "cur"):
        os.makedirs(os.path.join(maildir, sub), exist_ok=True)
    for n in range(count):
        data = make_message(n)
        name = f"{1_700_000_000 + n}.M{n}P1Q{n}.bench,S={len(data)}"
        with open(os.path.join(maildir, "tmp", name), "wb") as handle:
            handle.write(data)
        os.rename(os.path.join(maildir, "tmp", name), os.path.join(maildir, "new", name))


def imap_login(port: int) -> LineClient:
    client = LineClient(port)
    client.line()
    client.imap(f"LOGIN {READER}@{DOMAIN} {PASSWORD}")
    client.imap("SELECT INBOX")
    return client


def imap_run(server, count: int) -> dict[str, float]:
    port = server.imap_port
    cpu = server.accounting.cpu_seconds()
    start = time.perf_counter()
    client = imap_login(port)
    result = {"login_select": time.perf_counter() - start}
    start = time.perf_counter()
    lines = client.imap("FETCH 1:* (UID FLAGS RFC822.SIZE ENVELOPE)")
    result["envelope"] = time.perf_counter() - start
    if len(lines) < count:
        raise RuntimeError(f"{server.name}: {len(lines)} FETCH responses for {count}")
    before = client.received
    start = time.perf_counter()
    client.imap("FETCH 1:* BODY.PEEK[]")
    result["bodies"] = time.perf_counter() - start
    result["body_mb_s"] = (client.received - before) / 1e6 / result["bodies"]
    client.close()
    errors: list[BaseException] = []
    barrier = threading.Barrier(IMAP_CLIENTS)

    def one() -> None:
        try:
            barrier.wait(timeout=60)
            c = imap_login(port)
            c.imap("FETCH 1:* (UID FLAGS RFC822.SIZE ENVELOPE)")
            c.close()
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=one) for _ in range(IMAP_CLIENTS)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(600)
    result["parallel"] = time.perf_counter() - start
    if errors:
        raise errors[0]
    fetched = count * (2 + IMAP_CLIENTS)
    result["cpu_us"] = (server.accounting.cpu_seconds() - cpu) / fetched * 1e6
    return result


def pop3_run(server, count: int) -> dict[str, float]:
    cpu = server.accounting.cpu_seconds()
    client = LineClient(server.pop3_port)
    client.line()
    start = time.perf_counter()
    client.pop3(f"USER {READER}@{DOMAIN}")
    client.pop3(f"PASS {PASSWORD}")
    size = 0
    for n in range(1, count + 1):
        size += client.pop3(f"RETR {n}", multiline=True)
    elapsed = time.perf_counter() - start
    client.pop3("QUIT")
    client.close()
    return {"retr_all": elapsed, "mb_s": size / 1e6 / elapsed,
            "cpu_ms": (server.accounting.cpu_seconds() - cpu) / count * 1000}


# -- pairs ----------------------------------------------------------------


#: sync(2) before each measured run (--no-sync turns it off).
SYNC_BEFORE_RUNS = True


def settled(run: Callable, server, settle: float = 0.0) -> dict[str, float]:
    """
    C{run(server)} after sync(2) and C{settle} seconds, so that no run pays
    for the one before it.  On ext4 without a journal (this machine's) the
    inode allocator skips every inode freed in the last 30 s, one lookup
    each: right after Postfix's run, which deleted 2,000 queue files, each
    file ours creates costs hundreds of microseconds more (bench/README.rst,
    "SMTP CPU per message").  Waiting 31 s clears that; the deletions a
    server makes during its own run still count against it.
    """
    if SYNC_BEFORE_RUNS:
        os.sync()
    if settle > 0:
        time.sleep(settle)
    return run(server)


def pairs(label: str, ours, peer, run: Callable, n: int, keys: list[tuple[str, str]],
          settle: float = 0.0) -> dict[str, float]:
    """
    Run ours and the peer alternately C{n} times; print each pair and the
    medians.  C{keys}: (key, unit).  Returns the median ratios (ours /
    peer) and, as C{"ours_" + key}, our median values.
    """
    print(f"\n{label}", flush=True)
    ratios: dict[str, list[float]] = {key: [] for key, _ in keys}
    values: dict[str, list[float]] = {key: [] for key, _ in keys}
    for index in range(n):
        a, b = settled(run, ours, settle), settled(run, peer, settle)
        cells = []
        for key, unit in keys:
            values[key].append(a[key])
            ratio = a[key] / b[key] if b[key] else float("inf")
            ratios[key].append(ratio)
            cells.append(f"{key} {a[key]:.3g} / {b[key]:.3g} {unit} ({ratio:.2f}x)")
        print(f"  pair {index + 1} (ours / {peer.name}): " + ", ".join(cells), flush=True)
    medians = {key: statistics.median(found) for key, found in ratios.items()}
    print("  median ratio: " + ", ".join(f"{key} {value:.2f}x" for key, value in medians.items()), flush=True)
    medians.update({f"ours_{key}": statistics.median(found) for key, found in values.items()})
    return medians


def verdict(text: str, met: bool) -> None:
    print(f"  target: {text}: {'MET' if met else 'NOT MET'}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=3, help="A/B pairs per workload (at least 3)")
    parser.add_argument("--count", type=int, default=1000, help="1 KB messages per SMTP run")
    parser.add_argument("--messages", type=int, default=10_000, help="messages in the IMAP/POP3 Maildir")
    parser.add_argument("--only", choices=("smtp", "imap", "pop3"), action="append",
                        help="run only these workloads (repeatable)")
    parser.add_argument("--smtp-case", action="append", metavar="KB:C",
                        help="only this SMTP case, e.g. 1:8 (repeatable; default: all four)")
    parser.add_argument("--no-sync", action="store_true", help="do not sync(2) before each measured run")
    parser.add_argument("--settle", type=float, default=0.0, metavar="SECONDS",
                        help="wait this long before each measured SMTP run (31: no run pays for the inodes "
                             "the previous one freed, see settled())")
    parser.add_argument("--warm", type=int, default=200,
                        help="messages each server gets before an SMTP case's pairs (0: none)")
    args = parser.parse_args(argv)
    global SYNC_BEFORE_RUNS
    SYNC_BEFORE_RUNS = not args.no_sync
    if os.geteuid() != 0:
        parser.error("run as root: Postfix's and Dovecot's masters change uid")
    count = max(1, min(args.count, MAX_COUNT))
    messages = max(1, min(args.messages, MAX_COUNT))
    n = max(3, min(args.pairs, 20))
    only = set(args.only or ("smtp", "imap", "pop3"))
    scratch = tempfile.mkdtemp(prefix="compare-")
    os.chmod(scratch, 0o755)
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} CPUs)"
          + ("; sync(2) before each run" if SYNC_BEFORE_RUNS else "")
          + (f"; {args.settle:g} s before each SMTP run" if args.settle > 0 else ""))
    servers: list = []
    try:
        os.mkdir(os.path.join(scratch, "ours"))
        ours = OurServer(os.path.join(scratch, "ours"))
        servers.append(ours)
        if "smtp" in only:
            postfix = PostfixInstance(os.path.join(scratch, "postfix"), free_port())
            servers.append(postfix)
            cases = [(1024, 1, count), (1024, 8, count), (1024, 32, count), (102400, 8, max(1, count // 5))]
            if args.smtp_case:
                wanted = {tuple(int(x) for x in case.split(":")) for case in args.smtp_case}
                cases = [case for case in cases if (case[0] // 1024, case[1]) in wanted]
            for size, concurrency, share in cases:
                if args.warm > 0:  # started processes, imported modules, made Maildirs: not measured
                    for server in (ours, postfix):
                        smtp_run(server, min(args.warm, share), size, concurrency)
                medians = pairs(
                    f"SMTP -> Maildir, {size // 1024} KB, C = {concurrency}, {share} messages per run",
                    ours, postfix, lambda s: smtp_run(s, share, size, concurrency), n,
                    [("rate", "msg/s"), ("p50", "ms"), ("p99", "ms"), ("cpu_ms", "ms CPU/msg")], args.settle,
                )
                if size == 1024 and concurrency == 8:
                    verdict("CPU per delivered message <= 0.5x Postfix", medians["cpu_ms"] <= 0.5)
                    verdict("delivered msg/s at C = 8 >= 1.5x Postfix", medians["rate"] >= 1.5)
            postfix.stop()
            servers.remove(postfix)
        if only & {"imap", "pop3"}:
            fill(os.path.join(ours.mail, DOMAIN, READER), messages)
            dovecot_root = os.path.join(scratch, "dovecot")
            os.mkdir(dovecot_root)
            mail = os.path.join(dovecot_root, "mail")
            fill(os.path.join(mail, DOMAIN, READER), messages)
            owner = pwd.getpwnam(MAIL_USER)
            for path, dirs, files in os.walk(mail):
                for name in [path] + [os.path.join(path, f) for f in files]:
                    os.chown(name, owner.pw_uid, owner.pw_gid)
            dovecot = DovecotInstance(dovecot_root, mail, free_port(), free_port(), user=READER)
            servers.append(dovecot)
            for server in (ours, dovecot):  # warm: index built, caches filled
                imap_login(server.imap_port).close()
            if "imap" in only:
                medians = pairs(
                    f"IMAP, {messages} x 4 KB, {IMAP_CLIENTS} parallel clients", ours, dovecot,
                    lambda s: imap_run(s, messages), n,
                    [("login_select", "s"), ("envelope", "s"), ("bodies", "s"),
                     ("body_mb_s", "MB/s"), ("parallel", "s"), ("cpu_us", "us CPU/msg")],
                )
                verdict("envelope FETCH of 10,000 <= Dovecot's time", medians["envelope"] <= 1.0)
                verdict("BODY.PEEK[] >= 200 MB/s", medians["ours_body_mb_s"] >= 200)
            if "pop3" in only:
                pairs(f"POP3 RETR of all {messages}", ours, dovecot, lambda s: pop3_run(s, messages), n,
                      [("retr_all", "s"), ("mb_s", "MB/s"), ("cpu_ms", "ms CPU/msg")])
    finally:
        stop_all(servers, scratch)
    return 0


def stop_all(servers: list, scratch: str) -> None:
    """Stop every server by its own pid, print the load average, remove the scratch directory."""
    for server in servers:
        server.stop()
    print(f"\nload average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
