"""SMTP replies for quotas: 552 5.2.2 at RCPT when known, one reply at end of DATA otherwise."""

from __future__ import annotations

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from mailserver.quota_rule import QuotaLimits, Usage
from mailserver.smtp.factory import SMTPFactory
from mailserver.smtp.server import SMTPPolicy
from tests.fakes import MemoryQuota, MemoryStore, anonymous_portal, build_core
from tests.smtp.test_server import Session

OVER = "552 5.2.2 <bob@example.com>: Mailbox full, over quota"


class SMTPQuotaTests(SynchronousTestCase):
    def setUp(self) -> None:
        clock = MemoryReactorClock()
        self.store = MemoryStore()
        self.quota = MemoryQuota()
        self.quota.limits["bob@example.com"] = QuotaLimits(storage=1000)
        core = build_core(clock, store=self.store, quota=self.quota)
        policy = SMTPPolicy(hostname="mx.example.com", banner="mx ESMTP")
        self.session = Session(SMTPFactory(anonymous_portal(core), policy, clock))
        self.session.send(b"EHLO c.example\r\n")

    def test_rcpt_refused_when_already_over(self) -> None:
        self.quota.used["bob@example.com"] = Usage(1000, 1)
        self.assertEqual(self.session.send(b"MAIL FROM:<s@remote.example>\r\nRCPT TO:<bob@example.com>\r\n"),
                         ["250 2.1.0 Ok", OVER])

    def test_rcpt_refused_when_declared_size_does_not_fit(self) -> None:
        self.quota.used["bob@example.com"] = Usage(900, 1)
        replies = self.session.send(b"MAIL FROM:<s@remote.example> SIZE=200\r\nRCPT TO:<bob@example.com>\r\n")
        self.assertEqual(replies, ["250 2.1.0 Ok", OVER])

    def test_end_of_data_single_recipient_552(self) -> None:
        self.quota.used["bob@example.com"] = Usage(990, 1)
        replies = self.session.send(b"MAIL FROM:<s@remote.example>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n"
                                    + b"x" * 100 + b"\r\n.\r\n")
        self.assertEqual(replies[-1], OVER)
        self.assertEqual(self.store.delivered, [])

    def test_end_of_data_some_recipients_over_452_nothing_delivered(self) -> None:
        """SMTP has one reply: mail that fits only some recipients is deferred as a whole, none dropped."""
        self.quota.used["bob@example.com"] = Usage(990, 1)
        replies = self.session.send(b"MAIL FROM:<s@remote.example>\r\nRCPT TO:<alice@example.com>\r\n"
                                    b"RCPT TO:<bob@example.com>\r\nDATA\r\n" + b"x" * 100 + b"\r\n.\r\n")
        self.assertEqual(replies[-1], "452 4.2.2 Mailbox full: some recipients are over quota, try again later")
        self.assertEqual(self.store.delivered, [])

    def test_fits_delivered_and_warning_asked(self) -> None:
        replies = self.session.send(b"MAIL FROM:<s@remote.example>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n"
                                    b"small\r\n.\r\n")
        self.assertTrue(replies[-1].startswith("250 2.0.0 Ok: queued as"), replies)
        self.assertEqual([user for user, _, _ in self.quota.warned], ["bob@example.com"])


class LocalSubmissionQuotaTests(SynchronousTestCase):
    def test_sendmail_delivers_to_those_it_fits_and_reports_the_full_mailbox(self) -> None:
        """Local submission (pickup) is reported per recipient, like LMTP: no 452 loop in the maildrop."""
        from mailserver.delivery.inject import Injector

        store, quota = MemoryStore(), MemoryQuota()
        quota.limits["bob@example.com"] = QuotaLimits(storage=1000)
        quota.used["bob@example.com"] = Usage(990, 1)
        injector = Injector(build_core(MemoryReactorClock(), store=store, quota=quota))
        result = self.successResultOf(injector.inject_reporting(
            "root@mx.example.com", ["alice@example.com", "bob@example.com"], b"Subject: x\n\n" + b"y" * 100 + b"\n"))
        self.assertEqual(result.delivered, ("alice@example.com",))
        [(who, error)] = result.refused
        self.assertEqual((who, error.code, error.enhanced), ("bob@example.com", 552, "5.2.2"))
        self.assertEqual([maildir for maildir, _ in store.delivered], ["/mail/example.com/alice"])
