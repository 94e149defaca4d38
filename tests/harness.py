"""A real server on loopback port 0, built from a main.cf written by the test."""

from __future__ import annotations

import io
import os
import textwrap
from contextlib import redirect_stderr, redirect_stdout
from typing import Callable, Sequence

from twisted.internet import reactor
from twisted.internet.defer import gatherResults, inlineCallbacks

from mailserver.auth.schemes import hash_password
from mailserver.config.parameters import load_config
from mailserver.service import build
from tests.queue.remote import FakeResolver

LISTENERS = ("smtpd_listen", "submission_listen", "smtps_listen", "pop3_listen", "pop3s_listen",
             "imap_listen", "imaps_listen", "managesieve_listen")


def write_config(directory: str, extra: str = "", listeners: tuple[str, ...] = ("smtpd_listen",)) -> str:
    """A main.cf in C{directory}: every listener listed on 127.0.0.1 port 0, the rest off."""
    directory = os.path.abspath(directory)
    os.makedirs(directory, exist_ok=True)
    lines = [
        "myhostname = mx.example.com",
        "mydestination = $myhostname, localhost, example.com",
        f"data_directory = {directory}/data",
        f"passwd_file = {directory}/passwd",
        "recipient_delimiter = +",
        # Loopback test clients play outside clients: not in mynetworks.
        "mynetworks = 192.0.2.0/24",
        # No real 2 s wait per failed login: the delay has its own tests on a task.Clock
        # (tests/auth/test_throttle.py); a test that wants it sets it in C{extra}.
        "auth_failure_delay = 0",
        # DKIM verification in threads: a worker process per server would slow every test down
        # (tests/mailauth/test_verify_process.py runs them).
        "mail_authentication_verify_processes = 0",
    ]
    for name in LISTENERS:
        lines.append(f"{name} = " + ("tcp:0:interface=127.0.0.1" if name in listeners else ""))
    path = os.path.join(directory, "main.cf")
    with open(path, "w") as handle:
        handle.write("\n".join(lines) + "\n" + textwrap.dedent(extra))
    return path


def write_table(testcase, text: str, name: str = "aliases") -> str:
    """A table file (aliases by default) holding C{text}, in a directory of its own; its path."""
    directory = os.path.abspath(testcase.mktemp())
    os.makedirs(directory)
    path = os.path.join(directory, name)
    with open(path, "w") as handle:
        handle.write(text)
    return path


def capture(command: Callable[[Sequence[str]], int], *argv: str) -> tuple[int, str, str]:
    """Run a console-script C{command(argv)}: its exit status, stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        status = command(list(argv))
    return status, out.getvalue(), err.getvalue()


def write_users(directory: str, users: dict[str, str], extra: dict[str, str] | None = None) -> None:
    """
    A passwd-file with PLAIN-hashed users (fast; the schemes have their own
    tests), C{extra} fields per user; mode 0600, as the daemon wants it.
    """
    extra = extra or {}
    path = os.path.join(directory, "passwd")
    with open(path, "w") as handle:
        for name, password in users.items():
            handle.write(f"{name}:{hash_password('PLAIN', password.encode())}::::::{extra.get(name, '')}\n")
    os.chmod(path, 0o600)


class RunningServer:
    """Start with L{start}; C{ports[name]} is the bound port of each listener."""

    def __init__(self, testcase, extra: str = "", listeners=("smtpd_listen",), users=None,
                 resolver=None, relay_port: int = 25, user_extra: dict[str, str] | None = None) -> None:
        self.directory = os.path.abspath(testcase.mktemp())
        self.config_path = write_config(self.directory, extra, listeners)
        write_users(self.directory, users or {"alice@example.com": "secret", "bob@example.com": "hunter2"}, user_extra)
        self.config, _ = load_config(self.config_path)
        # Never real DNS in tests: every name is unknown unless the test says otherwise.
        self.resolver = resolver or FakeResolver()
        self.service = build(self.config, reactor, resolver=self.resolver, relay_port=relay_port)
        self.ports: dict[str, int] = {}
        testcase.addCleanup(self.stop)

    @inlineCallbacks
    def start(self):
        self.service.startService()
        listeners = [s for s in self.service if hasattr(s, "listening")]
        ports = yield gatherResults([s.listening for s in listeners])
        for listener, port in zip(listeners, ports):
            self.ports[listener.name.split()[0]] = getattr(port.getHost(), "port", 0)  # 0: a unix socket
        return self

    def stop(self):
        if self.service.running:
            return self.service.stopService()

    def maildir(self, user: str, domain: str = "example.com") -> str:
        return os.path.join(self.config.virtual_mailbox_base, domain, user)

    def messages(self, user: str, domain: str = "example.com") -> list[bytes]:
        new = os.path.join(self.maildir(user, domain), "new")
        if not os.path.isdir(new):
            return []
        out = []
        for name in sorted(os.listdir(new)):
            with open(os.path.join(new, name), "rb") as handle:
                out.append(handle.read())
        return out

    def messages_any(self, user: str, domain: str = "example.com") -> list[bytes]:
        """Messages in new/ and cur/ (POP3 and IMAP move read mail to cur/)."""
        out = []
        for sub in ("new", "cur"):
            path = os.path.join(self.maildir(user, domain), sub)
            for name in sorted(os.listdir(path)) if os.path.isdir(path) else []:
                with open(os.path.join(path, name), "rb") as handle:
                    out.append(handle.read())
        return out
