"""
POP3 over TLS: STLS (RFC 2595), POP3S, the plain-text password policy, the
STARTTLS command-injection regression (CVE-2011-0411), and per-address
throttling through the session.
"""

from __future__ import annotations

import base64
import os
import poplib
import socket
import ssl
from typing import Any

from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.internet.defer import inlineCallbacks
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase, TestCase

from mailserver.auth.throttle import AuthThrottle
from mailserver.pop3.factory import POP3Factory
from mailserver.tls import PlaintextPolicy, ReloadableContextFactory, wrap_implicit
from tests.pop3.support import Fixture, deliver, make_maildir, make_portal, synchronous
from tests.pop3.test_sessions import TrackingFactory
from tests.tls.support import HOSTNAME, TLSStringTransport, client_context, in_thread, pair, write_pair

CONTEXT = object()  # StringTransport only records what it is given


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


class Session:
    def __init__(self, fixture: Fixture, transport: TLSStringTransport) -> None:
        self.transport = transport
        self.protocol = fixture.factory.buildProtocol(None)
        self.protocol.makeConnection(transport)
        self.greeting = self.output()

    def output(self) -> bytes:
        value = self.transport.value()
        self.transport.clear()
        return value

    def send(self, data: bytes) -> bytes:
        self.protocol.dataReceived(data)
        return self.output()

    def capabilities(self) -> list[bytes]:
        return self.send(b"CAPA\r\n").split(b"\r\n")[1:-2]


class Base(SynchronousTestCase):
    def setUp(self) -> None:
        self.fixture = Fixture(
            self.mktemp(), context_factory=CONTEXT, allow_plaintext=PlaintextPolicy()
        )
        self.fixture.maildir("alice")

    def session(self, peer: str = "192.0.2.10", secure: bool = False) -> Session:
        session = Session(self.fixture, TLSStringTransport(peer, secure=secure))
        self.addCleanup(lambda: session.protocol._lost or session.protocol.connectionLost(None))
        return session

    def start_tls(self, session: Session) -> None:
        self.assertEqual(session.send(b"STLS\r\n"), b"+OK Begin TLS negotiation now.\r\n")
        self.assertIs(session.transport.tls_context, CONTEXT)


class CapabilityTests(Base):
    def test_stls_offered_before_tls_and_passwords_not(self) -> None:
        caps = self.session().capabilities()
        self.assertIn(b"STLS", caps)
        self.assertNotIn(b"USER", caps)
        self.assertFalse([c for c in caps if c.startswith(b"SASL")])

    def test_after_stls_passwords_offered_and_stls_not(self) -> None:
        session = self.session()
        self.start_tls(session)
        caps = session.capabilities()
        self.assertNotIn(b"STLS", caps)
        self.assertIn(b"USER", caps)
        self.assertIn(b"SASL PLAIN LOGIN", caps)

    def test_implicit_tls(self) -> None:
        session = self.session(secure=True)
        caps = session.capabilities()
        self.assertNotIn(b"STLS", caps)
        self.assertIn(b"USER", caps)
        self.assertEqual(session.send(b"STLS\r\n"), b"-ERR Command not permitted when TLS active.\r\n")

    def test_transport_without_starttls_no_stls(self) -> None:
        session = Session(self.fixture, StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 1)))
        self.assertNotIn(b"STLS", session.capabilities())
        self.assertEqual(session.send(b"STLS\r\n"), b"-ERR STLS is not available.\r\n")
        session.protocol.connectionLost(None)

    def test_no_context_no_stls(self) -> None:
        self.fixture.factory.context_factory = None
        session = self.session()
        self.assertNotIn(b"STLS", session.capabilities())
        self.assertEqual(session.send(b"STLS\r\n"), b"-ERR STLS is not available.\r\n")
        self.assertIsNone(session.transport.tls_context)
        answer = session.send(b"USER alice\r\n")
        self.assertIn(b"TLS required, use the POP3S port", answer)


