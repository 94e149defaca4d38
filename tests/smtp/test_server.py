"""ESMTP sessions on StringTransport: replies, limits, ordering, bad input."""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase

from mailserver.errors import MailError
from mailserver.smtp.factory import SMTPFactory
from mailserver.smtp.server import SMTPPolicy
from tests.fakes import MemoryStore, anonymous_portal, build_core


class Session:
    """A scripted session: send bytes, read the replies sent since last time."""

    def __init__(self, factory: SMTPFactory, ip: str = "192.0.2.1") -> None:
        from twisted.internet.address import IPv4Address

        self.transport = StringTransport(peerAddress=IPv4Address("TCP", ip, 40000))
        self.protocol = factory.buildProtocol(None)
        self.protocol.makeConnection(self.transport)

    def send(self, data: bytes) -> list[str]:
        self.transport.clear()
        self.protocol.dataReceived(data)
        return self.replies()

    def replies(self) -> list[str]:
        out = self.transport.value().decode()
        self.transport.clear()
        return [line for line in out.split("\r\n") if line]


class ServerTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.store = MemoryStore()
        self.core = build_core(self.clock, store=self.store, message_size_limit=1000, recipient_limit=3)
        self.policy = SMTPPolicy(hostname="mx.example.com", banner="mx.example.com ESMTP mailserver",
                                 message_size_limit=1000, hard_error_limit=20, line_length_limit=512)
        self.factory = SMTPFactory(anonymous_portal(self.core), self.policy, self.clock,
                                   max_connections=3, per_client_limit=2)

    def session(self, ip: str = "192.0.2.1") -> Session:
        s = Session(self.factory, ip)
        self.assertEqual(s.replies(), ["220 mx.example.com ESMTP mailserver"])
        return s

    def test_ehlo_lists_extensions(self) -> None:
        replies = self.session().send(b"EHLO client.example\r\n")
        self.assertEqual(replies[0], "250-mx.example.com")
        for ext in ("PIPELINING", "SIZE 1000", "8BITMIME", "ENHANCEDSTATUSCODES"):
            self.assertTrue(any(r[4:] == ext for r in replies), (ext, replies))
        self.assertTrue(replies[-1].startswith("250 "))

    def test_mail_before_helo_refused(self) -> None:
        self.assertEqual(self.session().send(b"MAIL FROM:<a@b.example>\r\n"),
                         ["503 5.5.1 Error: send HELO/EHLO first"])

    def test_delivery_to_known_user(self) -> None:
        s = self.session()
        s.send(b"EHLO c\r\n")
        replies = s.send(b"MAIL FROM:<x@remote.example>\r\nRCPT TO:<Alice+tag@EXAMPLE.com>\r\nDATA\r\n")
        self.assertEqual(replies, ["250 2.1.0 Ok", "250 2.1.5 Ok", "354 End data with <CR><LF>.<CR><LF>"])
        replies = s.send(b"Subject: hi\r\n\r\n..dot\r\nbody\r\n.\r\n")
        self.assertEqual(len(replies), 1)
        self.assertRegex(replies[0], r"^250 2\.0\.0 Ok: queued as [0-9A-F]+$")
        [(maildir, data)] = self.store.delivered
        self.assertEqual(maildir, "/mail/example.com/alice")
        self.assertTrue(data.startswith(b"Return-Path: <x@remote.example>\nX-Original-To: Alice+tag@example.com\n"
                                        b"Delivered-To: alice@example.com\nReceived: from c (unknown [192.0.2.1])\n"))
        self.assertRegex(data, rb"\nSubject: hi\nMessage-ID: <\d{14}\.[0-9A-F]+@mx\.example\.com>\nDate: [^\n]+\n\n\.dot\nbody\n\Z")

    def test_one_log_line_per_message(self) -> None:
        """Postfix's line: queue id, from, to, client, size, status and what happened."""
        from twisted.logger import formatEvent, globalLogPublisher

        events: list[dict] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        s = self.session()
        s.send(b"EHLO c\r\nMAIL FROM:<x@remote.example>\r\nRCPT TO:<alice@example.com>\r\n"
               b"RCPT TO:<bob@example.com>\r\nDATA\r\n")
        [reply] = s.send(b"Subject: hi\r\n\r\nbody\r\n.\r\n")
        queue_id = reply.rsplit(" ", 1)[1]
        [line] = [formatEvent(e) for e in events if e.get("queue_id") == queue_id]
        size = len(self.store.delivered[0][1]) - len(b"Return-Path: <x@remote.example>\n"
                                                     b"X-Original-To: alice@example.com\n"
                                                     b"Delivered-To: alice@example.com\n")
        self.assertEqual(line, f"{queue_id}: from=<x@remote.example>, to=<alice@example.com>,<bob@example.com>, "
                               f"client=[192.0.2.1], size={size}, status=delivered "
                               f"(delivered to alice@example.com, bob@example.com)")

    def test_unknown_user(self) -> None:
        s = self.session()
        s.send(b"EHLO c\r\nMAIL FROM:<>\r\n")
        self.assertEqual(s.send(b"RCPT TO:<nobody@example.com>\r\n"),
                         ["550 5.1.1 Recipient address rejected: User unknown in local recipient table"])
        self.assertEqual(s.send(b"DATA\r\n"), ["554 5.5.1 Error: no valid recipients"])

    def test_postmaster_always_exists(self) -> None:
        s = self.session()
        s.send(b"EHLO c\r\nMAIL FROM:<>\r\n")
        self.assertEqual(s.send(b"RCPT TO:<PostMaster@example.com>\r\n"), ["250 2.1.5 Ok"])

    def test_relay_denied(self) -> None:
        s = self.session()
        s.send(b"EHLO c\r\nMAIL FROM:<a@example.com>\r\n")
        for rcpt in (b"<victim@elsewhere.example>", b"<victim%elsewhere.example@example.com>",
                     b"<@example.com:victim@elsewhere.example>", b'<"victim@elsewhere.example"@example.com>'):
            self.assertEqual(s.send(b"RCPT TO:" + rcpt + b"\r\n"), ["554 5.7.1 Relay access denied"], rcpt)
        self.assertEqual(self.store.delivered, [])

    def test_source_route_ignored(self) -> None:
        s = self.session()
        s.send(b"EHLO c\r\nMAIL FROM:<@a.example:x@b.example>\r\n")
        self.assertEqual(s.send(b"RCPT TO:<@relay.example,@other.example:bob@example.com>\r\n"), ["250 2.1.5 Ok"])

    def test_declared_size_too_big(self) -> None:
        s = self.session()
        s.send(b"EHLO c\r\n")
        self.assertEqual(s.send(b"MAIL FROM:<a@b.example> SIZE=1001\r\n"),
                         ["552 5.3.4 Message size exceeds fixed limit"])

    def test_actual_size_too_big(self) -> None:
        s = self.session()
        s.send(b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n")
        replies = s.send(b"".join(b"x" * 70 + b"\r\n" for _ in range(20)) + b".\r\n")
        self.assertEqual(replies, ["552 5.3.4 Message size exceeds fixed limit"])
        self.assertEqual(self.store.delivered, [])
        self.assertEqual(s.send(b"NOOP\r\n"), ["250 2.0.0 Ok"])

    def test_recipient_limit(self) -> None:
        s = self.session()
        s.send(b"EHLO c\r\nMAIL FROM:<a@b.example>\r\n")
        for _ in range(3):
            self.assertEqual(s.send(b"RCPT TO:<bob@example.com>\r\n"), ["250 2.1.5 Ok"])
        self.assertEqual(s.send(b"RCPT TO:<bob@example.com>\r\n"), ["452 4.5.3 Error: too many recipients"])

    def test_long_command_line(self) -> None:
        s = self.session()
        self.assertEqual(s.send(b"EHLO " + b"a" * 2000 + b"\r\n"), ["500 5.5.2 Error: line too long"])
        self.assertEqual(s.send(b"NOOP\r\n"), ["250 2.0.0 Ok"])

    def test_long_command_line_in_pieces(self) -> None:
        s = self.session()
        self.assertEqual(s.send(b"MAIL FROM:<" + b"a" * 600), ["500 5.5.2 Error: line too long"])
        self.assertEqual(s.send(b"a" * 600 + b">\r\nNOOP\r\n"), ["250 2.0.0 Ok"])

    def test_nul_in_command(self) -> None:
        self.assertEqual(self.session().send(b"HELO a\0b\r\n"), ["500 5.5.2 Error: NUL character in command"])

    def test_unknown_command_and_vrfy(self) -> None:
        s = self.session()
        self.assertEqual(s.send(b"FOO bar\r\n"), ["502 5.5.2 Error: command not recognized"])
        self.assertEqual(s.send(b"VRFY root\r\n")[0][:10], "252 2.0.0 ")
        replies = s.send(b"HELP\r\n")
        self.assertTrue(replies)
        self.assertTrue(all(r[:4] in ("214-", "214 ") for r in replies), replies)
        self.assertTrue(replies[-1].startswith("214 2.0.0"))

    def test_syntax_errors(self) -> None:
        s = self.session()
        s.send(b"EHLO c\r\n")
        self.assertEqual(s.send(b"MAIL FROM:<foo\r\n")[0][:9], "501 5.1.7")
        self.assertEqual(s.send(b"MAIL FROM:<a b@c>\r\n")[0][:9], "501 5.1.7")
        self.assertEqual(s.send(b"MAIL TO:<a@b.example>\r\n")[0][:9], "501 5.5.4")
        self.assertEqual(s.send(b"MAIL FROM:<a@b.example> FOO=1\r\n")[0][:9], "555 5.5.4")
        self.assertEqual(s.send(b"RCPT TO:<bob@example.com>\r\n"), ["503 5.5.1 Error: need MAIL command"])

    def test_bare_lf_never_ends_data_normalize(self) -> None:
        """SMTP smuggling (CVE-2023-51764 class), default normalize: <LF>.<LF> is content."""
        s = self.session()
        s.send(b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n")
        self.assertEqual(s.send(b"Subject: x\r\n\r\nhello\n.\nMAIL FROM:<evil@b.example>\n..x\r\n"), [])
        self.assertEqual(s.send(b"RCPT TO:<alice@example.com>\r\n.\r\n")[0][:9], "250 2.0.0")
        [(maildir, data)] = self.store.delivered
        self.assertTrue(data.endswith(b"hello\n\nMAIL FROM:<evil@b.example>\n.x\nRCPT TO:<alice@example.com>\n"))

    def test_bare_lf_never_ends_data(self) -> None:
        """SMTP smuggling (CVE-2023-51764 class), reject mode: refused whole."""
        self.factory.policy = self.policy = SMTPPolicy(
            hostname="mx.example.com", banner="mx.example.com ESMTP mailserver", message_size_limit=1000,
            bare_newline="reject")
        s = self.session()
        s.send(b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n")
        replies = s.send(b"Subject: x\r\n\r\nhello\n.\nMAIL FROM:<evil@b.example>\r\n")
        self.assertEqual(replies, [])
        replies = s.send(b"RCPT TO:<alice@example.com>\r\n.\r\n")
        self.assertEqual(replies, ["550 5.5.2 Error: bare <CR> or <LF> received (RFC 5321 section 2.3.8)"])
        self.assertEqual(self.store.delivered, [])

    def test_bare_cr_dot_never_ends_data(self) -> None:
        self.factory.policy = SMTPPolicy(hostname="mx.example.com", banner="mx.example.com ESMTP mailserver",
                                         bare_newline="reject")
        s = self.session()
        s.send(b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n")
        self.assertEqual(s.send(b"hello\r.\rRSET\r\n"), [])
        self.assertEqual(s.send(b".\r\n")[0][:9], "550 5.5.2")

    def test_pipelined_replies_in_order_with_deferred_checks(self) -> None:
        """twisted issue 8126: a slow RCPT check must not let later replies overtake it."""
        slow: list[Deferred] = []
        original = self.core.stages[-1]

        class SlowStage:
            name = "slow"

            def check(self, envelope, recipient):
                d = Deferred()
                slow.append(d)
                return d.addCallback(lambda _: original.check(envelope, recipient))

        self.core.stages = list(self.core.stages[:-1]) + [SlowStage()]
        s = self.session()
        replies = s.send(b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<bob@example.com>\r\n"
                         b"RCPT TO:<nobody@example.com>\r\nDATA\r\nSubject: s\r\n\r\nbody\r\n.\r\nQUIT\r\n")
        self.assertEqual(replies[-1], "250 2.1.0 Ok")
        self.assertEqual(len(slow), 1)
        slow.pop().callback(None)
        self.assertEqual(s.replies(), ["250 2.1.5 Ok"])
        slow.pop().callback(None)
        replies = s.replies()
        self.assertEqual(replies[0][:9], "550 5.1.1")
        self.assertEqual(replies[1][:3], "354")
        self.assertEqual(replies[2][:9], "250 2.0.0")
        self.assertEqual(replies[3], "221 2.0.0 Bye")

    def test_250_only_after_store_is_durable(self) -> None:
        self.store.pending = []
        s = self.session()
        s.send(b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n")
        self.assertEqual(s.send(b"x\r\n.\r\nNOOP\r\n"), [])
        self.store.pending.pop().callback(None)
        replies = s.replies()
        self.assertEqual(replies[0][:9], "250 2.0.0")
        self.assertEqual(replies[1], "250 2.0.0 Ok")

    def test_store_failure_is_451_and_session_goes_on(self) -> None:
        self.store.error = MailError(451, "4.3.0", "Error: local delivery failed")
        s = self.session()
        s.send(b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n")
        self.assertEqual(s.send(b"x\r\n.\r\n"), ["451 4.3.0 Error: local delivery failed"])
        self.assertEqual(s.send(b"MAIL FROM:<a@b.example>\r\n"), ["250 2.1.0 Ok"])

    def test_connection_limits(self) -> None:
        self.session("192.0.2.1")
        self.session("192.0.2.1")
        third = Session(self.factory, "192.0.2.1")
        self.assertEqual(third.replies(), ["421 4.7.0 Error: too many connections from 192.0.2.1"])
        self.session("192.0.2.2")
        fourth = Session(self.factory, "192.0.2.3")
        self.assertEqual(fourth.replies(), ["421 4.7.0 Error: too many connections"])

    def test_idle_timeout(self) -> None:
        s = self.session()
        self.clock.advance(self.policy.timeout + 1)
        self.assertEqual(s.replies(), ["421 4.4.2 mx.example.com Error: timeout exceeded"])
        self.assertTrue(s.transport.disconnecting)

    def test_hard_error_limit(self) -> None:
        s = self.session()
        replies = s.send(b"FOO\r\n" * 25)
        self.assertEqual(replies[-1], "421 4.7.0 mx.example.com Error: too many errors")
        self.assertEqual(len(replies), 21)

    def test_rset_forgets_transaction(self) -> None:
        s = self.session()
        s.send(b"EHLO c\r\nMAIL FROM:<a@b.example>\r\n")
        self.assertEqual(s.send(b"RSET\r\n"), ["250 2.0.0 Ok"])
        self.assertEqual(s.send(b"RCPT TO:<bob@example.com>\r\n"), ["503 5.5.1 Error: need MAIL command"])

    def test_quoted_local_part(self) -> None:
        s = self.session()
        s.send(b"EHLO c\r\n")
        self.assertEqual(s.send(b'MAIL FROM:<"john doe"@b.example>\r\n'), ["250 2.1.0 Ok"])
        self.assertEqual(s.send(b'RCPT TO:<"bob"@example.com>\r\n'), ["250 2.1.5 Ok"])


from twisted.internet.interfaces import ITLSTransport
from zope.interface import implementer


@implementer(ITLSTransport)
class FakeTLSTransport(StringTransport):
    """Records startTLS; enough for the STARTTLS state machine."""

    tls_context = None

    def startTLS(self, context, normal=True):
        self.tls_context = context


class StartTLSTests(SynchronousTestCase):
    def setUp(self) -> None:
        from twisted.internet.address import IPv4Address

        self.clock = MemoryReactorClock()
        self.store = MemoryStore()
        core = build_core(self.clock, store=self.store)
        policy = SMTPPolicy(hostname="mx.example.com", banner="mx.example.com ESMTP mailserver")
        self.context = object()
        self.factory = SMTPFactory(anonymous_portal(core), policy, self.clock, context_factory=self.context,
                                   challengers={b"PLAIN": object})
        self.transport = FakeTLSTransport(peerAddress=IPv4Address("TCP", "192.0.2.9", 4000))
        self.protocol = self.factory.buildProtocol(None)
        self.protocol.makeConnection(self.transport)
        self.transport.clear()

    def send(self, data: bytes) -> list[str]:
        self.transport.clear()
        self.protocol.dataReceived(data)
        return [l for l in self.transport.value().decode().split("\r\n") if l]

    def test_starttls_advertised_and_auth_hidden_before_tls(self):
        replies = self.send(b"EHLO c\r\n")
        self.assertIn("STARTTLS", [r[4:] for r in replies])
        self.assertFalse(any("AUTH" in r for r in replies))
        self.assertEqual(self.send(b"AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n"),
                         ["538 5.7.11 Encryption required for requested authentication mechanism"])

    def test_command_injection_after_starttls_discarded(self):
        """CVE-2011-0411: commands pipelined with STARTTLS in the clear are thrown away."""
        self.send(b"EHLO c\r\n")
        replies = self.send(b"STARTTLS\r\nMAIL FROM:<evil@x.example>\r\nRCPT TO:<bob@example.com>\r\n")
        self.assertEqual(replies, ["220 2.0.0 Ready to start TLS"])
        self.assertIs(self.transport.tls_context, self.context)
        # After the handshake the client must EHLO again; the injected MAIL never happened.
        self.assertEqual(self.send(b"RCPT TO:<bob@example.com>\r\n"), ["503 5.5.1 Error: need MAIL command"])
        replies = self.send(b"EHLO c\r\n")
        self.assertNotIn("STARTTLS", [r[4:] for r in replies])
        self.assertTrue(any("AUTH" in r for r in replies))
        self.assertEqual(self.send(b"STARTTLS\r\n"), ["503 5.5.1 Error: TLS already active"])

    def test_encrypt_level_requires_starttls(self):
        self.factory.policy = SMTPPolicy(hostname="mx.example.com", banner="b", tls_required=True)
        protocol = self.factory.buildProtocol(None)
        transport = FakeTLSTransport()
        protocol.makeConnection(transport)
        transport.clear()
        protocol.dataReceived(b"EHLO c\r\nMAIL FROM:<a@b.example>\r\n")
        self.assertIn(b"530 5.7.0 Must issue a STARTTLS command first", transport.value())


class AuthThrottleTests(SynchronousTestCase):
    """Failed SMTP AUTH: one parsable log line, growing delays, then a ban for the address."""

    def setUp(self) -> None:
        from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
        from twisted.internet.address import IPv4Address
        from twisted.mail._cred import PLAINCredentials

        from mailserver.auth.throttle import AuthThrottle

        self.clock = MemoryReactorClock()
        core = build_core(self.clock)
        portal = anonymous_portal(core)
        portal.registerChecker(InMemoryUsernamePasswordDatabaseDontUse(alice=b"right"))
        throttle = AuthThrottle(self.clock, base_delay=2, limit=3)
        policy = SMTPPolicy(hostname="mx.example.com", banner="mx.example.com ESMTP mailserver")
        self.factory = SMTPFactory(portal, policy, self.clock, context_factory=object(),
                                   challengers={b"PLAIN": PLAINCredentials}, throttle=throttle)
        self.transport = FakeTLSTransport(peerAddress=IPv4Address("TCP", "198.51.100.7", 4000))
        self.protocol = self.factory.buildProtocol(None)
        self.protocol.makeConnection(self.transport)
        self.protocol.dataReceived(b"EHLO c\r\nSTARTTLS\r\n")
        self.protocol.dataReceived(b"EHLO c\r\n")
        self.transport.clear()

    def auth(self, password: bytes) -> str:
        import base64

        self.transport.clear()
        self.protocol.dataReceived(b"AUTH PLAIN " + base64.b64encode(b"\0alice\0" + password) + b"\r\n")
        return self.transport.value().decode()

    def test_growing_delays_then_ban(self) -> None:
        from twisted.logger import globalLogPublisher

        events: list[dict] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.assertEqual(self.auth(b"wrong"), "")  # the answer waits
        self.clock.advance(2)
        self.assertEqual(self.transport.value(), b"535 5.7.8 Authentication failed\r\n")
        self.assertEqual(self.auth(b"wrong"), "")
        self.clock.advance(2)
        self.assertEqual(self.transport.value(), b"")  # the second delay is longer
        self.clock.advance(2)
        self.assertEqual(self.transport.value(), b"535 5.7.8 Authentication failed\r\n")
        self.auth(b"wrong")
        self.clock.advance(60)
        # The address is banned now: even the right password is not checked.
        self.auth(b"right")
        self.clock.advance(60)
        self.assertIn("454 4.7.0 Too many failed logins", self.transport.value().decode())
        from twisted.logger import formatEvent

        failures = [formatEvent(e) for e in events if e.get("auth_failure")]
        self.assertEqual(len(failures), 4, failures)  # three wrong passwords, then the banned attempt
        self.assertEqual(failures[0], "auth failed: service=smtp rip=198.51.100.7 user=alice reason=authentication failed")
