"""The end-of-DATA quota decision (L{mailserver.delivery.quota_gate.refused})."""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from mailserver.address import parse_mailbox
from mailserver.envelope import LocalMailbox, Recipient
from mailserver.delivery.quota_gate import refused
from mailserver.quota_rule import QuotaLimits, Usage
from tests.fakes import MemoryQuota


class CountingQuota(MemoryQuota):
    def __init__(self) -> None:
        super().__init__()
        self.reads: list[str] = []

    def usage(self, user, maildir):
        self.reads.append(maildir)
        return super().usage(user, maildir)


class RefusedTests(SynchronousTestCase):
    def test_each_maildir_read_once_per_message(self) -> None:
        """Two recipients reaching the same mailbox (user+ext, an alias): one usage read, both refused."""
        quota = CountingQuota()
        quota.limits["bob@example.com"] = QuotaLimits(storage=1000)
        quota.used["bob@example.com"] = Usage(990, 1)
        bob = LocalMailbox("bob@example.com", "/m/bob")
        recipients = [
            Recipient(parse_mailbox("bob@example.com"), (bob,)),
            Recipient(parse_mailbox("bob+x@example.com"), (bob,)),
        ]
        found, seen = self.successResultOf(Deferred.fromCoroutine(refused(quota, recipients, 100)))
        self.assertEqual(sorted(found), [0, 1])
        self.assertEqual(quota.reads, ["/m/bob"])
        self.assertEqual(seen, [(bob, Usage(990, 1))])
