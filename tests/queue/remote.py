"""
Test doubles for the outbound side: an in-memory DNS resolver and a
scripted ESMTP server listening on a loopback port.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from twisted.internet import ssl
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.protocol import Factory
from twisted.names import dns
from twisted.names import error as dns_error
from twisted.protocols.basic import LineReceiver


class FakeResolver:
    """
    C{lookupMailExchange}/C{lookupAddress}/C{lookupIPV6Address} over dicts.

    C{mx} maps a domain to C{[(preference, host)]}; C{a} and C{aaaa} map a
    host name to addresses; C{failures} maps C{(type, name)} to an exception
    to raise.  Unknown names give NXDOMAIN; known names without records of
    the type give an empty answer.
    """

    def __init__(self, mx=None, a=None, aaaa=None, failures=None) -> None:
        self.mx = dict(mx or {})
        self.a = dict(a or {})
        self.aaaa = dict(aaaa or {})
        self.failures = dict(failures or {})
        self.queries: list[tuple[str, str]] = []

    def _known(self, name: str) -> bool:
        return name in self.mx or name in self.a or name in self.aaaa

    def _answer(self, kind: str, name: str, records):
        self.queries.append((kind, name))
        if (kind, name) in self.failures:
            return fail(self.failures[(kind, name)])
        if not self._known(name):
            return fail(dns_error.DNSNameError(name))
        return succeed((records, [], []))

    def lookupMailExchange(self, name, timeout=None):
        return self._answer(
            "MX",
            name,
            [
                dns.RRHeader(name, dns.MX, payload=dns.Record_MX(pref, host))
                for pref, host in self.mx.get(name, [])
            ],
        )

    def lookupAddress(self, name, timeout=None):
        return self._answer(
            "A", name, [dns.RRHeader(name, dns.A, payload=dns.Record_A(ip)) for ip in self.a.get(name, [])]
        )

    def lookupIPV6Address(self, name, timeout=None):
        return self._answer(
            "AAAA",
            name,
            [dns.RRHeader(name, dns.AAAA, payload=dns.Record_AAAA(ip)) for ip in self.aaaa.get(name, [])],
        )


@dataclass
class Transaction:
    """One mail transaction the fake server saw."""

    mail_from: bytes
    recipients: list[bytes] = field(default_factory=list)  # accepted ones
    data: bytes = b""
    tls: bool = False
    auth: bytes | None = None
    completed: bool = False


class ScriptedESMTP(LineReceiver):
    """A tiny ESMTP server whose replies come from its factory's script."""

    delimiter = b"\r\n"
    MAX_LENGTH = 1 << 20

    def connectionMade(self) -> None:
        self.factory.connections += 1
        self.factory.open += 1
        self.factory.max_open = max(self.factory.max_open, self.factory.open)
        self.tls = False
        self.auth: bytes | None = None
        self.transaction: Transaction | None = None
        self.in_data = False
        self.lines: list[bytes] = []
        self.sendLine(self.factory.greeting)

    def connectionLost(self, reason=None) -> None:
        self.factory.open -= 1
        if not self.factory.open:
            waiters, self.factory.waiters = self.factory.waiters, []
            for waiter in waiters:
                waiter.callback(None)

    def reply(self, line: bytes) -> None:
        self.sendLine(line)

    def lineReceived(self, line: bytes) -> None:
        if self.in_data:
            if line == b".":
                self.in_data = False
                self.transaction.data = b"".join(self.lines)
                reply = self.factory.next_reply("data", b"250 2.0.0 Ok: queued as FAKE")
                if reply.startswith(b"2"):
                    self.transaction.completed = True
                self.reply(reply)
                return
            self.lines.append((line[1:] if line.startswith(b".") else line) + b"\r\n")
            return
        self.factory.commands.append(line)
        verb = line.split(b" ", 1)[0].split(b":", 1)[0].upper()
        if verb == b"EHLO":
            extensions = list(self.factory.extensions)
            if self.factory.tls_options is not None and not self.tls:
                extensions.append(b"STARTTLS")
            lines = [b"fake.test"] + extensions
            for extension in lines[:-1]:
                self.sendLine(b"250-" + extension)
            self.sendLine(b"250 " + lines[-1])
        elif verb == b"HELO":
            self.reply(b"250 fake.test")
        elif verb == b"STARTTLS":
            self.reply(b"220 2.0.0 Ready to start TLS")
            self.transport.startTLS(self.factory.tls_options)
            self.tls = True
        elif verb == b"AUTH":
            self.auth = line
            self.reply(self.factory.next_reply("auth", b"235 2.7.0 Authentication successful"))
        elif verb == b"MAIL":
            reply = self.factory.next_reply("mail", b"250 2.1.0 Ok")
            if reply.startswith(b"2"):
                self.transaction = Transaction(line[10:], tls=self.tls, auth=self.auth)
                self.factory.transactions.append(self.transaction)
            self.reply(reply)
        elif verb == b"RCPT":
            address = line[8:].strip().strip(b"<>").split(b">")[0]
            reply = self.factory.next_reply(address.decode(), b"250 2.1.5 Ok")
            if reply.startswith(b"2"):
                self.transaction.recipients.append(address)
            self.reply(reply)
        elif verb == b"DATA":
            self.in_data = True
            self.lines = []
            self.reply(b"354 End data with <CR><LF>.<CR><LF>")
        elif verb == b"RSET":
            self.reply(b"250 2.0.0 Ok")
        elif verb == b"QUIT":
            self.reply(b"221 2.0.0 Bye")
            self.transport.loseConnection()
        else:
            self.reply(b"502 5.5.2 Error: command not recognized")


class ScriptedESMTPFactory(Factory):
    """
    The server's script: C{replies[key]} is a list of reply lines used in
    turn (the last one repeats); keys are C{"mail"}, C{"data"}, C{"auth"} or
    a recipient address.
    """

    protocol = ScriptedESMTP

    def __init__(self, greeting=b"220 fake.test ESMTP", extensions=(b"8BITMIME", b"SIZE 10240000"), tls_options=None):
        self.greeting = greeting
        self.extensions = list(extensions)
        self.tls_options = tls_options
        self.replies: dict[str, list[bytes]] = {}
        self.connections = 0
        self.open = 0
        self.max_open = 0
        self.waiters: list[Deferred] = []
        self.commands: list[bytes] = []
        self.transactions: list[Transaction] = []

    def script(self, key: str, *replies: bytes) -> None:
        self.replies[key] = list(replies)

    def next_reply(self, key: str, default: bytes) -> bytes:
        replies = self.replies.get(key)
        if not replies:
            return default
        return replies.pop(0) if len(replies) > 1 else replies[0]

    def wait_closed(self) -> Deferred:
        """Fire once every server-side connection is closed (for a clean reactor)."""
        if not self.open:
            return succeed(None)
        d = Deferred()
        self.waiters.append(d)
        return d

    @property
    def delivered(self) -> list[Transaction]:
        return [t for t in self.transactions if t.completed]


_CERTIFICATE = None


def self_signed_certificate(hostname: str = "mx.test"):
    """A self-signed PrivateCertificate made on the spot (once per test run)."""
    global _CERTIFICATE
    if _CERTIFICATE is None:
        key = ssl.KeyPair.generate(size=2048)
        _CERTIFICATE = key.selfSignedCert(1, CN=hostname)
    return _CERTIFICATE


def self_signed_tls_options(**kw):
    """Server TLS options with the self-signed certificate."""
    certificate = self_signed_certificate()
    return ssl.CertificateOptions(
        privateKey=certificate.privateKey.original, certificate=certificate.original, **kw
    )
