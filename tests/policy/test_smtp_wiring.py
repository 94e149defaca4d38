"""
The built-in checks in real SMTP sessions on loopback: DNSBL (a loopback DNS
server publishing 1.0.0.127.zen.example), greylisting, client rate limits,
pregreet; and the greylisting stage on an injected clock.
"""

from __future__ import annotations

import os
import smtplib
import socket
from typing import Any

from twisted.internet import defer
from twisted.internet.defer import succeed
from twisted.internet.task import Clock
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from mailserver.address import parse_mailbox
from mailserver.envelope import Client, Envelope, Outcome
from mailserver.delivery.policy_stages import GreylistStage
from mailserver.policy.greylist import Greylist, GreylistSettings
from tests.dns import DNSTestServer
from tests.harness import RunningServer
from tests.milter.test_smtp_sessions import LogCapture, send

ZONES = {"zen.example": {"1.0.0.127.zen.example": [("A", "127.0.0.2")]}}


class SessionBase(TestCase):
    timeout = 60

    def start_server(self, extra: str, resolver: Any = None) -> defer.Deferred:
        self.server = RunningServer(self, extra=extra, resolver=resolver)
        return self.server.start()

    def send(self, *args: Any, **kw: Any) -> defer.Deferred:
        return deferToThread(send, self.server.ports["smtpd_listen"], *args, **kw)


class DnsblSessionTests(SessionBase):
    @defer.inlineCallbacks
    def test_listed_client_refused_at_rcpt(self) -> Any:
        logs = LogCapture(self)
        dns = DNSTestServer(ZONES)
        yield dns.start(self)
        yield self.start_server("postscreen_dnsbl_sites = zen.example=127.0.0.[2..11]*3\n"
                                "postscreen_dnsbl_threshold = 3\n", resolver=dns.resolver)  # fmt: skip
        refused, error = yield self.send("hello")
        self.assertIsInstance(error, smtplib.SMTPRecipientsRefused)
        self.assertEqual(error.recipients["alice@example.com"],
                         (554, b"5.7.1 Service unavailable; Client host [127.0.0.1] blocked using zen.example"))
        self.assertEqual(self.server.messages_any("alice"), [])
        self.assertIn(
            "NOQUEUE: reject: RCPT from unknown[127.0.0.1]: 554 5.7.1 Service unavailable; Client host"
            " [127.0.0.1] blocked using zen.example; from=<sender@remote.example> to=<alice@example.com>"
            " proto=ESMTP helo=<client.remote.example>",
            logs.lines("reject_line"),
        )

    @defer.inlineCallbacks
    def test_unlisted_client_passes(self) -> Any:
        dns = DNSTestServer(ZONES)
        yield dns.start(self)
        yield self.start_server("postscreen_dnsbl_sites = other.zen.example*3\n", resolver=dns.resolver)
        refused, error = yield self.send("hello")
        self.assertEqual((refused, error), ({}, None))


class GreylistSessionTests(SessionBase):
    @defer.inlineCallbacks
    def test_first_attempt_deferred_retry_accepted(self) -> Any:
        logs = LogCapture(self)
        yield self.start_server("greylisting = yes\ngreylist_delay = 0s\n")
        refused, error = yield self.send("hello")
        self.assertIsInstance(error, smtplib.SMTPRecipientsRefused)
        code, text = error.recipients["alice@example.com"]
        self.assertEqual(code, 450)
        self.assertTrue(text.startswith(b"4.2.0 <alice@example.com>: Recipient address rejected: Greylisted"), text)
        self.assertEqual(self.server.messages_any("alice"), [])
        self.assertTrue(any(line.startswith("NOQUEUE: reject: RCPT from unknown[127.0.0.1]: 450 4.2.0 ")
                            for line in logs.lines("reject_line")))
        refused, error = yield self.send("hello again")
        self.assertEqual((refused, error), ({}, None))
        self.assertEqual(len(self.server.messages("alice")), 1)
        yield self.server.service.server.spam.greylist.flush()
        self.assertTrue(os.path.exists(os.path.join(self.server.config.data_directory, "greylist.json")))

    @defer.inlineCallbacks
    def test_mynetworks_skip_greylisting(self) -> Any:
        yield self.start_server("greylisting = yes\nmynetworks = 127.0.0.0/8\n")
        refused, error = yield self.send("hello")
        self.assertEqual((refused, error), ({}, None))


class GreylistStageTests(SynchronousTestCase):
    def test_deferred_until_delay_on_injected_clock(self) -> None:
        clock = Clock()
        greylist = Greylist(GreylistSettings(delay=300), self.mktemp(), clock, in_thread=lambda f, *a: succeed(None))
        stage = GreylistStage(greylist, lambda client: client.sasl_user is not None)
        envelope = Envelope(Client(ip="198.51.100.7"), parse_mailbox("a@remote.example"))
        rcpt = parse_mailbox("alice@example.com")
        verdict = stage.check(envelope, rcpt)
        self.assertEqual((verdict.outcome, verdict.error.code, verdict.error.enhanced), (Outcome.REJECT, 450, "4.2.0"))
        self.assertIn("Greylisted, try again in 300 seconds", verdict.error.text)
        clock.advance(299)
        self.assertEqual(stage.check(envelope, rcpt).outcome, Outcome.REJECT)
        clock.advance(2)
        self.assertEqual(stage.check(envelope, rcpt).outcome, Outcome.CONTINUE)
        sasl = Envelope(Client(ip="198.51.100.8", sasl_user="alice@example.com"), None)
        self.assertEqual(stage.check(sasl, parse_mailbox("bob@example.com")).outcome, Outcome.CONTINUE)


def connect_and_read(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        return sock.recv(4096)


class RateLimitSessionTests(SessionBase):
    @defer.inlineCallbacks
    def test_connection_rate_exceeded_421(self) -> Any:
        logs = LogCapture(self)
        yield self.start_server("smtpd_client_connection_rate_limit = 2\n")
        port = self.server.ports["smtpd_listen"]
        banners = []
        for _ in range(3):
            banners.append((yield deferToThread(connect_and_read, port)))
        self.assertTrue(banners[0].startswith(b"220 ") and banners[1].startswith(b"220 "), banners)
        self.assertEqual(banners[2], b"421 4.7.0 unknown[127.0.0.1] Error: too many connections from 127.0.0.1\r\n")
        self.assertIn("warning: Connection rate limit exceeded: 3 from unknown[127.0.0.1] for service smtp",
                      logs.lines("warning_line"))

    @defer.inlineCallbacks
    def test_message_rate_exceeded_421(self) -> Any:
        yield self.start_server("smtpd_client_message_rate_limit = 1\n")
        refused, error = yield self.send("one")
        self.assertEqual((refused, error), ({}, None))
        refused, error = yield self.send("two")
        self.assertIsInstance(error, smtplib.SMTPSenderRefused)
        self.assertEqual(error.smtp_code, 421)
        self.assertIn(b"too much mail from 127.0.0.1", error.smtp_error)
        self.assertEqual(len(self.server.messages("alice")), 1)


class PregreetSessionTests(SessionBase):
    @defer.inlineCallbacks
    def test_enabled_for_smtpd_listen(self) -> Any:
        yield self.start_server("postscreen_greet_enable = yes\npostscreen_greet_wait = 1s\n"
                                "postscreen_greet_action = drop\n")  # fmt: skip
        banner = yield deferToThread(connect_and_read, self.server.ports["smtpd_listen"])
        self.assertTrue(banner.startswith(b"220-"), banner)
        refused, error = yield self.send("patient")
        self.assertEqual((refused, error), ({}, None))