class PlaintextTests(Base):
    def test_refused_before_tls_from_remote_peer(self) -> None:
        session = self.session()
        with capturedLogs() as events:
            answer = session.send(b"USER alice\r\n")
        self.assertEqual(
            answer,
            b"-ERR [AUTH] Plaintext authentication disallowed on non-secure connections: "
            b"TLS required, use STLS first.\r\n",
        )
        self.assertTrue(session.send(b"PASS secret\r\n").startswith(b"-ERR No user name"))
        for command in (b"AUTH PLAIN " + b64(b"\0alice\0secret"), b"AUTH LOGIN", b"AUTH PLAIN"):
            self.assertTrue(session.send(command + b"\r\n").startswith(b"-ERR [AUTH] Plaintext"), command)
        self.assertIsNone(session.protocol.mbox)
        self.assertTrue(any("plaintext authentication refused" in e["log_format"] for e in events))

    def test_accepted_after_tls(self) -> None:
        session = self.session()
        self.start_tls(session)
        self.assertEqual(session.send(b"USER alice\r\n"), b"+OK Send PASS.\r\n")
        self.assertEqual(session.send(b"PASS secret\r\n"), b"+OK Logged in.\r\n")

    def test_sasl_plain_accepted_after_tls(self) -> None:
        session = self.session()
        self.start_tls(session)
        self.assertEqual(session.send(b"AUTH PLAIN " + b64(b"\0alice\0secret") + b"\r\n"), b"+OK Logged in.\r\n")

    def test_loopback_needs_no_tls(self) -> None:
        for peer in ("127.0.0.1", "::1"):
            session = self.session(peer)
            self.assertIn(b"USER", session.capabilities())
            self.assertEqual(session.send(b"USER alice\r\nPASS secret\r\n"), b"+OK Send PASS.\r\n+OK Logged in.\r\n")
            session.send(b"QUIT\r\n")

    def test_relaxed_for_labs(self) -> None:
        self.fixture.factory.allow_plaintext = PlaintextPolicy(disable_plaintext_auth=False)
        session = self.session()
        self.assertEqual(session.send(b"USER alice\r\nPASS secret\r\n"), b"+OK Send PASS.\r\n+OK Logged in.\r\n")

    def test_factory_default_is_secure(self) -> None:
        factory = POP3Factory(self.fixture.portal, self.fixture.clock, run_in_thread=synchronous)
        protocol = factory.buildProtocol(None)
        transport = TLSStringTransport("192.0.2.10")
        protocol.makeConnection(transport)
        transport.clear()
        protocol.dataReceived(b"USER alice\r\n")
        self.assertTrue(transport.value().startswith(b"-ERR [AUTH] Plaintext"))
        protocol.connectionLost(None)


class StlsTests(Base):
    def test_stls_forgets_user(self) -> None:
        self.fixture.factory.allow_plaintext = PlaintextPolicy(disable_plaintext_auth=False)
        session = self.session()
        session.send(b"USER alice\r\n")
        self.start_tls(session)
        self.assertTrue(session.send(b"PASS secret\r\n").startswith(b"-ERR No user name"))

    def test_stls_syntax_and_state(self) -> None:
        session = self.session()
        self.assertEqual(session.send(b"STLS now\r\n"), b"-ERR STLS takes no arguments.\r\n")
        self.start_tls(session)
        session.send(b"USER alice\r\nPASS secret\r\n")
        self.assertEqual(session.send(b"STLS\r\n"), b"-ERR STLS is not allowed after login.\r\n")

    def test_cve_2011_0411_commands_pipelined_after_stls_discarded(self) -> None:
        """
        Regression test (CVE-2011-0411 class): the client sends commands in the
        clear right behind STLS, in the same packet; they must not run as if
        they had arrived under TLS.
        """
        self.fixture.factory.allow_plaintext = lambda transport: transport.tls_context is not None
        session = self.session()
        with capturedLogs() as events:
            answer = session.send(b"STLS\r\nUSER alice\r\nPASS secret\r\nSTAT\r\nUSER al")
        self.assertEqual(answer, b"+OK Begin TLS negotiation now.\r\n")
        self.assertIs(session.transport.tls_context, CONTEXT)
        [discarded] = [e for e in events if "discarded" in e["log_format"]]
        self.assertEqual(discarded["count"], len(b"USER alice\r\nPASS secret\r\nSTAT\r\nUSER al"))
        # What arrives after the handshake starts from a clean slate: the
        # partial "USER al" is gone too.
        self.assertEqual(session.send(b"ice\r\n"), b"-ERR Unknown command.\r\n")
        self.assertTrue(session.send(b"PASS secret\r\n").startswith(b"-ERR No user name"))
        self.assertIsNone(session.protocol.mbox)

    def test_cve_2011_0411_queued_behind_a_slow_command(self) -> None:
        """The same, with STLS itself queued behind a login still being answered."""
        self.fixture.factory.allow_plaintext = lambda transport: True
        session = self.session()
        session.send(b"USER alice\r\n")
        self.assertEqual(session.send(b"PASS wrong\r\nSTLS\r\nUSER alice\r\nPASS secret\r\n"), b"")
        self.fixture.clock.advance(2)  # the failed login is answered, then STLS runs
        self.assertEqual(
            session.output(), b"-ERR [AUTH] Authentication failed.\r\n+OK Begin TLS negotiation now.\r\n"
        )
        self.assertIsNone(session.protocol.mbox)
        self.assertEqual(session.send(b"STAT\r\n"), b"-ERR STAT is not allowed before login.\r\n")


