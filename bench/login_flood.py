"""
The issue "Hardening" scenario: a server limited to 1,024 file descriptors
gets 2,000 idle, unauthenticated IMAP connections; does SMTP still greet and
deliver?

Starts ``twistd -n mailserver`` with ``RLIMIT_NOFILE`` set to (limit, limit)
on free loopback ports, opens the IMAP connections one after the other and
keeps those that were greeted with ``* OK``, then runs one SMTP delivery
while they are held, and prints the counts::

    python bench/login_flood.py [--connections 2000] [--limit 1024] [--imap-client-limit 1000]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from smtp_delivery import free_port  # noqa: E402

#: Upper bound on --connections (the client holds them all).
MAX_CONNECTIONS = 20_000


def start_server(root: str, limit: int, client_limit: int) -> tuple[subprocess.Popen, int, int]:
    imap, smtp = free_port(), free_port()
    config = os.path.join(root, "main.cf")
    with open(config, "w") as handle:
        handle.write(
            f"myhostname = mx.example.com\nmydestination = $myhostname, example.com\n"
            f"data_directory = {root}/data\npasswd_file = {root}/passwd\n"
            f"smtpd_listen = tcp:{smtp}:interface=127.0.0.1\nimap_listen = tcp:{imap}:interface=127.0.0.1\n"
            "submission_listen =\nsmtps_listen =\npop3_listen =\npop3s_listen =\nimaps_listen =\n"
            f"imap_client_limit = {client_limit}\nlogin_per_ip_limit = 0\n"
        )
    with open(os.path.join(root, "passwd"), "w") as handle:
        handle.write("bench@example.com:{PLAIN}x::::::\n")

    def limit_descriptors() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    process = subprocess.Popen(
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile=",
         "--logfile", os.path.join(root, "twistd.log"), "mailserver", "--config", config],
        cwd=root, preexec_fn=limit_descriptors,
        env={**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(__file__)))},
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", smtp), timeout=1).close()
            return process, imap, smtp
        except OSError:
            time.sleep(0.1)
    process.terminate()
    raise RuntimeError("server did not start")


def greeting(port: int) -> tuple[socket.socket | None, bytes]:
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    except OSError as error:
        return None, f"connect failed: {error}".encode()
    try:
        return sock, sock.makefile("rb").readline()
    except OSError as error:
        sock.close()
        return None, f"read failed: {error}".encode()


def smtp_delivery(port: int) -> list[bytes]:
    """One message over SMTP; the server's replies."""
    sock, first = greeting(port)
    if sock is None:
        return [first]
    replies = [first]
    reader = sock.makefile("rb")
    try:
        for command in (b"EHLO bench.example", b"MAIL FROM:<a@remote.example>", b"RCPT TO:<bench@example.com>",
                        b"DATA", b"Subject: flood\r\n\r\nbody\r\n.", b"QUIT"):
            sock.sendall(command + b"\r\n")
            line = reader.readline()
            while line[3:4] == b"-":
                line = reader.readline()
            replies.append(line or b"(closed)")
    except OSError as error:
        replies.append(f"({error.strerror})".encode())
    finally:
        sock.close()
    return replies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--limit", type=int, default=1024, help="the server's RLIMIT_NOFILE")
    parser.add_argument("--imap-client-limit", type=int, default=1000)
    args = parser.parse_args()
    count = min(args.connections, MAX_CONNECTIONS)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    root = tempfile.mkdtemp(prefix="login-flood-")
    process, imap, smtp = start_server(root, args.limit, args.imap_client_limit)
    held: list[socket.socket] = []
    outcomes = {"* OK": 0, "* BYE": 0, "no greeting": 0}
    try:
        started = time.monotonic()
        for _ in range(count):
            sock, line = greeting(imap)
            if line.startswith(b"* OK"):
                outcomes["* OK"] += 1
                held.append(sock)
                continue
            outcomes["* BYE" if line.startswith(b"* BYE") else "no greeting"] += 1
            if sock is not None:
                sock.close()
        elapsed = time.monotonic() - started
        replies = smtp_delivery(smtp)
        print(f"server RLIMIT_NOFILE {args.limit}, imap_client_limit {args.imap_client_limit}: "
              f"{count} IMAP connections in {elapsed:.1f} s: {outcomes}")
        print("SMTP while they are held:", [r.split(b" ", 1)[0].decode("ascii", "replace") or "(closed)" for r in replies])
        with open(os.path.join(root, "twistd.log")) as log:
            lines = [l.rstrip() for l in log if "file descriptors" in l or "connection refused" in l]
        print("server log:", *lines[:4], sep="\n  ")
    finally:
        for sock in held:
            sock.close()
        process.terminate()
        process.wait(timeout=30)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
