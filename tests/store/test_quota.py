"""Quotas: rules, the Maildir++ maildirsize file, the store's appends, the warning notice."""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from mailserver.interfaces import IQuota
from mailserver.quota_rule import QuotaLimits, Usage, parse_quota_rule, user_limits
from mailserver.store.quota import (
    MAILDIRSIZE,
    MaildirQuota,
    add_usage_blocking,
    calculate_blocking,
    quota_root,
    read_usage_blocking,
)
from tests.store.maildir_harness import MESSAGE, PREFIX, DeliveryTestsMixin

LIMITS = QuotaLimits(storage=1000, messages=10)


class RuleTests(SynchronousTestCase):
    def test_dovecot_forms(self) -> None:
        self.assertEqual(parse_quota_rule("*:storage=1G"), QuotaLimits(storage=1 << 30))
        self.assertEqual(parse_quota_rule("*:storage=512M:messages=1000"), QuotaLimits(512 << 20, 1000))
        self.assertEqual(parse_quota_rule("*:bytes=100k"), QuotaLimits(storage=102400))
        self.assertEqual(parse_quota_rule("*:messages=5"), QuotaLimits(messages=5))
        self.assertEqual(parse_quota_rule("*:storage=1000"), QuotaLimits(storage=1000))
        self.assertEqual(parse_quota_rule(""), QuotaLimits())
        self.assertEqual(parse_quota_rule("none"), QuotaLimits())

    def test_bad_rules(self) -> None:
        for text in ("storage=1G", "INBOX:storage=1G", "*:storage=lots", "*:percent=3", "*:messages=-1"):
            self.assertRaises(ValueError, parse_quota_rule, text)

    def test_user_field_overrides_default(self) -> None:
        default = QuotaLimits(storage=100)
        self.assertEqual(user_limits(default, {}), default)
        self.assertEqual(user_limits(default, {"userdb_quota_rule": "*:storage=1M"}), QuotaLimits(storage=1 << 20))
        self.assertEqual(user_limits(default, {"quota_rule": "none"}), QuotaLimits())


class MaildirsizeTests(DeliveryTestsMixin, SynchronousTestCase):
    def size_file(self, box: str) -> str:
        with open(os.path.join(box, MAILDIRSIZE)) as handle:
            return handle.read()

    def test_recalculated_when_missing_then_appended_by_store(self) -> None:
        box = self.maildir("bob")
        self.deliver(MESSAGE, [(box, PREFIX)])
        one = len(PREFIX + MESSAGE)
        self.assertFalse(os.path.exists(os.path.join(box, MAILDIRSIZE)))  # no file without a quota
        self.assertEqual(read_usage_blocking(box, LIMITS, now=1700000000), Usage(one, 1))
        self.assertEqual(self.size_file(box), f"1000S,10C\n{one} 1\n")
        self.deliver(MESSAGE, [(box, PREFIX), (os.path.join(box, ".Junk"), PREFIX)])
        self.assertEqual(self.size_file(box), f"1000S,10C\n{one} 1\n{one} 1\n{one} 1\n")
        self.assertEqual(read_usage_blocking(box, LIMITS, now=1700000000), Usage(3 * one, 3))

    def test_recalculated_when_limits_change_or_too_large(self) -> None:
        box = self.maildir("bob")
        self.deliver(MESSAGE, [(box, PREFIX)])
        one = len(PREFIX + MESSAGE)
        read_usage_blocking(box, LIMITS, now=1700000000)
        with open(os.path.join(box, MAILDIRSIZE), "a") as handle:
            handle.write("99999 99\n")  # wrong: only a recalculation will notice
        self.assertEqual(read_usage_blocking(box, LIMITS, now=1700000000), Usage(one + 99999, 100))
        self.assertEqual(read_usage_blocking(box, QuotaLimits(storage=2000), now=1700000000), Usage(one, 1))
        with open(os.path.join(box, MAILDIRSIZE), "a") as handle:
            handle.write("1 0\n" * 3000)
        self.assertEqual(read_usage_blocking(box, QuotaLimits(storage=2000), now=1700000000), Usage(one, 1))

    def test_stale_file_saying_over_quota_recalculated(self) -> None:
        box = self.maildir("bob")
        self.deliver(MESSAGE, [(box, PREFIX)])
        one = len(PREFIX + MESSAGE)
        read_usage_blocking(box, LIMITS, now=1700000000)
        add_usage_blocking(box, 5000, 1)
        path = os.path.join(box, MAILDIRSIZE)
        os.utime(path, (1700000000, 1700000000))
        self.assertEqual(read_usage_blocking(box, LIMITS, now=1700000000 + 60), Usage(one + 5000, 2))
        self.assertEqual(read_usage_blocking(box, LIMITS, now=1700000000 + 16 * 60), Usage(one, 1))

    def test_regression_maildirsize_rewrite_is_durable(self) -> None:
        """
        The recalculated ``maildirsize`` goes through durable.replace_atomically
        (the one atomic-rewrite helper): written in tmp/, fsynced, renamed, and
        the Maildir directory fsynced (the hand-written rename fsynced no directory).
        """
        from mailserver import durable

        box = self.maildir("bob")
        self.deliver(MESSAGE, [(box, PREFIX)])
        synced: list[str] = []
        real = durable.fsync_directory

        def fsync_directory(path: str) -> None:
            synced.append(os.path.abspath(path))
            real(path)

        self.patch(durable, "fsync_directory", fsync_directory)
        read_usage_blocking(box, LIMITS, now=1700000000)
        self.assertIn(os.path.abspath(box), synced)
        self.assertEqual(os.listdir(os.path.join(box, "tmp")), [])
        self.assertEqual(oct(os.stat(os.path.join(box, MAILDIRSIZE)).st_mode & 0o777), oct(0o600))

    def test_expunge_lines_subtract(self) -> None:
        box = self.maildir("bob")
        self.deliver(MESSAGE, [(box, PREFIX)])
        one = len(PREFIX + MESSAGE)
        read_usage_blocking(box, LIMITS, now=1700000000)
        add_usage_blocking(box, -one, -1)
        self.assertEqual(read_usage_blocking(box, LIMITS, now=1700000000), Usage(0, 0))

    def test_calculation_counts_folders_and_cur(self) -> None:
        box = self.maildir("bob")
        self.deliver(MESSAGE, [(box, PREFIX), (os.path.join(box, ".Sent"), b"")])
        new = os.path.join(box, "new")
        [name] = os.listdir(new)
        os.rename(os.path.join(new, name), os.path.join(box, "cur", name + ":2,S"))
        self.assertEqual(calculate_blocking(box), Usage(len(PREFIX + MESSAGE) + len(MESSAGE), 2))

    def test_quota_root_of_folder(self) -> None:
        self.assertEqual(quota_root("/m/alice/Maildir/.Junk"), "/m/alice/Maildir")
        self.assertEqual(quota_root("/m/alice/Maildir/"), "/m/alice/Maildir")


