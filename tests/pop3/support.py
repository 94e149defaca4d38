"""Helpers for the POP3 tests: Maildirs on disk, a portal, sessions on StringTransport."""

from __future__ import annotations

import os
from typing import Any, Callable

from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.portal import Portal
from twisted.internet import task
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.mail import pop3
from twisted.python.failure import Failure

from mailserver.auth.realm import MailRealm
from mailserver.pop3.factory import POP3Factory
from mailserver.pop3.mailbox import pop3_mailbox_factory
from mailserver.pop3.server import POP3Server
from mailserver.pop3.wire import VirtualSize
from mailserver.store.names import make_name
from mailserver.store.reader import MaildirReader

_counter = [0]


def make_maildir(path: str) -> str:
    for sub in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(path, sub), exist_ok=True)
    return path


def deliver(
    maildir: str,
    data: bytes,
    sub: str = "new",
    info: str | None = None,
    when: float = 1_700_000_000.0,
    with_vsize: bool = True,
) -> str:
    """Write a message file the way the store names it; return its base name."""
    _counter[0] += 1
    counter = VirtualSize()
    counter.update(data)
    name = make_name(
        when + _counter[0], 4242, _counter[0], "test.example", len(data),
        counter.size if with_vsize else None,
    )
    if info is not None:
        name += ":" + info
    with open(os.path.join(maildir, sub, name), "wb") as f:
        f.write(data)
    return name


def files(maildir: str, sub: str) -> list[str]:
    return sorted(os.listdir(os.path.join(maildir, sub)))


def synchronous(f: Callable[..., Any], *args: Any) -> Deferred:
    """A thread runner that runs in place (unit tests on StringTransport)."""
    return maybeDeferred(f, *args)


class ManualThreads:
    """A thread runner whose calls wait until the test runs them."""

    def __init__(self) -> None:
        self.calls: list[tuple[Callable[..., Any], tuple[Any, ...], Deferred]] = []

    def __call__(self, f: Callable[..., Any], *args: Any) -> Deferred:
        d: Deferred = Deferred()
        self.calls.append((f, args, d))
        return d

    def run_one(self) -> bool:
        if not self.calls:
            return False
        f, args, d = self.calls.pop(0)
        maybeDeferred(f, *args).chainDeferred(d)
        return True

    def run_all(self) -> int:
        ran = 0
        while self.calls:
            f, args, d = self.calls.pop(0)
            maybeDeferred(f, *args).chainDeferred(d)
            ran += 1
        return ran


USERS = {b"alice": b"secret", b"bob": b"hunter2"}


def allow_all(transport: Any) -> bool:
    """A plain-text policy that allows everything."""
    return True


def make_portal(base: str, reactor: Any, run_in_thread: Callable[..., Deferred] | None) -> Portal:
    """Users alice and bob, with Maildirs under C{base}."""
    checker = InMemoryUsernamePasswordDatabaseDontUse()
    for user, password in USERS.items():
        checker.addUser(user, password)
    factory = pop3_mailbox_factory(
        lambda user: os.path.join(base, user), reactor, MaildirReader, run_in_thread=run_in_thread
    )
    return Portal(MailRealm({pop3.IMailbox: factory}), [checker])


class Session:
    """One POP3 server protocol on a StringTransport."""

    def __init__(self, factory: POP3Factory) -> None:
        self.transport = StringTransport()
        self.protocol: POP3Server = factory.buildProtocol(None)
        self.protocol.makeConnection(self.transport)

    def output(self) -> bytes:
        value = self.transport.value()
        self.transport.clear()
        return value

    def send(self, line: bytes) -> bytes:
        """Send one command line; return what the server wrote since last asked."""
        self.protocol.dataReceived(line + b"\r\n")
        return self.output()

    def login(self, user: bytes = b"alice", password: bytes | None = None) -> bytes:
        self.send(b"USER " + user)
        return self.send(b"PASS " + (password or USERS[user]))

    def drop(self) -> None:
        self.protocol.connectionLost(Failure(ConnectionDone()))


class Fixture:
    """A clock, Maildirs under a temporary directory, and a factory."""

    def __init__(self, base: str, run_in_thread: Callable[..., Deferred] = synchronous, **kw: Any):
        self.base = base
        os.makedirs(base, exist_ok=True)
        self.clock = task.Clock()
        self.portal = make_portal(base, self.clock, run_in_thread)
        # StringTransport's peer is 192.168.1.1, not loopback: these tests log
        # in without TLS, so they allow plain text (tests/pop3/test_tls.py
        # covers the real policy).
        kw.setdefault("allow_plaintext", allow_all)
        self.factory = POP3Factory(self.portal, self.clock, run_in_thread=run_in_thread, **kw)

    def maildir(self, user: str = "alice") -> str:
        return make_maildir(os.path.join(self.base, user))

    def session(self) -> Session:
        session = Session(self.factory)
        session.output()
        return session