class ThrottleThroughSessionTests(Base):
    def test_shared_throttle_bans_across_connections(self) -> None:
        self.fixture.factory.allow_plaintext = lambda transport: True
        throttle = AuthThrottle(self.fixture.clock, base_delay=1, max_delay=1, limit=4, ban_time=60)
        self.fixture.factory.throttle = throttle
        for _ in range(2):
            session = self.session()
            for _ in range(2):
                session.send(b"USER alice\r\nPASS wrong\r\n")
                self.fixture.clock.advance(1)
        self.assertTrue(throttle.banned("192.0.2.10"))
        session = self.session()
        with capturedLogs() as events:
            session.send(b"USER alice\r\nPASS secret\r\n")
            self.fixture.clock.advance(throttle.ban_delay)
        self.assertEqual(
            session.output(), b"-ERR [AUTH] Too many failed logins from your address: try again later.\r\n"
        )
        self.assertEqual([e["reason"] for e in events if e.get("auth_failure")], ["client banned"])
        # Another address still logs in.
        other = self.session("192.0.2.99")
        self.assertEqual(other.send(b"USER alice\r\nPASS secret\r\n"), b"+OK Send PASS.\r\n+OK Logged in.\r\n")

    def assertPlainRefusedAndCounted(self, response: bytes, reason: str) -> None:
        self.fixture.factory.allow_plaintext = lambda transport: True
        session = self.session()
        with capturedLogs() as events:
            session.send(b"AUTH PLAIN " + b64(response) + b"\r\n")
            self.fixture.clock.advance(2)
        self.assertEqual(session.output(), b"-ERR [AUTH] Authentication failed.\r\n")
        self.assertIsNone(session.protocol.mbox)
        [line] = [e for e in events if e.get("auth_failure")]
        self.assertEqual((line["service"], line["rip"], line["reason"]), ("pop3", "192.0.2.10", reason))
        self.assertEqual(self.fixture.factory.throttle.failures("192.0.2.10"), 1)

    def test_malformed_sasl_is_logged_and_counted(self) -> None:
        self.assertPlainRefusedAndCounted(b"no nul bytes", "malformed PLAIN response")

    def test_regression_pop3_plain_authzid_other_than_login_refused(self) -> None:
        # Issue 17 item 6, the same rule as SMTP AUTH and IMAP AUTHENTICATE.
        self.assertPlainRefusedAndCounted(b"bob\0alice\0secret", "authorization identity not permitted")


