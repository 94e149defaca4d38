"""
IMAP connection limits (issue "Hardening"), the login deadline, the user+IP
limit (mail_max_userip_connections) and the APPEND literal deadline, on
StringTransport with a Clock; one loopback test against the whole server.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from twisted.internet.testing import StringTransport
from twisted.internet.threads import deferToThread
from twisted.logger import LogLevel, capturedLogs
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from mailserver.imap.literal import GRACE
from mailserver.imap.server import PREAUTH_LITERAL_LIMIT
from mailserver.limits import REFUSAL_LINGER, DescriptorBudget, LoginLimits, RefusalLog
from tests.harness import RunningServer
from tests.imap.support import MemorySession, _Address


class Sessions:
    """Several connections to one factory, each from its own address."""

    def __init__(self, testcase: Any, **factory_args: Any) -> None:
        # The clients play outside addresses without TLS: passwords allowed.
        self.first = MemorySession(testcase, allow_plaintext=lambda transport: True, **factory_args)
        self.factory = self.first.factory
        self.reactor = self.first.reactor
        self.testcase = testcase

    def connect(self, ip: str = "192.0.2.1", port: int = 50000) -> tuple[Any, StringTransport]:
        transport = StringTransport(peerAddress=_Address(ip, port))
        server = self.factory.buildProtocol(transport.getPeer())
        server.makeConnection(transport)

        def close() -> None:
            if not transport.disconnecting:
                server.connectionLost(Failure(ConnectionError("test over")))

        self.testcase.addCleanup(close)
        return server, transport


def login(server: Any, transport: StringTransport, tag: bytes = b"a") -> bytes:
    transport.clear()
    server.dataReceived(tag + b" LOGIN alice secret\r\n")
    return transport.value()


class ConnectionLimitTests(SynchronousTestCase):
    def test_regression_prelogin_connections_limited(self) -> None:
        """2,000 idle unauthenticated connections were all kept: the total is bounded, with a BYE greeting."""
        sessions = Sessions(self, limits=LoginLimits("imap", client_limit=3))
        kept = [sessions.connect(f"192.0.2.{n}") for n in range(2)]
        for _, transport in kept:
            self.assertTrue(transport.value().startswith(b"* OK"))
        server, transport = sessions.connect("192.0.2.99")
        self.assertEqual(transport.value(), b"* BYE [UNAVAILABLE] Too many connections, try again later\r\n")
        self.assertTrue(transport.disconnecting)
        # Whatever the refused client sends is not read.
        server.dataReceived(b"a LOGIN alice secret\r\n")
        self.assertEqual(transport.value(), b"* BYE [UNAVAILABLE] Too many connections, try again later\r\n")
        server.connectionLost(Failure(ConnectionError("gone")))
        # A slot comes free when a connection ends.
        kept[0][0].connectionLost(Failure(ConnectionError("gone")))
        _, transport = sessions.connect("192.0.2.100")
        self.assertTrue(transport.value().startswith(b"* OK"))

    def test_per_address_limit(self) -> None:
        sessions = Sessions(self, limits=LoginLimits("imap", per_ip_limit=2))
        sessions.connect("192.0.2.7")  # the first session is from 127.0.0.1
        sessions.connect("192.0.2.7", 50001)
        _, transport = sessions.connect("192.0.2.7", 50002)
        self.assertEqual(transport.value(), b"* BYE [UNAVAILABLE] Too many connections from your address\r\n")
        _, transport = sessions.connect("192.0.2.8")
        self.assertTrue(transport.value().startswith(b"* OK"))

    def test_descriptor_reserve_refuses_before_smtp_starves(self) -> None:
        """With the open descriptors at the reserve, IMAP says BYE and leaves the rest to SMTP."""
        sessions = Sessions(self)
        budget = DescriptorBudget(1024, sessions.reactor, count_open=lambda: 800)
        self.assertEqual(budget.reserve, 102)
        sessions.factory.limits = LoginLimits("imap", budget=budget)
        for n in range(1024 - 102 - 800):
            _, transport = sessions.connect("192.0.2.1", 40000 + n)
            self.assertTrue(transport.value().startswith(b"* OK"), n)
        _, transport = sessions.connect("192.0.2.1", 39999)
        self.assertEqual(transport.value(), b"* BYE [UNAVAILABLE] Server busy, try again later\r\n")

    def test_refused_client_that_never_reads_is_cut_off(self) -> None:
        sessions = Sessions(self, limits=LoginLimits("imap", client_limit=1))
        server, transport = sessions.connect()
        self.assertTrue(transport.disconnecting)
        sessions.reactor.advance(REFUSAL_LINGER)
        self.assertTrue(transport.disconnected)  # StringTransport's mark of abortConnection

    def test_refusals_logged_once_a_minute_per_address(self) -> None:
        sessions = Sessions(self)
        sessions.factory.limits = LoginLimits("imap", client_limit=1, refusals=RefusalLog(sessions.reactor))
        with capturedLogs() as events:
            for n in range(5):  # the first takes the one slot, four are refused
                sessions.connect("192.0.2.5", 41000 + n)
            sessions.connect("192.0.2.6")
            sessions.reactor.advance(60)
            sessions.connect("192.0.2.5", 42000)
        lines = [e for e in events if "connection refused" in e.get("log_format", "")]
        self.assertEqual([(e["rip"], e["suppressed"]) for e in lines], [("192.0.2.5", 0), ("192.0.2.6", 0), ("192.0.2.5", 3)])
        self.assertTrue(all(e["log_level"] == LogLevel.warn for e in lines))


class LoginTimeoutTests(SynchronousTestCase):
    def test_no_login_within_the_login_timeout(self) -> None:
        sessions = Sessions(self, limits=LoginLimits("imap", login_timeout=60))
        server, transport = sessions.connect()
        # Activity does not extend the time to log in (a byte a minute kept a slot for ever).
        for _ in range(5):
            sessions.reactor.advance(11)
            server.dataReceived(b"n NOOP\r\n")
        self.assertFalse(transport.disconnecting)
        transport.clear()
        sessions.reactor.advance(5)
        self.assertEqual(transport.value(), b"* BYE Disconnected: no login in time\r\n")
        self.assertTrue(transport.disconnecting)

    def test_zero_means_the_idle_timeout_only(self) -> None:
        sessions = Sessions(self, preauth_timeout=0, timeout=300, limits=LoginLimits("imap", login_timeout=0))
        server, transport = sessions.connect()
        sessions.reactor.advance(299)
        self.assertFalse(transport.disconnecting)
        sessions.reactor.advance(1)
        self.assertTrue(transport.disconnecting)

    def test_logged_in_session_keeps_the_idle_timeout(self) -> None:
        sessions = Sessions(self, limits=LoginLimits("imap", login_timeout=60))
        server, transport = sessions.connect()
        self.assertIn(b"a OK", login(server, transport))
        sessions.reactor.advance(600)
        self.assertFalse(transport.disconnecting)


class UserIPLimitTests(SynchronousTestCase):
    def test_mail_max_userip_connections_enforced(self) -> None:
        """It was declared and documented but not enforced."""
        sessions = Sessions(self, limits=LoginLimits("imap", userip_limit=2))
        first = sessions.connect("192.0.2.1")
        second = sessions.connect("192.0.2.1", 50001)
        third = sessions.connect("192.0.2.1", 50002)
        elsewhere = sessions.connect("192.0.2.2")
        self.assertIn(b"a OK", login(*first))
        self.assertIn(b"a OK", login(*second))
        self.assertEqual(
            login(*third),
            b"a NO [LIMIT] Maximum number of connections from user+IP exceeded (mail_max_userip_connections=2)\r\n",
        )
        self.assertEqual(third[0].state, "unauth")
        self.assertIn(b"a OK", login(*elsewhere))
        first[0].connectionLost(Failure(ConnectionError("gone")))
        self.assertIn(b"b OK", login(*third, tag=b"b"))


class LiteralDeadlineTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.s = MemorySession(self, literal_deadline=600, literal_min_rate=1000)
        self.s.send(b"a LOGIN alice secret\r\n")

    def inbox(self) -> list[str]:
        return [n for sub in ("new", "cur") for n in os.listdir(os.path.join(self.s.maildir(), sub))]

    def test_regression_append_literal_drip_closed(self) -> None:
        """A byte a second into an APPEND literal kept the connection for ever; now BYE, nothing stored."""
        self.assertIn(b"+ ", self.s.send(b"b APPEND INBOX {100000}\r\n"))
        for _ in range(int(GRACE) - 1):
            self.s.reactor.advance(1)
            self.assertEqual(self.s.send(b"x"), b"")
        self.assertFalse(self.s.transport.disconnecting)
        self.s.reactor.advance(2)
        self.assertEqual(self.s.output(), b"* BYE Literal data arrived too slowly\r\n")
        self.assertTrue(self.s.transport.disconnecting)
        # What still arrives is dropped, and the command never runs.
        self.assertEqual(self.s.send(b"y" * 100000 + b"\r\n"), b"")
        self.assertEqual(self.inbox(), [])

    def test_literal_at_the_minimum_rate_is_stored(self) -> None:
        size = 150_000
        self.s.send(b"b APPEND INBOX {%d}\r\n" % size)
        sent = 0
        while sent < size - 1100:
            self.s.reactor.advance(1)
            self.s.send(b"x" * 1100)
            sent += 1100
        self.assertIn(b"b OK [APPENDUID", self.s.send(b"x" * (size - sent) + b"\r\n"))
        self.assertEqual(len(self.inbox()), 1)
        pending = [getattr(c.func, "__name__", "") for c in self.s.reactor.getDelayedCalls() if c.active()]
        self.assertNotIn("_check", pending)  # the literal's deadline is gone

    def test_total_deadline(self) -> None:
        self.s.send(b"b APPEND INBOX {10000000}\r\n")
        out = b""
        for _ in range(599):
            self.s.reactor.advance(1)
            out += self.s.send(b"x" * 10000)
        self.assertEqual(out, b"")
        self.s.reactor.advance(1)
        self.assertEqual(self.s.output(), b"* BYE Literal data arrived too slowly\r\n")
        self.assertEqual(self.inbox(), [])

    def test_lost_connection_cancels_the_deadline(self) -> None:
        self.s.send(b"b APPEND INBOX {100}\r\n")
        self.s.server.connectionLost(Failure(ConnectionError("gone")))
        self.assertEqual([c for c in self.s.reactor.getDelayedCalls() if c.active()], [])


def _greeting(port: int) -> tuple[socket.socket, bytes]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    return sock, sock.makefile("rb").readline()


class LoopbackLimitTests(TestCase):
    timeout = 60

    async def test_regression_imap_flood_leaves_smtp_its_greeting(self) -> None:
        """Over imap_client_limit, IMAP and POP3 say BYE / -ERR while SMTP still greets with 220."""
        server = await RunningServer(
            self, "imap_client_limit = 3\npop3_client_limit = 1\n",
            listeners=("smtpd_listen", "imap_listen", "pop3_listen"),
        ).start()

        def flood() -> tuple[list[bytes], bytes, bytes]:
            sockets: list[socket.socket] = []
            try:
                greetings = []
                for _ in range(5):
                    sock, line = _greeting(server.ports["imap_listen"])
                    sockets.append(sock)
                    greetings.append(line)
                pop_first, _ = _greeting(server.ports["pop3_listen"])
                sockets.append(pop_first)
                pop, pop_line = _greeting(server.ports["pop3_listen"])
                sockets.append(pop)
                smtp, smtp_line = _greeting(server.ports["smtpd_listen"])
                sockets.append(smtp)
                return greetings, pop_line, smtp_line
            finally:
                for sock in sockets:
                    sock.close()

        greetings, pop_line, smtp_line = await deferToThread(flood)
        self.assertEqual([g[:4] for g in greetings], [b"* OK"] * 3 + [b"* BY"] * 2)
        self.assertEqual(greetings[-1], b"* BYE [UNAVAILABLE] Too many connections, try again later\r\n")
        self.assertEqual(pop_line, b"-ERR [SYS/TEMP] Too many connections, try again later.\r\n")
        self.assertTrue(smtp_line.startswith(b"220 "), smtp_line)


class PreLoginLiteralTests(SynchronousTestCase):
    """Issue 18: before login only small literals are read."""

    def setUp(self) -> None:
        self.s = MemorySession(self)
        self.s.output()

    def test_regression_prelogin_append_literal_refused(self) -> None:
        """A 10 MB APPEND literal before login was accepted ("+") and buffered; now BAD, nothing read."""
        out = self.s.send(b"a APPEND INBOX {10000000}\r\n")
        self.assertEqual(out, b"a BAD Literal too big before login (limit %d octets)\r\n" % PREAUTH_LITERAL_LIMIT)
        self.assertNotEqual(self.s.server.parseState, "literal")
        self.assertIsNone(getattr(self.s.server, "_pendingLiteral", None))
        # What the client sends anyway is read as command lines, and the session goes on.
        self.assertIn(b"b OK", self.s.send(b"b NOOP\r\n"))
        self.assertFalse(self.s.transport.disconnecting)

    def test_regression_prelogin_nonsync_literal_closes(self) -> None:
        """A big {n+} literal before login: BAD and BYE, the connection closed, nothing buffered."""
        out = self.s.send(b"a APPEND INBOX {10000000+}\r\n" + b"x" * 65536)
        self.assertIn(b"a BAD Literal too big before login", out)
        self.assertIn(b"* BYE", out)
        self.assertTrue(self.s.transport.disconnecting)
        self.assertIsNone(getattr(self.s.server, "_pendingLiteral", None))

    def test_prelogin_small_literals_still_read(self) -> None:
        self.assertEqual(self.s.send(b"a LOGIN {5}\r\n"), b"+ Ready for literal data\r\n")
        self.assertEqual(self.s.send(b"alice {6}\r\n"), b"+ Ready for literal data\r\n")
        self.assertIn(b"a OK", self.s.send(b"secret\r\n"))
        # After login the APPEND limit is the configured one again.
        self.assertIn(b"+ ", self.s.send(b"b APPEND INBOX {%d}\r\n" % (PREAUTH_LITERAL_LIMIT + 1)))

    def test_prelogin_literal_at_the_limit_read(self) -> None:
        self.assertEqual(self.s.send(b"a LOGIN {%d}\r\n" % PREAUTH_LITERAL_LIMIT), b"+ Ready for literal data\r\n")
