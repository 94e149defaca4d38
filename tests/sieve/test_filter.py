"""SieveFilter without a server: the outcome of one mailbox's delivery."""

from __future__ import annotations

import os

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from mailserver.envelope import LocalMailbox
from mailserver.delivery.sieve_filter import SieveFilter, write_memory
from mailserver.sieve.scripts import UserScripts
from mailserver.spooled import SpooledMessage
from mailserver.store.maildir import MaildirStore

#: The store that files Sieve copies into folders (fileinto, :flags, :create).
STORE = MaildirStore(Clock(), "mx.example.com")
MESSAGE = SpooledMessage(b"From: carol@remote.example\nTo: alice@example.com\nSubject: hi\n\nbody\n")


class FilterTests(SynchronousTestCase):
    def setUp(self):
        self.maildir = os.path.abspath(self.mktemp())
        os.makedirs(self.maildir)
        self.mailbox = LocalMailbox("alice@example.com", self.maildir)
        self.filter = SieveFilter(STORE, hostname="mx.example.com")

    def install(self, text: str) -> None:
        scripts = UserScripts(self.maildir)
        scripts.write("main", text.encode())
        scripts.set_active("main")

    def evaluate(self, now=1_800_000_000.0):
        return self.filter.evaluate(self.mailbox, "carol@remote.example", "alice@example.com", MESSAGE, True, now)

    def test_no_script_is_inbox(self):
        outcome = self.evaluate()
        self.assertEqual((outcome.copies, outcome.outgoing), ([(self.maildir, "")], []))

    def test_regression_vacation_parallel_deliveries_reply_once(self):
        """
        Two deliveries evaluated before either wrote the vacation memory (it
        is written after the reply is queued) both replied; the filter now
        remembers a decided reply at once.
        """
        self.install('require "vacation"; vacation "away";')
        first, second = self.evaluate(), self.evaluate()
        self.assertEqual(len(first.outgoing), 1)
        self.assertEqual(second.outgoing, [])
        write_memory(first.memory)
        self.assertEqual(self.evaluate().outgoing, [])
        self.assertEqual(len(self.evaluate(now=1_800_000_000.0 + 8 * 86400).outgoing), 1)

    def test_script_cached_per_version(self):
        self.install("keep;")
        self.evaluate()
        self.evaluate()
        self.assertEqual(self.filter.cache.compiled, 1)
        self.install("discard;  ")
        self.assertEqual(self.evaluate().copies, [])
        self.assertEqual(self.filter.cache.compiled, 2)

    def test_keywords_get_letters_of_the_folder(self):
        self.install('require ["imap4flags"]; addflag ["\\\\Seen", "$Label1", "\\\\Recent", "\\\\Nonsense"];')
        outcome = self.evaluate()
        self.assertEqual(outcome.copies, [(self.maildir, "Sa")])
        with open(os.path.join(self.maildir, "dovecot-keywords")) as handle:
            self.assertEqual(handle.read(), "0 $Label1\n")
        self.assertTrue(any("\\Nonsense" in event for event in outcome.events))

    def test_folder_name_outside_refused(self):
        self.install('require ["fileinto", "mailbox"]; fileinto :create "../../etc";')
        outcome = self.evaluate()
        self.assertEqual(outcome.copies, [(self.maildir, "")])
        self.assertFalse(os.path.exists(os.path.join(os.path.dirname(self.maildir), "etc")))


class HomeSafetyTests(SynchronousTestCase):
    def setUp(self):
        self.home = os.path.abspath(self.mktemp())
        os.makedirs(self.home)
        self.outside = os.path.abspath(self.mktemp())
        with open(self.outside, "w") as handle:
            handle.write("secret-token;\n")

    def test_active_link_outside_home_not_followed(self):
        os.symlink(self.outside, os.path.join(self.home, ".dovecot.sieve"))
        maildir = os.path.join(self.home, "Maildir")
        outcome = SieveFilter(STORE).evaluate(LocalMailbox("alice", maildir, self.home), "", "alice@example.com",
                                         MESSAGE, True, 0.0)
        self.assertEqual(outcome.copies, [(maildir, "")])
        with open(os.path.join(self.home, ".dovecot.sieve.log")) as handle:
            text = handle.read()
        self.assertIn("points outside", text)
        self.assertNotIn("secret-token", text)

    def test_log_link_not_followed(self):
        os.symlink(self.outside, os.path.join(self.home, ".dovecot.sieve.log"))
        self.assertRaises(OSError, UserScripts(self.home).log_error, "x")
        with open(self.outside) as handle:
            self.assertEqual(handle.read(), "secret-token;\n")

    def test_regression_log_rotation_does_not_follow_a_planted_tmp_link(self):
        """Rotating a full log wrote through C{.dovecot.sieve.log.tmp}, a name the user could plant."""
        from mailserver.sieve import scripts

        log = os.path.join(self.home, ".dovecot.sieve.log")
        with open(log, "wb") as handle:
            handle.write(b"old line\n" * (scripts.MAX_LOG // 9 + 1))
        os.symlink(self.outside, log + ".tmp")
        UserScripts(self.home).log_error("new error")
        with open(self.outside) as handle:
            self.assertEqual(handle.read(), "secret-token;\n")
        with open(log, "rb") as handle:
            rotated = handle.read()
        self.assertTrue(rotated.endswith(b" new error\n"))
        self.assertLess(len(rotated), scripts.MAX_LOG)
        self.assertEqual(os.stat(log).st_mode & 0o777, 0o600)


class RobustnessTests(SynchronousTestCase):
    def test_unexpected_error_keeps_message(self):
        """Whatever fails inside the filter, the copy goes to INBOX and the failure is logged."""
        maildir = os.path.abspath(self.mktemp())
        sieve_filter = SieveFilter(STORE)

        def broken(*args):
            raise RuntimeError("boom")

        sieve_filter._scripts = broken
        outcome = sieve_filter.evaluate(LocalMailbox("alice", maildir), "", "alice@example.com", MESSAGE, True, 0.0)
        self.assertEqual(outcome.copies, [(maildir, "")])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class FolderTests(SynchronousTestCase):
    def run_script(self, script: bytes) -> tuple[str, list]:
        """The Maildir of a user who never logged in, and the copies C{script} makes there."""
        maildir = os.path.abspath(self.mktemp())
        os.makedirs(maildir)
        scripts = UserScripts(maildir)
        scripts.write("main", script)
        scripts.set_active("main")
        outcome = SieveFilter(STORE).evaluate(LocalMailbox("alice", maildir), "", "alice@example.com", MESSAGE, True, 0.0)
        return maildir, outcome.copies

    def test_created_folder_is_subscribed(self):
        from mailserver.store.folders import Folders

        maildir, copies = self.run_script(b'require ["fileinto", "mailbox"]; fileinto :create "Lists/Twisted";')
        self.assertEqual(copies, [(os.path.join(maildir, ".Lists.Twisted"), "")])
        self.assertIn("Lists/Twisted", Folders(maildir).subscriptions())

    def test_regression_fileinto_junk_before_first_imap_login(self):
        """Plain C{fileinto "Junk"} (the usual sieve_before) files into Junk for a user who never logged in."""
        maildir, copies = self.run_script(b'require ["fileinto"]; fileinto "Junk";')
        self.assertEqual(copies, [(os.path.join(maildir, ".Junk"), "")])

    def test_plain_fileinto_missing_ordinary_folder_still_inbox(self):
        maildir, copies = self.run_script(b'require ["fileinto"]; fileinto "Lists";')
        self.assertEqual(copies, [(maildir, "")])
