"""
Per-message work skipped when it cannot matter (issue 15): quota reads for
unlimited mailboxes, inbound mail authentication for trusted clients, the
Deferred machinery of MAIL and RCPT commands that never wait.
"""

from __future__ import annotations

import ipaddress

from twisted.internet.defer import inlineCallbacks, succeed
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from mailserver import quota_rule
from mailserver.delivery.filters import FilterResult, skips
from mailserver.delivery import trusted_origin as module
from mailserver.delivery.trusted_origin import TrustedOrigin
from mailserver.envelope import Client
from mailserver.quota_rule import LimitsByRecord, QuotaLimits, Usage
from mailserver.smtp import coroutines
from mailserver.smtp.factory import SMTPFactory
from mailserver.smtp.server import SMTPPolicy
from mailserver.tables.passwd import UserRecord
from tests.fakes import MemoryQuota, MemoryStore, anonymous_portal, build_core
from tests.harness import RunningServer, write_users
from tests.smtp.test_server import Session

MESSAGE = b"MAIL FROM:<s@remote.example>\r\nRCPT TO:<alice@example.com>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\nx\r\n.\r\n"


def calls(testcase: SynchronousTestCase, where: object, name: str) -> list[tuple]:
    """Patch C{where.name} to record the arguments of each call (and still do its work); the record."""
    real, seen = getattr(where, name), []

    def recording(*args: object) -> object:
        seen.append(args)
        return real(*args)

    testcase.patch(where, name, recording)
    return seen


