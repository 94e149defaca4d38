"""
IMAP over TLS: STARTTLS (RFC 3501 6.2.1, RFC 2595) and IMAPS, the
plain-text password policy (Dovecot's C{disable_plaintext_auth}), the
STARTTLS command-injection regression (CVE-2011-0411), and failed logins
through the shared throttle (fail2ban line, growing delays, bans).

The protocol tests run on a StringTransport whose peer is not loopback;
the real handshakes use imaplib over 127.0.0.1 against the real factory.
"""

from __future__ import annotations

import base64
import imaplib
import os
import socket
import ssl
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.internet.testing import StringTransport
from twisted.internet.threads import deferToThread
from twisted.logger import capturedLogs, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from mailserver.auth.throttle import AuthGuard, AuthThrottle
from mailserver.imap.server import IMAPFactory
from mailserver.tls import PlaintextPolicy, ReloadableContextFactory, ensure_certificate
from tests.imap.support import PASSWORD, LoopbackServer, MemorySession, _Address
from tests.reactors import ThreadedClock
from tests.tls.support import TLSStringTransport

CONTEXT = object()  # TLSStringTransport only records the context it is given
REMOTE = "192.0.2.10"
REFUSED = b"NO [PRIVACYREQUIRED] Plaintext authentication disallowed on non-secure connections."


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def tagged(output: bytes, tag: bytes) -> bytes:
    for line in output.split(b"\r\n"):
        if line.startswith(tag + b" "):
            return line
    raise AssertionError(f"no {tag!r} response in {output!r}")


def capabilities(session: MemorySession) -> list[bytes]:
    out = session.send(b"c CAPABILITY\r\n")
    [line] = [line for line in out.split(b"\r\n") if line.startswith(b"* CAPABILITY ")]
    return line.split()[2:]


