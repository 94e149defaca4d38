"""MX lookup and delivery to a scripted ESMTP server on a loopback port."""

from __future__ import annotations

import base64

from twisted.internet import reactor, ssl
from twisted.internet.defer import gatherResults
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.names import error as dns_error
from twisted.trial.unittest import SynchronousTestCase, TestCase

from mailserver.queue.client import RelaySession
from mailserver.queue.relay import BOUNCED, DELIVERED, DEFERRED, Relay
from tests.queue.remote import FakeResolver, ScriptedESMTPFactory, self_signed_tls_options

MESSAGE = b"From: alice@example.com\nTo: bob@example.org\nSubject: hi\n\nline one\n.leading dot\n.\nend\n"


class PortMap(Relay):
    """A relay whose hosts (by name) live on given loopback ports."""

    ports: dict[str, int] = {}

    def endpoint_for(self, name, address, port):
        return TCP4ClientEndpoint(reactor, address, self.ports.get(name, port), timeout=5)


class RelayTestCase(TestCase):
    def setUp(self) -> None:
        self.server = ScriptedESMTPFactory()
        self.listening = reactor.listenTCP(0, self.server, interface="127.0.0.1")
        self.addCleanup(self.listening.stopListening)
        self.addCleanup(lambda: self.server.wait_closed())
        self.resolver = FakeResolver(
            mx={"example.org": [(10, "mx.example.org")]},
            a={"mx.example.org": ["127.0.0.1"]},
        )

    @property
    def port(self) -> int:
        return self.listening.getHost().port

    def relay(self, cls=Relay, **kw) -> Relay:
        kw.setdefault("tls_security_level", "none")
        return cls(reactor, self.resolver, helo_name="mx.example.com", port=self.port, **kw)

    def closed_port(self) -> int:
        """A loopback port nobody listens on."""
        from twisted.internet.protocol import Factory

        port = reactor.listenTCP(0, Factory(), interface="127.0.0.1")
        number = port.getHost().port
        port.stopListening()
        return number