class AskedQuota(MemoryQuota):
    """Records the mailboxes whose usage was asked (its check asks it too)."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[str] = []

    def usage(self, user, maildir):
        self.asked.append(user)
        return super().usage(user, maildir)


class Filter:
    """An end-of-DATA filter and MAIL FROM check for untrusted clients only, counting its calls."""

    name = "counting"
    untrusted_only = True

    def __init__(self) -> None:
        self.calls = 0

    @staticmethod
    def is_trusted(client: Client) -> bool:
        return client.ip.startswith("10.")

    def filter(self, envelope, message):
        self.calls += 1
        return succeed(FilterResult(message))

    async def check(self, envelope) -> None:
        self.calls += 1


class FastPathTests(SynchronousTestCase):
    def setUp(self) -> None:
        clock = MemoryReactorClock()
        self.store = MemoryStore()
        self.quota = AskedQuota()
        self.filter = Filter()
        self.core = build_core(clock, store=self.store, quota=self.quota, filters=[self.filter],
                               sender_checks=[self.filter])
        self.factory = SMTPFactory(anonymous_portal(self.core), SMTPPolicy(hostname="mx.example.com", banner="mx ESMTP"), clock)

    def session(self, ip: str = "192.0.2.1") -> Session:
        session = Session(self.factory, ip)
        session.send(b"EHLO c.example\r\n")
        return session

    def test_regression_unlimited_mailboxes_cost_no_quota_read(self) -> None:
        """Only limited mailboxes are asked about, at RCPT and at end of DATA; the outcome is unchanged."""
        replies = self.session().send(MESSAGE)
        self.assertTrue(replies[-1].startswith("250 2.0.0 Ok: queued as"), replies)
        self.assertEqual(self.quota.asked, [])
        self.quota.limits["bob@example.com"] = QuotaLimits(storage=1000)
        replies = self.session().send(MESSAGE)
        self.assertTrue(replies[-1].startswith("250 2.0.0 Ok: queued as"), replies)
        self.assertEqual(self.quota.asked, ["bob@example.com", "bob@example.com"])  # RCPT check, DATA read
        self.quota.used["bob@example.com"] = Usage(1000, 1)
        self.assertEqual(self.session().send(MESSAGE)[2], "552 5.2.2 <bob@example.com>: Mailbox full, over quota")

    def test_regression_untrusted_only_steps_skipped_for_trusted_clients(self) -> None:
        """A step marked C{untrusted_only} is not called for a client its C{is_trusted} vouches for."""
        self.session("10.0.0.1").send(MESSAGE)
        self.assertEqual(self.filter.calls, 0)
        self.session("192.0.2.1").send(MESSAGE)
        self.assertEqual(self.filter.calls, 2)  # MAIL FROM check and end-of-DATA filter
        self.assertEqual(len(self.store.delivered), 4)  # two messages, two copies each

    def test_skips(self) -> None:
        trusted, outside = Client(ip="10.1.1.1"), Client(ip="192.0.2.1")
        self.assertTrue(skips(self.filter, trusted))
        self.assertFalse(skips(self.filter, outside))
        self.assertFalse(skips(object(), trusted))  # no declaration: always run

    def test_regression_mail_and_rcpt_make_no_deferred_when_nothing_waits(self) -> None:
        """MAIL and RCPT answered by in-memory stages run their coroutines to the end at once."""
        resumed = calls(self, coroutines, "_resume")
        session = self.session()
        replies = session.send(b"MAIL FROM:<s@remote.example>\r\nRCPT TO:<alice@example.com>\r\n"
                               b"RCPT TO:<nobody@example.com>\r\n")
        self.assertEqual(replies[:2], ["250 2.1.0 Ok", "250 2.1.5 Ok"])
        self.assertTrue(replies[2].startswith("550 5.1.1"), replies)
        self.assertEqual(resumed, [])


class TrustedOriginTests(SynchronousTestCase):
    def test_answers_remembered_per_address(self) -> None:
        origin = TrustedOrigin((ipaddress.ip_network("10.0.0.0/8"),))
        asked: list[str] = []

        def in_networks(ip, networks):
            asked.append(ip)
            return ip.startswith("10.")

        self.patch(module, "in_networks", in_networks)
        answers = [origin(Client(ip=ip)) for ip in ("10.0.0.1", "10.0.0.1", "192.0.2.1", "192.0.2.1")]
        self.assertEqual(answers, [True, True, False, False])
        self.assertEqual(asked, ["10.0.0.1", "192.0.2.1"])
        self.assertTrue(origin(Client(ip="192.0.2.1", sasl_user="alice")))
        self.assertTrue(origin(Client(ip="192.0.2.1", trusted=True)))


class LimitsByRecordTests(SynchronousTestCase):
    def test_parsed_once_per_record_and_a_new_record_is_noticed(self) -> None:
        parsed = calls(self, quota_rule, "user_limits")
        limits = LimitsByRecord(QuotaLimits(storage=100))
        old = UserRecord("bob@example.com", "PLAIN", "x", extra={"userdb_quota_rule": "*:storage=1k"})
        self.assertEqual([limits("bob@example.com", old) for _ in range(3)], [QuotaLimits(storage=1024)] * 3)
        self.assertEqual(len(parsed), 1)
        new = UserRecord("bob@example.com", "PLAIN", "x", extra={"userdb_quota_rule": "*:messages=5"})
        self.assertEqual(limits("bob@example.com", new), QuotaLimits(messages=5))  # the reloaded file's record
        self.assertEqual(limits("nobody@example.com", None), QuotaLimits(storage=100))
        bad = UserRecord("carol@example.com", "PLAIN", "x", extra={"userdb_quota_rule": "lots"})
        self.assertRaises(ValueError, limits, "carol@example.com", bad)


class ReloadedLimitsTests(TestCase):
    @inlineCallbacks
    def test_regression_changed_quota_rule_noticed_at_passwd_reload(self):
        """Limits parsed once per passwd record still change when the passwd-file is edited and reloaded."""
        server = RunningServer(self, user_extra={"bob@example.com": "userdb_quota_rule=*:storage=1M"})
        parts = server.service.server
        self.assertEqual(parts.quota_limits("bob@example.com"), QuotaLimits(storage=1 << 20))
        self.assertEqual(parts.quota_limits("bob@example.com"), QuotaLimits(storage=1 << 20))
        write_users(server.directory, {"alice@example.com": "secret", "bob@example.com": "hunter2"},
                    {"bob@example.com": "userdb_quota_rule=*:messages=7"})
        swapped = yield parts.users.reload(force=True)
        self.assertTrue(swapped)
        self.assertEqual(parts.quota_limits("bob@example.com"), QuotaLimits(messages=7))
        self.assertEqual(parts.quota_limits("alice@example.com"), parts.config.quota_rule)
