"""IMAP QUOTA (RFC 9208) and NO [OVERQUOTA] for APPEND/COPY, over a real maildirsize file."""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from mailserver.quota_rule import QuotaLimits
from mailserver.store.quota import MAILDIRSIZE, MaildirQuota
from tests.imap.support import MemorySession, deliver
from tests.reactors import ThreadedClock


class IMAPQuotaTests(SynchronousTestCase):
    def setUp(self) -> None:
        reactor = ThreadedClock()
        reactor.advance(1_700_000_000)
        self.limits = {"alice": QuotaLimits(storage=4096, messages=3)}
        quota = MaildirQuota(reactor, lambda user: self.limits.get(user, QuotaLimits()), warning_percent=0)
        self.s = MemorySession(self, reactor=reactor, quota=quota)
        self.s.output()
        self.s.send(b"a LOGIN alice secret\r\n")

    def usage_file(self) -> str:
        with open(os.path.join(self.s.maildir(), MAILDIRSIZE)) as handle:
            return handle.read()

    def test_capabilities(self) -> None:
        out = self.s.send(b"c CAPABILITY\r\n")
        self.assertIn(b" QUOTA QUOTA=RES-STORAGE QUOTA=RES-MESSAGE", out)

    def test_getquotaroot_and_getquota(self) -> None:
        deliver(self.s.maildir(), b"x" * 1500)
        out = self.s.send(b"q GETQUOTAROOT INBOX\r\n")
        self.assertEqual(out, b'* QUOTAROOT INBOX ""\r\n* QUOTA "" (STORAGE 2 4 MESSAGE 1 3)\r\n'
                              b"q OK GETQUOTAROOT completed\r\n")
        self.assertEqual(self.s.send(b'g GETQUOTA ""\r\n'),
                         b'* QUOTA "" (STORAGE 2 4 MESSAGE 1 3)\r\ng OK GETQUOTA completed\r\n')
        self.assertEqual(self.s.send(b"g GETQUOTA other\r\n"), b"g NO [NONEXISTENT] No such quota root\r\n")
        self.assertEqual(self.s.send(b'x SETQUOTA "" (STORAGE 10)\r\n'),
                         b"x NO [NOPERM] Quotas are set by the administrator\r\n")

    def test_no_limits_no_root(self) -> None:
        self.limits.clear()
        self.assertEqual(self.s.send(b"q GETQUOTAROOT INBOX\r\n"), b"* QUOTAROOT INBOX\r\nq OK GETQUOTAROOT completed\r\n")

    def test_append_over_quota_refused_and_usage_kept(self) -> None:
        out = self.s.send(b"a1 APPEND INBOX {3000+}\r\n" + b"y" * 3000 + b"\r\n")
        self.assertIn(b"a1 OK [APPENDUID", out)
        out = self.s.send(b"a2 APPEND INBOX {2000+}\r\n" + b"z" * 2000 + b"\r\n")
        self.assertEqual(out, b"a2 NO [OVERQUOTA] Quota exceeded (mailbox for user is full)\r\n")
        self.assertEqual(self.usage_file(), "4096S,3C\n0 0\n3000 1\n")

    def test_copy_counts_messages_move_does_not_and_expunge_frees(self) -> None:
        for _ in range(2):
            deliver(self.s.maildir(), b"m" * 100)
        self.s.send(b"s SELECT INBOX\r\n")
        self.assertIn(b"c1 NO [OVERQUOTA]", self.s.send(b"c1 COPY 1:2 Drafts\r\n"))  # 2 + 2 > 3 messages
        self.assertIn(b"c2 OK [COPYUID", self.s.send(b"c2 COPY 1 Drafts\r\n"))
        self.assertIn(b"m1 OK", self.s.send(b"m1 MOVE 2 Trash\r\n"))
        self.assertIn(b"e1 OK", self.s.send(b"e1 STORE 1 +FLAGS (\\Deleted)\r\ne2 EXPUNGE\r\n"))
        lines = self.usage_file().splitlines()
        self.assertEqual(lines[1:], ["200 2", "100 1", "-100 -1"])
        self.assertIn(b"MESSAGE 2 3", self.s.send(b"q GETQUOTAROOT INBOX\r\n"))

    def test_regression_deleted_folder_frees_its_quota(self) -> None:
        """DELETE of a full folder is counted at once, not after Maildir++'s 15 minutes."""
        self.s.send(b"c CREATE Archive\r\n")
        for _ in range(3):
            deliver(os.path.join(self.s.maildir(), ".Archive"), b"a" * 100)
        self.assertIn(b"MESSAGE 3 3", self.s.send(b"q GETQUOTAROOT INBOX\r\n"))
        self.assertIn(b"a1 NO [OVERQUOTA]", self.s.send(b"a1 APPEND INBOX {2+}\r\nhi\r\n"))
        self.assertIn(b"d OK", self.s.send(b"d DELETE Archive\r\n"))
        self.assertIn(b"MESSAGE 0 3", self.s.send(b"q GETQUOTAROOT INBOX\r\n"))
        self.assertIn(b"a2 OK", self.s.send(b"a2 APPEND INBOX {2+}\r\nhi\r\n"))
