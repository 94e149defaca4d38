"""
SMTP throughput with inbound mail authentication on and off: DKIM-signed
1 KB and 10 KB messages at C = 8 from a client outside C{mynetworks}, to two
servers that differ only in C{mail_authentication_checks} (yes / no), in
alternating slices (A B A B ...) so both see the same phases of the disk.

A loopback twisted.names server (tests/dns.py's, in its own process, as a
site's resolver would be) publishes SPF, DKIM (RSA-2048 and Ed25519) and
DMARC (p=reject) for the sender domain; the servers resolve through it.
Prints msg/s for each and the ratio (target: at least 70%), and beside them
the noise-resistant figures: each server's CPU per message (utime + stime
from /proc/PID/stat before and after each slice), the reactor thread's
share of it, the reactor's idle share (time spent waiting in epoll over
the wall time of the slices) and the CPU of its child processes (the DKIM
verification workers, mail_authentication_verify_processes)::

    python bench/mailauth_throughput.py [--count 400] [--slices 4] [--verify-processes N]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, os.path.join(HERE, "peers"))

from accounting import CLK_TCK, _stat, _tree  # noqa: E402
from smtp_delivery import RECIPIENT, ScratchServer, send, wait_for  # noqa: E402

SENDER_DOMAIN = "sender.example"
SENDER = f"news@{SENDER_DOMAIN}"
MAX_COUNT = 20_000


def dns_child(zone_file: str) -> None:
    """Serve the zones of C{zone_file} (JSON) on 127.0.0.1; print the port; run until killed."""
    from twisted.internet import reactor

    from tests.dns import DNSTestServer

    with open(zone_file) as handle:
        zones = {apex: {name: [tuple(r) for r in records] for name, records in names.items()}
                 for apex, names in json.load(handle).items()}
    server = DNSTestServer(zones)
    server.start().addCallback(lambda _: print(server.port, flush=True))
    reactor.run()


class _TimedPoller:
    """The epoll reactor's poller, adding up the seconds spent waiting in C{poll}."""

    def __init__(self, poller: object) -> None:
        self._poller = poller
        self._waited = 0.0
        self._since: float | None = None

    def poll(self, *args: object) -> list:
        self._since = time.perf_counter()
        try:
            return self._poller.poll(*args)  # type: ignore[attr-defined]
        finally:
            self._waited += time.perf_counter() - self._since
            self._since = None

    def waited(self) -> float:
        """Seconds waited so far, the wait in progress (a signal handler runs inside it) included."""
        since = self._since
        return self._waited + (time.perf_counter() - since if since is not None else 0.0)

    def __getattr__(self, name: str) -> object:
        return getattr(self._poller, name)


def idle_file(config_path: str) -> str:
    return os.path.join(os.path.dirname(config_path), "idle")


def server_child(dns_port: int, config_path: str) -> None:
    """
    The daemon as twistd builds it, but resolving through the loopback DNS
    server.  On SIGUSR1 it writes the seconds its reactor waited in epoll so
    far to L{idle_file}.
    """
    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner, textFileLogObserver
    from twisted.names import client

    from mailserver.locate import find_config
    from mailserver.service import build

    log = open(os.path.join(os.path.dirname(config_path), "twistd.log"), "a")
    globalLogBeginner.beginLoggingTo([textFileLogObserver(log)], redirectStandardIO=False)
    config, _ = find_config(config_path)
    service = build(config, reactor, resolver=client.Resolver(servers=[("127.0.0.1", dns_port)], reactor=reactor))
    poller = reactor._poller = _TimedPoller(reactor._poller)

    def report(_signal: int, _frame: object) -> None:
        with open(idle_file(config_path) + ".new", "w") as handle:
            handle.write(f"{poller.waited()!r}\n")
        os.replace(idle_file(config_path) + ".new", idle_file(config_path))

    signal.signal(signal.SIGUSR1, report)
    service.startService()
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.run()