class RealTLSTests(TestCase):
    """poplib over loopback: STLS and POP3S with real handshakes."""

    def setUp(self) -> None:
        self.base = os.path.abspath(self.mktemp())
        self.maildir = make_maildir(os.path.join(self.base, "alice"))
        deliver(self.maildir, b"Subject: over TLS\n\nsecret body\n")
        self.cert, key = write_pair(os.path.join(self.base, "tls"), pair())
        self.context = ReloadableContextFactory(self.cert, key)
        portal = make_portal(self.base, reactor, None)
        # Loopback is trusted by default; trust nothing so that TLS is what counts.
        self.factory = TrackingFactory(
            portal, reactor, context_factory=self.context,
            allow_plaintext=PlaintextPolicy(trusted_networks=()), auth_failure_delay=0,
        )  # fmt: skip
        self.addCleanup(self.factory_ended)

    def factory_ended(self):
        from twisted.internet.defer import DeferredList

        return DeferredList(self.factory.ended)

    def listen(self, factory: Any) -> int:
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return port.getHost().port

    def client_context(self) -> ssl.SSLContext:
        # poplib gives the IP address as server_hostname; check the name ourselves.
        return client_context(self.cert, check_hostname=False)

    @inlineCallbacks
    def test_poplib_stls(self):
        port = self.listen(self.factory)

        def session() -> dict[str, Any]:
            c = poplib.POP3("127.0.0.1", port, timeout=30)
            got: dict[str, Any] = {"caps": c.capa()}
            try:
                c.user("alice")
            except poplib.error_proto as e:
                got["before"] = e.args[0]
            got["stls"] = c.stls(self.client_context())
            got["cert"] = c.sock.getpeercert()
            got["version"] = c.sock.version()
            got["caps after"] = c.capa()
            c.user("alice")
            got["pass"] = c.pass_("secret")
            got["retr"] = c.retr(1)[1]
            c.quit()
            return got

        got = yield in_thread(session)
        self.assertIn("STLS", got["caps"])
        self.assertNotIn("USER", got["caps"])
        self.assertIn(b"TLS required", got["before"])
        self.assertEqual(got["stls"], b"+OK Begin TLS negotiation now.")
        self.assertIn(("DNS", HOSTNAME), got["cert"]["subjectAltName"])
        self.assertIn(got["version"], ("TLSv1.2", "TLSv1.3"))
        self.assertNotIn("STLS", got["caps after"])
        self.assertIn("USER", got["caps after"])
        self.assertEqual(got["pass"], b"+OK Logged in.")
        self.assertEqual(got["retr"], [b"Subject: over TLS", b"", b"secret body"])

    @inlineCallbacks
    def test_poplib_pop3_ssl(self):
        port = self.listen(wrap_implicit(self.factory, self.context))

        def session() -> tuple[Any, ...]:
            c = poplib.POP3_SSL("127.0.0.1", port, context=self.client_context(), timeout=30)
            caps = c.capa()
            c.user("alice")
            answer = c.pass_("secret")
            stat = c.stat()
            c.quit()
            return caps, answer, stat

        caps, answer, stat = yield in_thread(session)
        self.assertNotIn("STLS", caps)
        self.assertIn("USER", caps)
        self.assertEqual(answer, b"+OK Logged in.")
        self.assertEqual(stat, (1, len(b"Subject: over TLS\r\n\r\nsecret body\r\n")))

    @inlineCallbacks
    def test_cve_2011_0411_over_a_real_socket(self):
        """Commands sent in the clear in the same write as STLS never run."""
        port = self.listen(self.factory)

        def session() -> bytes | str:
            raw = socket.create_connection(("127.0.0.1", port), timeout=30)
            try:
                reader = raw.makefile("rb")
                reader.readline()  # greeting
                raw.sendall(b"STLS\r\nCAPA\r\n")
                if reader.readline() != b"+OK Begin TLS negotiation now.\r\n":
                    return "no STLS"
                try:
                    sock = self.client_context().wrap_socket(raw, server_hostname=HOSTNAME)
                except ssl.SSLError:
                    # The injected bytes reached the TLS layer as garbage: refused, not run.
                    return "handshake failed"
                sock.sendall(b"QUIT\r\n")
                data = b""
                while True:
                    chunk = sock.recv(4096)
                    if not chunk:
                        return data
                    data += chunk
            finally:
                raw.close()

        result = yield in_thread(session)
        self.assertEqual(result, b"+OK Logging out.\r\n")