class DeliveryTests(RelayTestCase):
    async def test_delivered(self) -> None:
        [result] = await self.relay().deliver("alice@example.com", ["bob@example.org"], MESSAGE)
        self.assertEqual((result.status, result.enhanced), (DELIVERED, "2.0.0"))
        self.assertEqual(result.remote_mta, "mx.example.org")
        self.assertEqual(result.relay, f"mx.example.org[127.0.0.1]:{self.port}")
        [transaction] = self.server.delivered
        self.assertTrue(transaction.mail_from.startswith(b"<alice@example.com>"))
        self.assertEqual(transaction.recipients, [b"bob@example.org"])
        self.assertEqual(transaction.data, MESSAGE.replace(b"\n", b"\r\n"))
        self.assertIn(b"EHLO mx.example.com", self.server.commands)
        self.assertIn(b"QUIT", self.server.commands)
        self.assertNotIn(b"RSET", self.server.commands)

    async def test_size_and_8bitmime_parameters(self) -> None:
        message = "Subject: Grüße\n\nä\n".encode()
        await self.relay().deliver("alice@example.com", ["bob@example.org"], message)
        mail = [c for c in self.server.commands if c.startswith(b"MAIL")][0]
        self.assertIn(b" SIZE=", mail)
        self.assertIn(b" BODY=8BITMIME", mail)
        self.assertEqual(self.server.delivered[0].data, message.replace(b"\n", b"\r\n"))

    async def test_null_sender(self) -> None:
        await self.relay().deliver("", ["bob@example.org"], MESSAGE)
        self.assertTrue(self.server.delivered[0].mail_from.startswith(b"<>"))

    async def test_quoted_local_part_kept(self) -> None:
        self.resolver.mx["example.org"] = [(10, "mx.example.org")]
        await self.relay().deliver("alice@example.com", ['"odd user"@example.org'], MESSAGE)
        self.assertIn(b'RCPT TO:<"odd user"@example.org>', self.server.commands)

    async def test_mixed_results_over_one_connection(self) -> None:
        self.server.script("carol@example.org", b"550 5.1.1 <carol@example.org>: Recipient address rejected")
        self.server.script("dave@example.org", b"450 4.2.0 <dave@example.org>: Greylisted")
        results = await self.relay().deliver(
            "alice@example.com", ["bob@example.org", "carol@example.org", "dave@example.org"], MESSAGE
        )
        self.assertEqual([r.status for r in results], [DELIVERED, BOUNCED, DEFERRED])
        self.assertEqual(self.server.connections, 1)
        self.assertEqual(self.server.delivered[0].recipients, [b"bob@example.org"])
        bounced = results[1]
        self.assertEqual(bounced.enhanced, "5.1.1")
        self.assertEqual(bounced.diagnostic, "550 5.1.1 <carol@example.org>: Recipient address rejected")
        self.assertIn("in reply to RCPT TO command", bounced.text)
        self.assertIn("mx.example.org[127.0.0.1] said:", bounced.text)
        self.assertEqual(results[2].enhanced, "4.2.0")

    async def test_recipients_of_two_domains_two_connections(self) -> None:
        self.resolver.mx["example.net"] = [(10, "mx.example.org")]
        results = await self.relay().deliver(
            "alice@example.com", ["bob@example.org", "carol@example.net", "dan@example.org"], MESSAGE
        )
        self.assertEqual([r.status for r in results], [DELIVERED] * 3)
        self.assertEqual(self.server.connections, 2)
        self.assertEqual(
            sorted(len(t.recipients) for t in self.server.delivered), [1, 2]
        )

    async def test_recipient_limit_splits_transactions(self) -> None:
        recipients = [f"u{i}@example.org" for i in range(5)]
        results = await self.relay(destination_recipient_limit=2).deliver("a@example.com", recipients, MESSAGE)
        self.assertEqual([r.status for r in results], [DELIVERED] * 5)
        self.assertEqual(sorted(len(t.recipients) for t in self.server.delivered), [1, 2, 2])

    async def test_mail_from_rejected_bounces_all(self) -> None:
        self.server.script("mail", b"553 5.7.1 <alice@example.com>: Sender address rejected")
        results = await self.relay().deliver("alice@example.com", ["bob@example.org", "c@example.org"], MESSAGE)
        self.assertEqual([r.status for r in results], [BOUNCED, BOUNCED])
        self.assertIn("in reply to MAIL FROM command", results[0].text)
        self.assertEqual(results[0].enhanced, "5.7.1")

    async def test_data_rejected(self) -> None:
        self.server.script("data", b"554 5.7.1 Spam")
        [result] = await self.relay().deliver("alice@example.com", ["bob@example.org"], MESSAGE)
        self.assertEqual(result.status, BOUNCED)
        self.assertIn("in reply to end of DATA command", result.text)

    async def test_data_deferred(self) -> None:
        self.server.script("data", b"451 4.3.0 Try again")
        [result] = await self.relay().deliver("alice@example.com", ["bob@example.org"], MESSAGE)
        self.assertEqual((result.status, result.enhanced), (DEFERRED, "4.3.0"))

    async def test_bad_address_bounces_without_connecting(self) -> None:
        [result] = await self.relay().deliver("alice@example.com", ["nodomain"], MESSAGE)
        self.assertEqual((result.status, result.enhanced), (BOUNCED, "5.1.3"))
        self.assertEqual(self.server.connections, 0)