class Base(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = ThreadedClock()

    def session(self, peer: str = REMOTE, secure: bool = False, **factory_args: Any) -> MemorySession:
        args = {"context_factory": CONTEXT, **factory_args}
        session = MemorySession(self, transport=TLSStringTransport(peer, secure=secure), reactor=self.reactor, **args)
        session.greeting = session.output()
        return session

    def start_tls(self, session: MemorySession) -> None:
        self.assertEqual(session.send(b"t STARTTLS\r\n"), b"t OK Begin TLS negotiation now\r\n")
        self.assertIs(session.transport.tls_context, CONTEXT)


class CapabilityTests(Base):
    def test_before_tls_starttls_and_logindisabled(self) -> None:
        session = self.session()
        caps = capabilities(session)
        self.assertIn(b"STARTTLS", caps)
        self.assertIn(b"LOGINDISABLED", caps)
        self.assertFalse([c for c in caps if c.startswith(b"AUTH=")])
        self.assertIn(b"STARTTLS", session.greeting)
        self.assertIn(b"LOGINDISABLED", session.greeting)
        self.assertNotIn(b"AUTH=PLAIN", session.greeting)

    def test_after_starttls_reannounced_without_starttls(self) -> None:
        session = self.session()
        self.start_tls(session)
        caps = capabilities(session)
        self.assertNotIn(b"STARTTLS", caps)
        self.assertNotIn(b"LOGINDISABLED", caps)
        self.assertIn(b"AUTH=PLAIN", caps)
        self.assertIn(b"AUTH=LOGIN", caps)
        self.assertEqual(tagged(session.send(b"u STARTTLS\r\n"), b"u"), b"u NO TLS is already active")

    def test_implicit_tls(self) -> None:
        session = self.session(secure=True)
        caps = capabilities(session)
        self.assertNotIn(b"STARTTLS", caps)
        self.assertNotIn(b"LOGINDISABLED", caps)
        self.assertIn(b"AUTH=PLAIN", caps)
        self.assertEqual(tagged(session.send(b"t STARTTLS\r\n"), b"t"), b"t NO TLS is already active")
        self.assertIsNone(session.transport.tls_context)

    def test_no_context_no_starttls(self) -> None:
        session = self.session(context_factory=None)
        caps = capabilities(session)
        self.assertNotIn(b"STARTTLS", caps)
        self.assertIn(b"LOGINDISABLED", caps)
        self.assertEqual(tagged(session.send(b"t STARTTLS\r\n"), b"t"), b"t NO [UNAVAILABLE] TLS is not available")
        self.assertIsNone(session.transport.tls_context)

    def test_transport_without_tls_no_starttls(self) -> None:
        plain = StringTransport(peerAddress=_Address(REMOTE, 1))
        session = MemorySession(self, transport=plain, context_factory=CONTEXT)
        self.assertNotIn(b"STARTTLS", session.output())
        self.assertIn(b"t NO [UNAVAILABLE]", session.send(b"t STARTTLS\r\n"))

    def test_not_after_login(self) -> None:
        session = self.session()
        self.start_tls(session)
        self.assertIn(b"a OK", session.send(b"a LOGIN alice " + PASSWORD.encode() + b"\r\n"))
        caps = capabilities(session)
        self.assertNotIn(b"STARTTLS", caps)
        self.assertFalse([c for c in caps if c.startswith(b"AUTH=")])
        self.assertIn(b"u BAD", session.send(b"u STARTTLS\r\n"))


class ClosingTLSTransport(TLSStringTransport):
    """As under IMAPS: reading may resume while the TLS close (close_notify) is under way."""

    def resumeProducing(self) -> None:
        self.producerState = "producing"


class CloseTests(Base):
    def test_logout_under_tls_reads_on_to_see_the_close(self) -> None:
        """
        Regression: the session pauses reading while a command runs; after
        LOGOUT it stayed paused, so an IMAPS connection waited for ever for
        the client's close_notify and was never closed.
        """
        session = MemorySession(self, transport=ClosingTLSTransport(REMOTE, secure=True), reactor=self.reactor)
        session.output()
        out = session.send(b"a LOGIN alice " + PASSWORD.encode() + b"\r\nb LOGOUT\r\nc NOOP\r\n")
        self.assertIn(b"b OK LOGOUT completed", out)
        self.assertNotIn(b"c ", out)  # nothing runs after LOGOUT
        self.assertTrue(session.transport.disconnecting)
        self.assertEqual(session.transport.producerState, "producing")
        session.server.dataReceived(b"d NOOP\r\n")
        self.assertEqual(session.output(), b"")


class PlaintextTests(Base):
    def test_login_refused_before_tls_from_remote_peer(self) -> None:
        session = self.session()
        with capturedLogs() as events:
            out = session.send(b"a LOGIN alice " + PASSWORD.encode() + b"\r\n")
        self.assertEqual(tagged(out, b"a"), b"a " + REFUSED)
        self.assertIn(b"* BAD [ALERT] Plaintext authentication not allowed without SSL/TLS", out)
        self.assertEqual(session.server.state, "unauth")
        self.assertIn(b"x BAD", session.send(b"x SELECT INBOX\r\n"))
        self.assertTrue(any("plaintext authentication refused" in e["log_format"] for e in events))
        self.assertFalse([e for e in events if e.get("auth_failure")])  # no password was checked

    def test_authenticate_refused_before_tls(self) -> None:
        session = self.session()
        for command in (b"a AUTHENTICATE PLAIN", b"a AUTHENTICATE LOGIN", b"a authenticate plain",
                        b"a AUTHENTICATE PLAIN " + b64(b"\0alice\0" + PASSWORD.encode())):
            out = session.send(command + b"\r\n")
            self.assertEqual(tagged(out, b"a"), b"a " + REFUSED, command)
            self.assertNotIn(b"+ ", out)  # no challenge: the client never sends the password
        self.assertEqual(session.server.state, "unauth")

    def test_login_accepted_after_starttls(self) -> None:
        session = self.session()
        self.start_tls(session)
        out = session.send(b"a LOGIN alice " + PASSWORD.encode() + b"\r\n")
        self.assertTrue(tagged(out, b"a").startswith(b"a OK [CAPABILITY "))
        self.assertEqual(session.server.state, "auth")

    def test_authenticate_plain_and_login_accepted_after_starttls(self) -> None:
        session = self.session()
        self.start_tls(session)
        out = session.send(b"a AUTHENTICATE PLAIN " + b64(b"\0alice\0" + PASSWORD.encode()) + b"\r\n")
        self.assertIn(b"a OK", out)
        other = self.session()
        self.start_tls(other)
        self.assertEqual(other.send(b"a AUTHENTICATE LOGIN\r\n"), b"+ " + b64(b"Username:") + b"\r\n")  # as POP3 and SMTP
        other.send(b64(b"alice") + b"\r\n")
        self.assertIn(b"a OK", other.send(b64(PASSWORD.encode()) + b"\r\n"))

    def test_loopback_needs_no_tls(self) -> None:
        for peer in ("127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"):
            session = self.session(peer)
            self.assertNotIn(b"LOGINDISABLED", session.greeting, peer)
            self.assertIn(b"AUTH=PLAIN", session.greeting, peer)
            self.assertIn(b"a OK", session.send(b"a LOGIN alice " + PASSWORD.encode() + b"\r\n"), peer)

    def test_ipv4_mapped_remote_is_remote(self) -> None:
        for peer in ("::ffff:192.0.2.1", "2001:db8::1", "10.0.0.1"):
            session = self.session(peer)
            self.assertIn(b"LOGINDISABLED", session.greeting, peer)
            self.assertIn(REFUSED, session.send(b"a LOGIN alice " + PASSWORD.encode() + b"\r\n"), peer)

    def test_disable_plaintext_auth_no(self) -> None:
        session = self.session(disable_plaintext_auth=False)
        self.assertNotIn(b"LOGINDISABLED", session.greeting)
        self.assertIn(b"AUTH=PLAIN", session.greeting)
        self.assertIn(b"a OK", session.send(b"a LOGIN alice " + PASSWORD.encode() + b"\r\n"))

    def test_factory_default_is_secure(self) -> None:
        factory = IMAPFactory(None, self.reactor, None)
        server = factory.buildProtocol(None)
        transport = TLSStringTransport(REMOTE)
        server.makeConnection(transport)
        self.assertIn(b"LOGINDISABLED", transport.value())
        self.assertNotIn(b"STARTTLS", transport.value())  # no context given
        transport.clear()
        server.dataReceived(b"a LOGIN alice secret\r\n")
        self.assertIn(b"a " + REFUSED, transport.value())
        server.connectionLost(None)


class InjectionTests(Base):
    def test_cve_2011_0411_commands_pipelined_after_starttls_discarded(self) -> None:
        """
        Regression test (CVE-2011-0411 class): commands sent in the clear
        right behind STARTTLS, in the same packet, must not run as if they
        had arrived under TLS.
        """
        session = self.session()
        injected = b"x LOGIN alice " + PASSWORD.encode() + b"\r\ny SELECT INBOX\r\nz NO"
        with capturedLogs() as events:
            out = session.send(b"t STARTTLS\r\n" + injected)
        self.assertEqual(out, b"t OK Begin TLS negotiation now\r\n")
        self.assertIs(session.transport.tls_context, CONTEXT)
        [discarded] = [e for e in events if "discarded" in e["log_format"]]
        self.assertEqual(discarded["count"], len(injected))
        self.assertEqual(session.server.state, "unauth")
        # What comes after the handshake starts clean: the partial "z NO" is gone.
        self.assertEqual(session.send(b"OP\r\n"), b"OP BAD Missing command\r\n")
        self.assertEqual(session.server.state, "unauth")

    def test_cve_2011_0411_starttls_queued_behind_a_slow_login(self) -> None:
        """The same, with STARTTLS waiting behind a failed login being delayed."""
        throttle = AuthThrottle(self.reactor, base_delay=2, limit=0)
        session = self.session(disable_plaintext_auth=False, throttle=throttle)
        out = session.send(b"a LOGIN alice wrong\r\nt STARTTLS\r\nx LOGIN alice " + PASSWORD.encode() + b"\r\n")
        self.assertEqual(out, b"")
        self.reactor.advance(2)
        self.assertEqual(
            session.output(),
            b"a NO [AUTHENTICATIONFAILED] Authentication failed\r\nt OK Begin TLS negotiation now\r\n",
        )
        self.assertEqual(session.server.state, "unauth")
        self.assertIs(session.transport.tls_context, CONTEXT)
        self.assertIn(b"y BAD", session.send(b"y SELECT INBOX\r\n"))


class ThrottleTests(Base):
    def throttle(self, **kw: Any) -> AuthThrottle:
        return AuthThrottle(self.reactor, **{"base_delay": 1, "max_delay": 8, "limit": 100, **kw})

    def counting(self, session: MemorySession) -> list[Any]:
        """Record the logins that reach the portal (the password check)."""
        calls: list[Any] = []
        portal = session.factory.portal
        login = portal.login

        def counted(*args: Any) -> Any:
            calls.append(args)
            return login(*args)

        portal.login = counted
        return calls

    def test_fail2ban_line(self) -> None:
        session = self.session("::ffff:192.0.2.10", disable_plaintext_auth=False, throttle=self.throttle())
        with capturedLogs() as events:
            session.send(b"a LOGIN alice wrong\r\n")
            self.reactor.advance(1)
        [event] = [e for e in events if e.get("auth_failure")]
        self.assertEqual(
            formatEvent(event), "auth failed: service=imap rip=192.0.2.10 user=alice reason=authentication failed"
        )

    def test_growing_delays(self) -> None:
        throttle = self.throttle()
        session = self.session(disable_plaintext_auth=False, throttle=throttle)
        for tag, delay in ((b"a", 1), (b"b", 2), (b"c", 4)):
            self.assertEqual(session.send(tag + b" LOGIN alice wrong\r\n"), b"")
            self.reactor.advance(delay - 0.01)
            self.assertEqual(session.output(), b"", tag)
            self.reactor.advance(0.01)
            self.assertIn(tag + b" NO [AUTHENTICATIONFAILED]", session.output())
        self.assertEqual(throttle.failures(REMOTE), 3)
        self.assertTrue(session.transport.disconnecting)  # three failures end the session
        # The next connection from there waits longer still; a success resets.
        again = self.session(disable_plaintext_auth=False, throttle=throttle)
        again.send(b"d LOGIN alice wrong\r\n")
        self.reactor.advance(7.99)
        self.assertEqual(again.output(), b"")
        self.reactor.advance(0.01)
        self.assertIn(b"d NO", again.output())
        self.assertIn(b"e OK", again.send(b"e LOGIN alice " + PASSWORD.encode() + b"\r\n"))
        self.assertEqual(throttle.failures(REMOTE), 0)

    def test_banned_peer_refused_without_password_check(self) -> None:
        throttle = self.throttle(max_delay=1, limit=3, ban_time=60, ban_delay=5)
        for _ in range(3):
            session = self.session(disable_plaintext_auth=False, throttle=throttle)
            session.send(b"a LOGIN alice wrong\r\n")
            self.reactor.advance(1)
        self.assertTrue(throttle.banned(REMOTE))
        session = self.session(disable_plaintext_auth=False, throttle=throttle)
        calls = self.counting(session)
        with capturedLogs() as events:
            self.assertEqual(session.send(b"b LOGIN alice " + PASSWORD.encode() + b"\r\n"), b"")
            self.reactor.advance(5)
        self.assertEqual(
            tagged(session.output(), b"b"), b"b NO [UNAVAILABLE] Too many failed logins from your address, try again later"
        )
        self.assertEqual(calls, [])
        self.assertEqual(session.server.state, "unauth")
        self.assertEqual([e["reason"] for e in events if e.get("auth_failure")], ["client banned"])
        # Another address still logs in; the banned one again once the ban is over.
        other = self.session("192.0.2.99", disable_plaintext_auth=False, throttle=throttle)
        self.assertIn(b"c OK", other.send(b"c LOGIN alice " + PASSWORD.encode() + b"\r\n"))
        self.reactor.advance(60)
        later = self.session(disable_plaintext_auth=False, throttle=throttle)
        self.assertIn(b"d OK", later.send(b"d LOGIN alice " + PASSWORD.encode() + b"\r\n"))

    def test_banned_peer_over_authenticate(self) -> None:
        throttle = self.throttle(limit=1, ban_time=60, ban_delay=0)
        session = self.session(disable_plaintext_auth=False, throttle=throttle)
        session.send(b"a LOGIN alice wrong\r\n")
        self.reactor.advance(1)
        self.assertIn(b"a NO [AUTHENTICATIONFAILED]", session.output())
        session.send(b"b AUTHENTICATE PLAIN " + b64(b"\0alice\0" + PASSWORD.encode()) + b"\r\n")
        self.reactor.advance(0)
        self.assertIn(b"b NO [UNAVAILABLE]", session.output())
        self.assertEqual(session.server.state, "unauth")

    def test_malformed_authenticate_counts_as_failure(self) -> None:
        throttle = self.throttle()
        session = self.session(disable_plaintext_auth=False, throttle=throttle)
        with capturedLogs() as events:
            session.send(b"a AUTHENTICATE PLAIN " + b64(b"no nul bytes") + b"\r\n")
            self.reactor.advance(1)
        self.assertEqual(tagged(session.output(), b"a"), b"a NO [AUTHENTICATIONFAILED] Authentication failed")
        [event] = [e for e in events if e.get("auth_failure")]
        self.assertEqual((event["service"], event["rip"], event["reason"]), ("imap", REMOTE, "malformed PLAIN response"))
        self.assertEqual(throttle.failures(REMOTE), 1)

    def test_regression_imap_plain_authzid_other_than_login_refused(self) -> None:
        # Issue 17 item 6: twisted.mail's PLAINCredentials dropped the authzid (logged in as alice).
        throttle = self.throttle()
        session = self.session(disable_plaintext_auth=False, throttle=throttle)
        with capturedLogs() as events:
            session.send(b"a AUTHENTICATE PLAIN " + b64(b"bob\0alice\0" + PASSWORD.encode()) + b"\r\n")
            self.reactor.advance(1)
        self.assertEqual(tagged(session.output(), b"a"), b"a NO [AUTHENTICATIONFAILED] Authentication failed")
        self.assertEqual(session.server.state, "unauth")
        self.assertEqual([e["reason"] for e in events if e.get("auth_failure")], ["authorization identity not permitted"])
        self.assertEqual(throttle.failures(REMOTE), 1)
        self.assertIn(b"b OK", session.send(b"b AUTHENTICATE PLAIN " + b64(b"alice\0alice\0" + PASSWORD.encode()) + b"\r\n"))

    def test_guard_given_as_portal_is_used_as_is(self) -> None:
        guard = AuthGuard(object(), self.throttle(), "imap", REMOTE, self.reactor)
        server = IMAPFactory(guard, self.reactor, None).buildProtocol(None)
        server.makeConnection(TLSStringTransport(REMOTE))
        self.assertIs(server.portal, guard)
        server.connectionLost(None)


class RealTLSTests(TestCase):
    """imaplib over 127.0.0.1: STARTTLS and IMAPS with real handshakes."""

    HOST = "localhost"  # the certificate's name; imaplib checks it

    def setUp(self) -> None:
        data = os.path.abspath(self.mktemp())
        self.cert, key = ensure_certificate(data, self.HOST, key_type="ec")
        self.context = ReloadableContextFactory(self.cert, key)
        # Loopback is trusted by default: trust nothing, so that TLS is what counts.
        self.policy = PlaintextPolicy(trusted_networks=())

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.cert)
        self.assertTrue(context.check_hostname)
        return context

    @inlineCallbacks
    def test_imaplib_starttls(self):
        server = LoopbackServer(self, context_factory=self.context, allow_plaintext=self.policy)
        server.deliver(b"Subject: over TLS\r\n\r\nsecret body\r\n")

        def session() -> dict[str, Any]:
            c = imaplib.IMAP4(self.HOST, server.port, timeout=30)
            got: dict[str, Any] = {"before": c.capabilities}
            try:
                c.login("alice", PASSWORD)
            except imaplib.IMAP4.error as e:
                got["refused"] = str(e)
            got["starttls"] = c.starttls(self.client_context())
            got["cert"] = c.sock.getpeercert()
            got["version"] = c.sock.version()
            got["after"] = c.capabilities
            got["login"] = c.login("alice", PASSWORD)
            c.select("INBOX")
            got["fetch"] = c.fetch("1", "(BODY[])")[1][0][1]
            c.logout()
            return got

        got = yield deferToThread(session)
        self.assertIn("STARTTLS", got["before"])
        self.assertIn("LOGINDISABLED", got["before"])
        self.assertNotIn("AUTH=PLAIN", got["before"])
        self.assertIn("[PRIVACYREQUIRED]", got["refused"])
        self.assertEqual(got["starttls"][0], "OK")
        self.assertIn(("DNS", self.HOST), got["cert"]["subjectAltName"])
        self.assertIn(got["version"], ("TLSv1.2", "TLSv1.3"))
        self.assertNotIn("STARTTLS", got["after"])
        self.assertNotIn("LOGINDISABLED", got["after"])
        self.assertIn("AUTH=PLAIN", got["after"])
        self.assertEqual(got["login"][0], "OK")
        self.assertEqual(got["fetch"], b"Subject: over TLS\r\n\r\nsecret body\r\n")

    @inlineCallbacks
    def test_imaplib_imaps(self):
        server = LoopbackServer(self, implicit_tls=self.context, context_factory=self.context, allow_plaintext=self.policy)

        def session() -> tuple[Any, ...]:
            c = imaplib.IMAP4_SSL(self.HOST, server.port, ssl_context=self.client_context(), timeout=30)
            caps = c.capabilities
            version = c.sock.version()
            answer = c.authenticate("PLAIN", lambda challenge: b"\0alice\0" + PASSWORD.encode())
            listed = c.list()
            c.logout()
            return caps, version, answer, listed

        caps, version, answer, listed = yield deferToThread(session)
        self.assertNotIn("STARTTLS", caps)
        self.assertNotIn("LOGINDISABLED", caps)
        self.assertIn("AUTH=PLAIN", caps)
        self.assertIn(version, ("TLSv1.2", "TLSv1.3"))
        self.assertEqual(answer[0], "OK")
        self.assertEqual(listed[0], "OK")

    @inlineCallbacks
    def test_cve_2011_0411_over_a_real_socket(self):
        """A LOGIN sent in the clear in the same write as STARTTLS never runs."""
        server = LoopbackServer(self, context_factory=self.context, allow_plaintext=self.policy)
        injected = b"b LOGIN alice " + PASSWORD.encode() + b"\r\n"
        events: list[dict] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)

        def session() -> bytes | str:
            raw = socket.create_connection(("127.0.0.1", server.port), timeout=30)
            try:
                reader = raw.makefile("rb")
                reader.readline()  # greeting
                raw.sendall(b"a STARTTLS\r\n" + injected)
                if reader.readline() != b"a OK Begin TLS negotiation now\r\n":
                    return "no STARTTLS"
                try:
                    sock = self.client_context().wrap_socket(raw, server_hostname=self.HOST)
                except ssl.SSLError:
                    # The injected bytes reached the TLS layer as garbage: refused, not run.
                    return "handshake failed"
                sock.sendall(b"c NOOP\r\nd LOGOUT\r\n")
                data = b""
                while True:
                    chunk = sock.recv(4096)
                    if not chunk:
                        return data
                    data += chunk
            finally:
                raw.close()

        result = yield deferToThread(session)
        self.assertEqual(result, b"c OK NOOP completed\r\n* BYE Logging out\r\nd OK LOGOUT completed\r\n")
        [discarded] = [e for e in events if "discarded" in e.get("log_format", "")]
        self.assertEqual(discarded["count"], len(injected))
        self.assertTrue(all(s.state != "auth" and s.account is None for s in server.factory.servers))
