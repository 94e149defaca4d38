"""
Shared by the IMAP tests: a server on 127.0.0.1 port 0 (real reactor,
for imaplib and twisted's IMAP4Client), an in-memory session over
StringTransport with an inline thread pool (deterministic, with a Clock),
and delivery helpers that write files the way the delivery store does.
"""

from __future__ import annotations

import imaplib
import os
import socket
from typing import Any, Callable

from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.portal import Portal
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.internet.testing import StringTransport
from twisted.internet.threads import deferToThread
from twisted.mail.imap4 import IAccount
from twisted.python.failure import Failure

from mailserver.auth.realm import MailRealm
from mailserver.service import imap_folder_registry as default_registry
from mailserver.service import maildir_imap_accounts
from mailserver.imap.server import IMAPFactory
from mailserver.store.folders import ensure_maildir
from mailserver.store.names import make_name
from mailserver.store.notify import MailboxNotifier
from mailserver.tls import wrap_implicit
from tests.reactors import ThreadedClock

PASSWORD = "secret"
_counter = [0]


def corpus_directory() -> str:
    repo_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return os.path.join(os.path.dirname(repo_root), "shared", "corpus", "mail-fixtures")


def deliver(maildir: str, data: bytes, when: float = 1_700_000_000.0) -> str:
    """Write C{data} into C{maildir} as the delivery store does: tmp/, then rename into new/."""
    ensure_maildir(maildir)
    _counter[0] += 1
    name = make_name(when, 4242, _counter[0], "mx.test", len(data))
    tmp = os.path.join(maildir, "tmp", name)
    with open(tmp, "wb") as f:
        f.write(data)
    os.utime(tmp, (when, when))
    os.rename(tmp, os.path.join(maildir, "new", name))
    return name


def crlf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


class _TrackingFactory(IMAPFactory):
    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.servers: list[Any] = []

    def buildProtocol(self, addr: Any) -> Any:
        server = super().buildProtocol(addr)
        server.lost = False
        self.servers.append(server)
        lose = server.connectionLost

        def connectionLost(reason: Any) -> None:
            server.lost = True
            lose(reason)

        server.connectionLost = connectionLost
        return server


class LoopbackServer:
    """The real factory on 127.0.0.1 port 0 over Maildirs under C{base}."""

    def __init__(
        self, testcase: Any, users: tuple[str, ...] = ("alice", "bob"), implicit_tls: Any = None, **factory_args: Any
    ) -> None:
        self.testcase = testcase
        self.implicit_tls = implicit_tls  # a context factory: listen with IMAPS
        self.base = os.path.abspath(testcase.mktemp())
        os.makedirs(self.base)
        self.users = users
        self.factory_args = {"login_failure_delay": 0, **factory_args}
        self.start()
        testcase.addCleanup(self.stop)

    def maildir(self, user: str = "alice") -> str:
        return os.path.join(self.base, user, "Maildir")

    def start(self) -> None:
        """(Re)start with fresh factory, registry and notifier objects: a restart."""
        self.notifier = MailboxNotifier(reactor)
        self.registry = default_registry()
        accounts = maildir_imap_accounts(self.maildir, self.notifier, reactor, registry=self.registry)
        checker = InMemoryUsernamePasswordDatabaseDontUse(**{u: PASSWORD.encode() for u in self.users})
        portal = Portal(MailRealm({IAccount: accounts}), [checker])
        self.factory = _TrackingFactory(portal, reactor, self.notifier, **self.factory_args)
        listening = wrap_implicit(self.factory, self.implicit_tls) if self.implicit_tls else self.factory
        self.port_object = reactor.listenTCP(0, listening, interface="127.0.0.1")
        self.port = self.port_object.getHost().port

    async def stop(self) -> None:
        self.notifier.stop()
        await self.port_object.stopListening()
        for server in self.factory.servers:
            if not server.lost and server.transport is not None:
                server.transport.loseConnection()
        for _ in range(200):
            if all(s.lost for s in self.factory.servers):
                break
            await deferLater(reactor, 0.01, lambda: None)

    async def restart(self) -> None:
        await self.stop()
        self.start()

    def deliver(self, data: bytes, user: str = "alice", folder: str = "", when: float = 1_700_000_000.0) -> str:
        path = self.maildir(user) + ("/." + folder if folder else "")
        return deliver(path, data, when)

    def imap(self, session: Callable[[imaplib.IMAP4], Any], user: str = "alice", login: bool = True) -> Deferred:
        """Run C{session(client)} with a logged-in imaplib client in a thread."""

        def run() -> Any:
            client = imaplib.IMAP4("127.0.0.1", self.port, timeout=30)
            try:
                if login:
                    client.login(user, PASSWORD)
                return session(client)
            finally:
                try:
                    client.logout()
                except (imaplib.IMAP4.error, OSError):
                    pass

        return deferToThread(run)

    def raw(self, session: Callable[["RawClient"], Any]) -> Deferred:
        """Run C{session(raw)} with a line-level client in a thread."""

        def run() -> Any:
            client = RawClient(self.port)
            try:
                return session(client)
            finally:
                client.close()

        return deferToThread(run)