class MaildirQuotaTests(DeliveryTestsMixin, SynchronousTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.limits = {"bob@example.com": QuotaLimits(storage=1000)}
        self.quota = MaildirQuota(self.reactor, lambda user: self.limits.get(user, QuotaLimits()), self.store,
                                  "mx.example.org", warning_percent=50)

    def test_provides_interface(self) -> None:
        self.assertTrue(verifyObject(IQuota, self.quota))

    def test_check(self) -> None:
        box = self.maildir("bob")
        self.assertIsNone(self.successResultOf(self.quota.check("bob@example.com", box, 1000)))
        error = self.successResultOf(self.quota.check("bob@example.com", box, 1001))
        self.assertEqual((error.code, error.enhanced), (552, "5.2.2"))
        self.assertIsNone(self.successResultOf(self.quota.check("alice@example.com", box, 10**9)))

    def test_rcpt_check_may_use_a_recent_read_end_of_data_reads_again(self) -> None:
        box = self.maildir("bob")
        self.deliver(b"x" * 100, [(box, b"")])
        self.assertEqual(self.successResultOf(self.quota.usage("bob@example.com", box))[0], Usage(100, 1))
        add_usage_blocking(box, 900, 1)  # another delivery meanwhile: now full
        self.assertIsNone(self.successResultOf(self.quota.check("bob@example.com", box, 1)))  # read 0 s ago
        self.assertEqual(self.successResultOf(self.quota.usage("bob@example.com", box))[0], Usage(1000, 2))
        self.assertIsNotNone(self.successResultOf(self.quota.check("bob@example.com", box, 1)))
        add_usage_blocking(box, -900, -1)
        self.reactor.advance(3)
        self.assertIsNone(self.successResultOf(self.quota.check("bob@example.com", box, 1)))  # old: read again

    def test_warning_only_when_crossing(self) -> None:
        box = self.maildir("bob")
        warn = self.quota.warn
        self.successResultOf(warn("bob@example.com", box, Usage(0, 0), 400))  # 0% -> 40%
        self.successResultOf(warn("bob@example.com", box, Usage(600, 2), 100))  # 60% -> 70%: past it already
        self.successResultOf(warn("alice@example.com", box, Usage(0, 0), 10**6))  # no limits
        self.assertFalse(os.path.exists(os.path.join(box, "new")))
        self.successResultOf(warn("bob@example.com", box, Usage(400, 1), 400))  # 40% -> 80%
        [notice] = os.listdir(os.path.join(box, "new"))
        with open(os.path.join(box, "new", notice), "rb") as handle:
            text = handle.read()
        self.assertIn(b"Subject: Your mailbox is 80% full\n", text)
        self.assertIn(b"From: Mail Delivery System <MAILER-DAEMON@mx.example.org>\n", text)
        self.assertIn(b"Auto-Submitted: auto-generated\n", text)


class PasswdFileTests(SynchronousTestCase):
    def test_bad_user_rule_is_a_warning_of_mailserver_check(self) -> None:
        from mailserver.tables.passwd import parse_passwd

        records, problems = parse_passwd(
            "bob@example.com:{BLF-CRYPT}$2y$05$abc::::::userdb_quota_rule=*:storage=lots\n"
            "carol@example.com:{BLF-CRYPT}$2y$05$abc::::::userdb_quota_rule=*:storage=1G\n", "passwd")
        self.assertEqual(len(records), 2)
        [problem] = problems
        self.assertEqual((problem.line, problem.severity), (1, "warning"))
        self.assertIn("userdb_quota_rule: bad quota size 'lots'", problem.message)
