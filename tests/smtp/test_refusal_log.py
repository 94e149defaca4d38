"""Every refused command logs one Postfix-style line (NOQUEUE: reject: ...)."""

from __future__ import annotations

from twisted.internet.defer import succeed
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from mailserver.delivery.pipeline import DeliveryAgent
from mailserver.smtp.factory import SMTPFactory
from mailserver.smtp.server import SMTPPolicy
from tests.fakes import anonymous_portal, build_core
from tests.smtp.test_server import Session


class RefusalLogTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.events: list[dict] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        clock = MemoryReactorClock()
        self.core = build_core(clock, sender_owned_by=lambda user, sender: succeed(False))
        policy = SMTPPolicy(hostname="mx.example.com", banner="mx.example.com ESMTP")
        self.factory = SMTPFactory(anonymous_portal(self.core), policy, clock)

    def lines(self) -> list[str]:
        return [e["reject_line"] for e in self.events if "reject_line" in e]

    def test_regression_sender_login_mismatch_logged(self) -> None:
        """The 553 of reject_sender_login_mismatch used to be answered but not logged."""
        s = Session(self.factory)
        s.protocol.deliveryFactory = DeliveryAgent(self.core, "alice@example.com")
        s.protocol.sasl_user = "alice@example.com"
        s.send(b"EHLO client.example\r\n")
        replies = s.send(b"MAIL FROM:<bob@example.com>\r\n")
        self.assertEqual(replies, ["553 5.7.1 Sender address rejected: not owned by user alice@example.com"])
        self.assertEqual(self.lines(), [
            "NOQUEUE: reject: MAIL from unknown[192.0.2.1]: 553 5.7.1 Sender address rejected: not owned by"
            " user alice@example.com; from=<bob@example.com> proto=ESMTP helo=<client.example>"
        ])  # fmt: skip

    def test_rcpt_refusal_logged_postfix_style(self) -> None:
        s = Session(self.factory)
        s.send(b"EHLO client.example\r\nMAIL FROM:<x@remote.example>\r\n")
        replies = s.send(b"RCPT TO:<nobody@example.com>\r\n")
        self.assertTrue(replies[0].startswith("550 5.1.1 "), replies)
        [line] = self.lines()
        self.assertTrue(line.startswith("NOQUEUE: reject: RCPT from unknown[192.0.2.1]: 550 5.1.1 "), line)
        self.assertTrue(line.endswith("; from=<x@remote.example> to=<nobody@example.com> proto=ESMTP"
                                      " helo=<client.example>"), line)  # fmt: skip

    def test_data_without_recipients_logged(self) -> None:
        s = Session(self.factory)
        s.send(b"EHLO client.example\r\nMAIL FROM:<x@remote.example>\r\nRCPT TO:<nobody@example.com>\r\n")
        self.assertEqual(s.send(b"DATA\r\n"), ["554 5.5.1 Error: no valid recipients"])
        self.assertEqual(self.lines()[-1], "NOQUEUE: reject: DATA from unknown[192.0.2.1]: 554 5.5.1 Error: no valid"
                                           " recipients; from=<x@remote.example> proto=ESMTP helo=<client.example>")