class RawClient:
    """A plain socket client: send exact bytes, read response lines."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.file = self.sock.makefile("rb")
        self.greeting = self.line()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        return self.file.readline()

    def until(self, tag: bytes) -> list[bytes]:
        """Lines up to and including the tagged response C{tag}."""
        lines = []
        while True:
            line = self.line()
            if not line:
                raise EOFError(b"".join(lines))
            lines.append(line)
            if line.startswith(tag + b" "):
                return lines

    def command(self, text: bytes) -> list[bytes]:
        tag = text.split(b" ", 1)[0]
        self.send(text + b"\r\n")
        return self.until(tag)

    def login(self, user: bytes = b"alice") -> None:
        assert self.command(b"L1 LOGIN " + user + b" " + PASSWORD.encode())[-1].startswith(b"L1 OK")

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


# ---------------------------------------------------------------- in-memory sessions


class MemorySession:
    """One IMAPServer over StringTransport; all disk work inline; time from a Clock."""

    def __init__(
        self,
        testcase: Any,
        base: str | None = None,
        transport: StringTransport | None = None,
        reactor: ThreadedClock | None = None,
        quota: Any = None,
        **factory_args: Any,
    ) -> None:
        self.reactor = reactor if reactor is not None else ThreadedClock()
        self.base = base or os.path.abspath(testcase.mktemp())
        self.notifier = MailboxNotifier(self.reactor)
        accounts = maildir_imap_accounts(lambda u: os.path.join(self.base, u), self.notifier, self.reactor, quota=quota)
        checker = InMemoryUsernamePasswordDatabaseDontUse(alice=PASSWORD.encode())
        portal = Portal(MailRealm({IAccount: accounts}), [checker])
        self.factory = IMAPFactory(portal, self.reactor, self.notifier, **{"login_failure_delay": 0, **factory_args})
        self.transport = transport if transport is not None else StringTransport(peerAddress=_Address("127.0.0.1", 40000))
        self.server = self.factory.buildProtocol(self.transport.getPeer())
        self.server.makeConnection(self.transport)
        testcase.addCleanup(self.close)

    def maildir(self, user: str = "alice") -> str:
        return os.path.join(self.base, user)

    def send(self, data: bytes) -> bytes:
        """Feed C{data}; return (and clear) what the server wrote."""
        self.server.dataReceived(data)
        return self.output()

    def output(self) -> bytes:
        value = self.transport.value()
        self.transport.clear()
        return value

    def close(self) -> None:
        if not self.transport.disconnecting:
            self.server.connectionLost(Failure(ConnectionError("test over")))
        self.notifier.stop()


class _Address:
    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.type = "TCP"