class DNSTests(RelayTestCase):
    async def test_a_record_fallback_without_mx(self) -> None:
        self.resolver.a["example.net"] = ["127.0.0.1"]
        [result] = await self.relay().deliver("a@example.com", ["bob@example.net"], MESSAGE)
        self.assertEqual(result.status, DELIVERED)
        self.assertIn(("MX", "example.net"), self.resolver.queries)
        self.assertIn(("A", "example.net"), self.resolver.queries)

    async def test_nxdomain_bounces(self) -> None:
        [result] = await self.relay().deliver("a@example.com", ["bob@nowhere.example"], MESSAGE)
        self.assertEqual((result.status, result.enhanced), (BOUNCED, "5.1.2"))

    async def test_no_mx_and_no_address_bounces(self) -> None:
        self.resolver.aaaa["example.net"] = []  # the name exists, with no MX and no address
        [result] = await self.relay().deliver("a@example.com", ["bob@example.net"], MESSAGE)
        self.assertEqual((result.status, result.enhanced), (BOUNCED, "5.1.2"))

    async def test_servfail_defers(self) -> None:
        self.resolver.failures[("MX", "example.org")] = dns_error.DNSServerError("SERVFAIL")
        [result] = await self.relay().deliver("a@example.com", ["bob@example.org"], MESSAGE)
        self.assertEqual((result.status, result.enhanced), (DEFERRED, "4.4.3"))

    async def test_mx_host_address_lookup_failure_defers(self) -> None:
        self.resolver.failures[("A", "mx.example.org")] = dns_error.DNSQueryTimeoutError("mx.example.org")
        self.resolver.failures[("AAAA", "mx.example.org")] = dns_error.DNSQueryTimeoutError("mx.example.org")
        [result] = await self.relay().deliver("a@example.com", ["bob@example.org"], MESSAGE)
        self.assertEqual(result.status, DEFERRED)

    async def test_mx_host_without_address_bounces(self) -> None:
        self.resolver.mx["example.org"] = [(10, "ghost.example.org")]
        [result] = await self.relay().deliver("a@example.com", ["bob@example.org"], MESSAGE)
        self.assertEqual((result.status, result.enhanced), (BOUNCED, "5.4.4"))

    async def test_null_mx_bounces(self) -> None:
        self.resolver.mx["example.org"] = [(0, "")]
        [result] = await self.relay().deliver("a@example.com", ["bob@example.org"], MESSAGE)
        self.assertEqual((result.status, result.enhanced), (BOUNCED, "5.1.10"))
        self.assertEqual(self.server.connections, 0)

    async def test_mx_tried_in_preference_order(self) -> None:
        self.resolver.mx["example.org"] = [(20, "backup.example.org"), (10, "primary.example.org")]
        self.resolver.a.update({"backup.example.org": ["127.0.0.1"], "primary.example.org": ["127.0.0.1"]})
        relay = self.relay(PortMap)
        relay.ports = {"primary.example.org": self.closed_port()}
        [result] = await relay.deliver("a@example.com", ["bob@example.org"], MESSAGE)
        self.assertEqual(result.status, DELIVERED)
        self.assertEqual(result.remote_mta, "backup.example.org")

    async def test_deferred_recipient_tried_at_next_mx(self) -> None:
        backup = ScriptedESMTPFactory()
        listening = reactor.listenTCP(0, backup, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        self.addCleanup(lambda: backup.wait_closed())
        self.server.script("bob@example.org", b"451 4.3.0 busy")
        self.resolver.mx["example.org"] = [(10, "mx.example.org"), (20, "backup.example.org")]
        self.resolver.a["backup.example.org"] = ["127.0.0.1"]
        relay = self.relay(PortMap)
        relay.ports = {"backup.example.org": listening.getHost().port}
        results = await relay.deliver("a@example.com", ["bob@example.org", "carol@example.org"], MESSAGE)
        self.assertEqual([r.status for r in results], [DELIVERED, DELIVERED])
        self.assertEqual(results[0].remote_mta, "backup.example.org")
        self.assertEqual(results[1].remote_mta, "mx.example.org")
        self.assertEqual(backup.delivered[0].recipients, [b"bob@example.org"])

    async def test_connection_refused_defers(self) -> None:
        relay = self.relay(PortMap)
        relay.ports = {"mx.example.org": self.closed_port()}
        [result] = await relay.deliver("a@example.com", ["bob@example.org"], MESSAGE)
        self.assertEqual((result.status, result.enhanced), (DEFERRED, "4.4.1"))
        self.assertIn("connect to mx.example.org[127.0.0.1]", result.text)

    async def test_5xx_greeting_skipped_and_deferred(self) -> None:
        self.server.greeting = b"554 5.3.2 Not now"
        [result] = await self.relay().deliver("a@example.com", ["bob@example.org"], MESSAGE)
        self.assertEqual(result.status, DEFERRED)
        self.assertIn("refused to talk to me: 554 5.3.2 Not now", result.text)


class RelayhostTests(RelayTestCase):
    async def test_bracketed_relayhost_skips_dns(self) -> None:
        relay = self.relay(relayhost=f"[127.0.0.1]:{self.port}")
        [result] = await relay.deliver("a@example.com", ["bob@elsewhere.example"], MESSAGE)
        self.assertEqual(result.status, DELIVERED)
        self.assertEqual(self.resolver.queries, [])

    async def test_relayhost_with_mx_lookup(self) -> None:
        self.resolver.mx["relay.example"] = [(10, "mx.example.org")]
        relay = self.relay(relayhost="relay.example")
        [result] = await relay.deliver("a@example.com", ["bob@elsewhere.example"], MESSAGE)
        self.assertEqual(result.status, DELIVERED)
        self.assertEqual(self.resolver.queries[0], ("MX", "relay.example"))

    async def test_auth_over_tls(self) -> None:
        self.server.tls_options = self_signed_tls_options()
        self.server.extensions.append(b"AUTH PLAIN LOGIN")
        relay = self.relay(
            relayhost=f"[127.0.0.1]:{self.port}",
            tls_security_level="may",
            sasl_passwords={f"[127.0.0.1]:{self.port}": ("user@example.com", "s3cret")},
        )
        [result] = await relay.deliver("a@example.com", ["bob@elsewhere.example"], MESSAGE)
        self.assertEqual(result.status, DELIVERED)
        [transaction] = self.server.delivered
        self.assertTrue(transaction.tls)
        self.assertTrue(transaction.auth.startswith(b"AUTH PLAIN "))
        self.assertEqual(base64.b64decode(transaction.auth.split()[2]), b"\0user@example.com\0s3cret")

    async def test_no_password_in_clear(self) -> None:
        self.server.extensions.append(b"AUTH PLAIN LOGIN")
        relay = self.relay(
            relayhost=f"[127.0.0.1]:{self.port}",
            tls_security_level="may",
            sasl_passwords={f"[127.0.0.1]:{self.port}": ("user", "s3cret")},
        )
        [result] = await relay.deliver("a@example.com", ["bob@elsewhere.example"], MESSAGE)
        self.assertEqual((result.status, result.enhanced), (DEFERRED, "4.7.4"))
        self.assertFalse(any(c.startswith(b"AUTH") for c in self.server.commands))
        self.assertEqual(self.server.transactions, [])

    async def test_auth_refused_defers(self) -> None:
        self.server.tls_options = self_signed_tls_options()
        self.server.extensions.append(b"AUTH PLAIN")
        self.server.script("auth", b"535 5.7.8 Authentication failed")
        relay = self.relay(
            relayhost=f"[127.0.0.1]:{self.port}",
            tls_security_level="may",
            sasl_passwords={"127.0.0.1": ("user", "wrong")},
        )
        [result] = await relay.deliver("a@example.com", ["bob@elsewhere.example"], MESSAGE)
        self.assertEqual(result.status, DEFERRED)
        self.assertIn("SASL authentication failed", result.text)
        self.assertEqual(self.server.transactions, [])


class TLSTests(RelayTestCase):
    async def test_starttls_offered_is_used(self) -> None:
        self.server.tls_options = self_signed_tls_options()
        [result] = await self.relay(tls_security_level="may").deliver(
            "a@example.com", ["bob@example.org"], MESSAGE
        )
        self.assertEqual(result.status, DELIVERED)
        self.assertIn(b"STARTTLS", self.server.commands)
        self.assertTrue(self.server.delivered[0].tls)
        self.assertEqual(self.server.commands.count(b"EHLO mx.example.com"), 2)

    async def test_no_starttls_offered_plain_text(self) -> None:
        [result] = await self.relay(tls_security_level="may").deliver(
            "a@example.com", ["bob@example.org"], MESSAGE
        )
        self.assertEqual(result.status, DELIVERED)
        self.assertFalse(self.server.delivered[0].tls)

    async def test_encrypt_level_requires_starttls(self) -> None:
        [result] = await self.relay(tls_security_level="encrypt").deliver(
            "a@example.com", ["bob@example.org"], MESSAGE
        )
        self.assertEqual((result.status, result.enhanced), (DEFERRED, "4.7.4"))
        self.assertEqual(self.server.transactions, [])

    async def test_failed_handshake_retried_in_plain_text(self) -> None:
        self.server.tls_options = self_signed_tls_options(lowerMaximumSecurityTo=ssl.TLSVersion.TLSv1_2)
        client = ssl.CertificateOptions(raiseMinimumTo=ssl.TLSVersion.TLSv1_3)
        relay = self.relay(tls_security_level="may", tls_context=client)
        [result] = await relay.deliver("a@example.com", ["bob@example.org"], MESSAGE)
        self.assertEqual(result.status, DELIVERED)
        self.assertEqual(self.server.connections, 2)
        self.assertFalse(self.server.delivered[0].tls)

    async def test_failed_handshake_with_encrypt_defers(self) -> None:
        self.server.tls_options = self_signed_tls_options(lowerMaximumSecurityTo=ssl.TLSVersion.TLSv1_2)
        client = ssl.CertificateOptions(raiseMinimumTo=ssl.TLSVersion.TLSv1_3)
        relay = self.relay(tls_security_level="encrypt", tls_context=client)
        [result] = await relay.deliver("a@example.com", ["bob@example.org"], MESSAGE)
        self.assertEqual((result.status, result.enhanced), (DEFERRED, "4.7.5"))
        self.assertEqual(self.server.transactions, [])

    def test_unknown_level_refused(self) -> None:
        self.assertRaises(ValueError, self.relay, tls_security_level="dane")


class ConcurrencyTests(RelayTestCase):
    async def test_destination_concurrency_limit(self) -> None:
        relay = self.relay(destination_concurrency_limit=1)
        deliveries = [
            relay.deliver("a@example.com", [f"u{i}@example.org"], MESSAGE) for i in range(3)
        ]
        self.assertLessEqual(relay.active_sessions("example.org"), 1)
        results = await gatherResults(deliveries)
        self.assertEqual([r[0].status for r in results], [DELIVERED] * 3)
        self.assertEqual(self.server.max_open, 1)
        self.assertEqual(relay.active_sessions("example.org"), 0)


class SessionTests(SynchronousTestCase):
    """The client state machine over a StringTransport."""

    def session(self, **kw) -> tuple[RelaySession, StringTransport]:
        clock = kw.pop("clock", None) or Clock()
        values = dict(
            helo_name="mx.example.com",
            host_label="mx.example.org[192.0.2.1]",
            sender="a@example.com",
            recipients=["b@example.org"],
            payload=b"Subject: x\r\n\r\nbody\r\n",
        )
        values.update(kw)
        session = RelaySession(**values)
        session.callLater = clock.callLater  # the reply timeout runs on a fake clock
        transport = StringTransport()
        session.makeConnection(transport)
        return session, transport

    def test_helo_fallback_and_refused_helo_does_not_loop(self) -> None:
        session, transport = self.session()
        outcomes = []
        session.done.addCallback(outcomes.append)
        session.dataReceived(b"220 hi\r\n")
        session.dataReceived(b"502 5.5.2 what\r\n")
        self.assertIn(b"HELO mx.example.com", transport.value())
        session.dataReceived(b"550 5.7.1 go away\r\n")
        session.dataReceived(b"221 bye\r\n")
        self.assertEqual(transport.value().count(b"HELO"), 1)
        self.assertTrue(transport.value().endswith(b"QUIT\r\n"))
        session.connectionLost(None)
        permanent, enhanced, text, diagnostic = outcomes[0].failure
        self.assertTrue(permanent)
        self.assertEqual(enhanced, "5.7.1")
        self.assertIn("in reply to HELO command", text)

    def test_reply_timeout_aborts(self) -> None:
        clock = Clock()
        session, transport = self.session(reply_timeout=300, clock=clock)
        outcomes = []
        session.done.addCallback(outcomes.append)
        clock.advance(301)
        self.assertTrue(transport.disconnecting)
        session.connectionLost(None)
        self.assertEqual(outcomes[0].failure[1], "4.4.2")
        self.assertIn("timed out while greeting", outcomes[0].failure[2])

    def test_lost_after_data_sent_defers(self) -> None:
        session, transport = self.session()
        outcomes = []
        session.done.addCallback(outcomes.append)
        for line in (b"220 hi", b"250 ok", b"250 ok", b"250 ok", b"354 go"):
            session.dataReceived(line + b"\r\n")
        session.connectionLost(None)
        self.assertIsNone(outcomes[0].replies)
        self.assertFalse(outcomes[0].failure[0])

    def test_multiline_reply_text_joined(self) -> None:
        session, transport = self.session()
        outcomes = []
        session.done.addCallback(outcomes.append)
        for line in (b"220 hi", b"250 ok", b"250 ok", b"550-5.1.1 first", b"550 5.1.1 second", b"221 bye"):
            session.dataReceived(line + b"\r\n")
        session.connectionLost(None)
        self.assertEqual(outcomes[0].replies["b@example.org"], (550, "5.1.1 first 5.1.1 second", "RCPT TO"))