def signed_messages(keys: list) -> dict[int, bytes]:
    """One DKIM-signed (RSA and Ed25519, as our signer does) message per size, CRLF line ends."""
    from mailserver.mailauth.dkim_sign import sign_with

    messages = {}
    for size in (1024, 10240):
        head = (f"From: News <{SENDER}>\nTo: {RECIPIENT}\nSubject: benchmark\n"
                f"Date: Fri, 04 Dec 2026 16:00:00 +0000\nMessage-ID: <bench{size}@{SENDER_DOMAIN}>\n\n").encode()
        line = b"The quick brown fox jumps over the lazy dog, again and again and again.\n"
        raw = head + line * max(1, (size - len(head) - 600) // len(line))
        signed = sign_with(raw, keys) + raw
        messages[size] = signed.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return messages


def start_dns(scratch: str, keys: list) -> tuple[subprocess.Popen, int]:
    zones = {SENDER_DOMAIN: {
        SENDER_DOMAIN: [("TXT", "v=spf1 ip4:127.0.0.1 -all")],
        f"_dmarc.{SENDER_DOMAIN}": [("TXT", "v=DMARC1; p=reject")],
        **{key.dns_name: [("TXT", key.txt_value)] for key in keys},
    }}
    zone_file = os.path.join(scratch, "zones.json")
    with open(zone_file, "w") as handle:
        json.dump(zones, handle)
    process = subprocess.Popen([sys.executable, __file__, "--dns-child", zone_file], stdout=subprocess.PIPE,
                               cwd=os.path.dirname(HERE))
    port = int(process.stdout.readline())
    return process, port


class Meter:
    """CPU seconds of a server process (and of its reactor thread) and its reactor's epoll waits."""

    def __init__(self, server: ScratchServer) -> None:
        self.pid = server.process.pid
        self.idle_path = os.path.join(server.root, "idle")
        self.cpu = self.system = self.reactor_cpu = self.idle = self.wall = self.children = 0.0

    def _children_cpu(self) -> float:
        """CPU seconds of the server's child processes so far (verification workers)."""
        total = 0.0
        for pid in _tree(self.pid)[1:]:
            fields = _stat(pid)
            if fields:
                total += sum(int(field) for field in fields[11:13]) / CLK_TCK
        return total

    def _sample(self) -> tuple[float, float, float, float, float]:
        process = _stat(self.pid) or []
        with open(f"/proc/{self.pid}/task/{self.pid}/stat") as handle:
            text = handle.read()
        thread = text[text.rindex(")") + 2:].split()
        cpu = sum(int(field) for field in process[11:13]) / CLK_TCK  # utime stime
        reactor = sum(int(field) for field in thread[11:13]) / CLK_TCK
        try:
            os.remove(self.idle_path)
        except FileNotFoundError:
            pass
        os.kill(self.pid, signal.SIGUSR1)
        for _ in range(500):  # 5 s at most
            try:
                with open(self.idle_path) as handle:
                    return cpu, reactor, float(handle.read()), int(process[12]) / CLK_TCK, self._children_cpu()
            except (FileNotFoundError, ValueError):
                time.sleep(0.01)
        raise RuntimeError("the server did not report its idle time")

    def start(self) -> None:
        self._start = self._sample()
        self._wall = time.perf_counter()

    def stop(self) -> None:
        end = self._sample()
        self.wall += time.perf_counter() - self._wall
        self.cpu += end[0] - self._start[0]
        self.reactor_cpu += end[1] - self._start[1]
        self.idle += end[2] - self._start[2]
        self.system += end[3] - self._start[3]
        self.children += end[4] - self._start[4]

    def summary(self, count: int) -> str:
        return (f"{self.cpu / count * 1000:4.2f} ms CPU/msg ({self.system / count * 1000:4.2f} system; "
                f"{self.reactor_cpu / count * 1000:4.2f} in the reactor thread), reactor idle {self.idle / self.wall:4.0%}"
                + (f"; + {self.children / count * 1000:4.2f} ms in worker processes" if self.children else ""))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=400, help=f"messages per size and server (at most {MAX_COUNT})")
    parser.add_argument("--slices", type=int, default=4, help="alternating slices per server (at least 3)")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--verify-processes", type=int, default=None,
                        help="mail_authentication_verify_processes of the server with the checks on (default: main.cf's)")
    parser.add_argument("--dns-child", help=argparse.SUPPRESS)
    parser.add_argument("--server-child", nargs=2, help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args(argv)
    if args.dns_child:
        return dns_child(args.dns_child)
    if args.server_child:
        return server_child(int(args.server_child[0]), rest[-1])
    if not 1 <= args.count <= MAX_COUNT or args.slices < 3 or args.count < args.slices * args.concurrency:
        parser.error(f"count must be 1..{MAX_COUNT}, at least slices x concurrency; slices at least 3")

    from mailserver.mailauth.dkim_keys import generate

    keys = [generate(SENDER_DOMAIN, "bench", "rsa"), generate(SENDER_DOMAIN, "bench", "ed25519")]
    messages = signed_messages(keys)
    scratch = tempfile.mkdtemp(prefix="mailauth-bench-")
    dns, servers = None, {}
    try:
        dns, dns_port = start_dns(scratch, keys)
        for checks in ("yes", "no"):
            root = tempfile.mkdtemp(prefix=f"checks-{checks}-", dir=scratch)
            launcher = [sys.executable, __file__, "--server-child", str(dns_port), "-"]
            settings = {"mynetworks": "192.0.2.0/24", "mail_authentication_checks": checks}
            if args.verify_processes is not None:
                settings["mail_authentication_verify_processes"] = str(args.verify_processes)
            servers[checks] = ScratchServer(root, settings=settings, launcher=launcher)
        for size in (1024, 10240):
            elapsed = {"yes": 0.0, "no": 0.0}
            meters = {checks: Meter(server) for checks, server in servers.items()}
            for index in range(args.slices):
                share = args.count // args.slices + (1 if index < args.count % args.slices else 0)
                for checks, server in servers.items():
                    new = os.path.join(server.maildir, "new")
                    before = len(os.listdir(new)) if os.path.isdir(new) else 0
                    meters[checks].start()
                    start = time.perf_counter()
                    send(server.port, share, size, args.concurrency,
                         make=lambda _size, _n, data=messages[size]: data, sender=SENDER)
                    wait_for(server.maildir, before + share)
                    elapsed[checks] += time.perf_counter() - start
                    meters[checks].stop()
            rate = {checks: args.count / seconds for checks, seconds in elapsed.items()}
            print(f"{size // 1024:2d} KB, C={args.concurrency}, N={args.count} each, {args.slices} alternating slices: "
                  f"checks on {rate['yes']:6.0f} msg/s, off {rate['no']:6.0f} msg/s, "
                  f"ratio {rate['yes'] / rate['no']:4.0%}\n"
                  f"       on: {meters['yes'].summary(args.count)}\n"
                  f"      off: {meters['no'].summary(args.count)}", flush=True)
        stored = os.listdir(os.path.join(servers["yes"].maildir, "new"))[0]
        with open(os.path.join(servers["yes"].maildir, "new", stored), "rb") as handle:
            results = [line for line in handle.read().split(b"\n\n")[0].split(b"\n") if b"dmarc=" in line]
        print("checked message:", b" ".join(results).decode(errors="replace").strip()[:200])
    finally:
        for server in servers.values():
            server.stop()
        if dns is not None:
            dns.terminate()
            dns.wait(timeout=30)
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
