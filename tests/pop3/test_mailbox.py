"""Tests for mailserver.pop3.mailbox and .lock: the maildrop over a Maildir."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from twisted.mail import pop3
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from mailserver.pop3.lock import (
    LOCK_NAME,
    MaildropInUse,
    SessionRegistry,
    lock_maildir,
    unlock_maildir,
)
from mailserver.pop3.mailbox import (
    IMaildrop,
    MaildirMailbox,
    MessageVanished,
    pop3_mailbox_factory,
    scan_inbox,
)
from mailserver.store.reader import MaildirReader, seen_name
from tests.pop3.support import ManualThreads, deliver, files, make_maildir, synchronous

path = os.path.join


class SeenNameTests(SynchronousTestCase):
    def test_no_info_gets_one(self) -> None:
        self.assertEqual(seen_name("1.M2P3Q4.h,S=5"), "1.M2P3Q4.h,S=5:2,S")

    def test_flags_stay_sorted(self) -> None:
        self.assertEqual(seen_name("u:2,FR"), "u:2,FRS")
        self.assertEqual(seen_name("u:2,T"), "u:2,ST")
        self.assertEqual(seen_name("u:2,Fa"), "u:2,FSa")
        self.assertEqual(seen_name("u:2,"), "u:2,S")

    def test_already_seen_unchanged(self) -> None:
        self.assertEqual(seen_name("u:2,RS"), "u:2,RS")

    def test_unknown_info_left_alone(self) -> None:
        self.assertIsNone(seen_name("u:1,experimental"))


class ScanTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.maildir = make_maildir(self.mktemp())

    def test_new_and_cur_in_delivery_order(self) -> None:
        second = deliver(self.maildir, b"two\n", "cur", "2,S", when=2_000_000_000)
        first = deliver(self.maildir, b"one\n", "new", when=1_000_000_000)
        messages = scan_inbox(MaildirReader(self.maildir))
        self.assertEqual([os.path.basename(m.path) for m in messages], [first, second])
        self.assertEqual([m.size for m in messages], [5, 5])  # CRLF sizes

    def test_size_measured_without_w_field(self) -> None:
        deliver(self.maildir, b"a\nb\r\nc\n", with_vsize=False)
        [message] = scan_inbox(MaildirReader(self.maildir))
        self.assertEqual(message.size, 9)

    def test_uidl_is_unique_part(self) -> None:
        name = deliver(self.maildir, b"x\n", "cur", "2,FS")
        [message] = scan_inbox(MaildirReader(self.maildir))
        self.assertEqual(message.uidl, name.split(",")[0])

    def test_dotfiles_and_directories_ignored(self) -> None:
        deliver(self.maildir, b"x\n")
        open(os.path.join(self.maildir, "new", ".hidden"), "wb").close()
        os.mkdir(os.path.join(self.maildir, "cur", "subdir"))
        self.assertEqual(len(scan_inbox(MaildirReader(self.maildir))), 1)

    def test_same_message_in_new_and_cur_counted_once(self) -> None:
        name = deliver(self.maildir, b"x\n")
        os.link(path(self.maildir, "new", name), path(self.maildir, "cur", name + ":2,S"))
        [message] = scan_inbox(MaildirReader(self.maildir))
        self.assertIn(os.sep + "cur" + os.sep, message.path)


class DeliveryOrderTests(SynchronousTestCase):
    def test_counter_compares_as_a_number(self) -> None:
        """Deliveries of one reactor tick share sec and usec: Q9 comes before Q10, as in IMAP."""
        maildir = make_maildir(os.path.abspath(self.mktemp()))
        for counter in (10, 9, 100):
            name = f"1700000000.M250000P42Q{counter}.mx.example.com,S=2"
            with open(os.path.join(maildir, "new", name), "wb") as handle:
                handle.write(b"x\n")
        self.assertEqual([m.unique.split(".")[1] for m in scan_inbox(MaildirReader(maildir))],
                         ["M250000P42Q9", "M250000P42Q10", "M250000P42Q100"])


class MailboxTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.maildir = make_maildir(self.mktemp())
        self.registry = SessionRegistry()

    def mailbox(self, run=synchronous) -> MaildirMailbox:
        return MaildirMailbox(MaildirReader(self.maildir), self.registry, run)

    def opened(self) -> MaildirMailbox:
        mailbox = self.mailbox()
        self.successResultOf(mailbox.open())
        self.addCleanup(mailbox.logout)
        return mailbox

    def test_provides_interfaces(self) -> None:
        mailbox = self.opened()
        self.assertTrue(verifyObject(IMaildrop, mailbox))
        self.assertTrue(verifyObject(pop3.IMailbox, mailbox))

    def test_missing_maildir_is_created_empty(self) -> None:
        self.maildir = os.path.join(self.mktemp(), "Maildir")
        mailbox = self.opened()
        self.assertEqual(mailbox.listMessages(), [])
        self.assertEqual(sorted(os.listdir(self.maildir)), sorted(["cur", "new", "tmp", LOCK_NAME]))

    def test_list_uidl_delete(self) -> None:
        deliver(self.maildir, b"one\n")
        deliver(self.maildir, b"two two\n")
        mailbox = self.opened()
        self.assertEqual(mailbox.listMessages(), [5, 9])
        mailbox.deleteMessage(0)
        self.assertEqual(mailbox.listMessages(), [0, 9])
        self.assertEqual(mailbox.listMessages(0), 0)
        mailbox.undeleteMessages()
        self.assertEqual(mailbox.listMessages(), [5, 9])
        self.assertRaises(ValueError, mailbox.getUidl, 2)
        self.assertRaises(ValueError, mailbox.listMessages, -1)

    def test_get_message_is_opened_in_the_thread_runner(self) -> None:
        deliver(self.maildir, b"body\n")
        threads = ManualThreads()
        mailbox = self.mailbox(threads)
        d = mailbox.open()
        self.assertNoResult(d)
        threads.run_all()
        self.successResultOf(d)
        got = mailbox.getMessage(0)
        self.assertNoResult(got)
        self.assertEqual(threads.run_all(), 1)
        with self.successResultOf(got) as fp:
            self.assertEqual(fp.read(), b"body\n")
        mailbox.logout()

    def test_get_message_follows_a_moved_file(self) -> None:
        name = deliver(self.maildir, b"moved\n")
        mailbox = self.opened()
        os.rename(path(self.maildir, "new", name), path(self.maildir, "cur", name + ":2,F"))
        with self.successResultOf(mailbox.getMessage(0)) as fp:
            self.assertEqual(fp.read(), b"moved\n")

    def test_get_message_of_removed_file(self) -> None:
        name = deliver(self.maildir, b"gone\n")
        mailbox = self.opened()
        os.unlink(os.path.join(self.maildir, "new", name))
        self.failureResultOf(mailbox.getMessage(0), MessageVanished)

    def test_mark_seen_moves_to_cur(self) -> None:
        name = deliver(self.maildir, b"x\n")
        mailbox = self.opened()
        uidl = mailbox.getUidl(0)
        self.successResultOf(mailbox.markSeen(0))
        self.assertEqual(files(self.maildir, "new"), [])
        self.assertEqual(files(self.maildir, "cur"), [name + ":2,S"])
        self.assertEqual(mailbox.getUidl(0), uidl)
        # Twice is harmless.
        self.successResultOf(mailbox.markSeen(0))
        self.assertEqual(files(self.maildir, "cur"), [name + ":2,S"])

    def test_mark_seen_after_another_program_set_flags(self) -> None:
        name = deliver(self.maildir, b"x\n")
        mailbox = self.opened()
        os.rename(path(self.maildir, "new", name), path(self.maildir, "cur", name + ":2,RT"))
        self.successResultOf(mailbox.markSeen(0))
        self.assertEqual(files(self.maildir, "cur"), [name + ":2,RST"])

    def test_mark_seen_of_removed_file_is_not_an_error(self) -> None:
        name = deliver(self.maildir, b"x\n")
        mailbox = self.opened()
        os.unlink(os.path.join(self.maildir, "new", name))
        self.successResultOf(mailbox.markSeen(0))

    def test_sync_deletes_marked_wherever_they_are(self) -> None:
        a = deliver(self.maildir, b"a\n")
        b = deliver(self.maildir, b"b\n")
        c = deliver(self.maildir, b"c\n")
        mailbox = self.opened()
        for i in range(3):
            mailbox.deleteMessage(i)
        mailbox.undeleteMessages()
        mailbox.deleteMessage(0)
        mailbox.deleteMessage(1)
        os.rename(path(self.maildir, "new", a), path(self.maildir, "cur", a + ":2,S"))
        os.unlink(os.path.join(self.maildir, "new", b))  # already removed elsewhere
        self.assertEqual(self.successResultOf(mailbox.sync()), 1)
        self.assertEqual(files(self.maildir, "cur"), [])
        self.assertEqual(files(self.maildir, "new"), [c])

    def test_sync_subtracts_deleted_from_maildirsize(self) -> None:
        """POP3 DELE at QUIT: the quota file gets one negative line for what was removed."""
        deliver(self.maildir, b"aaaa\n")
        deliver(self.maildir, b"bb\n")
        with open(os.path.join(self.maildir, "maildirsize"), "w") as handle:
            handle.write("1000S,0C\n8 2\n")
        mailbox = self.opened()
        mailbox.deleteMessage(0)
        self.assertEqual(self.successResultOf(mailbox.sync()), 1)
        with open(os.path.join(self.maildir, "maildirsize")) as handle:
            self.assertEqual(handle.read(), "1000S,0C\n8 2\n-5 -1\n")

    def test_sync_without_deletions(self) -> None:
        deliver(self.maildir, b"a\n")
        self.assertEqual(self.successResultOf(self.opened().sync()), 0)

    def test_second_open_in_use_until_logout(self) -> None:
        first = self.mailbox()
        self.successResultOf(first.open())
        second = self.mailbox()
        self.failureResultOf(second.open(), MaildropInUse)
        second.logout()  # a refused session's logout must not free the holder's lock
        self.failureResultOf(self.mailbox().open(), MaildropInUse)
        first.logout()
        third = self.mailbox()
        self.successResultOf(third.open())
        third.logout()

    def test_lock_file_excludes_without_registry(self) -> None:
        first = self.opened()
        other = MaildirMailbox(MaildirReader(self.maildir), SessionRegistry(), synchronous)
        self.failureResultOf(other.open(), MaildropInUse)
        first.logout()
        self.successResultOf(other.open())
        other.logout()

    def test_logout_while_opening_releases_when_open_finishes(self) -> None:
        threads = ManualThreads()
        mailbox = self.mailbox(threads)
        d = mailbox.open()
        mailbox.logout()
        threads.run_all()
        self.successResultOf(d)
        self.assertFalse(self.registry.held(self.maildir))
        fd = lock_maildir(self.maildir)  # the file lock is free too
        unlock_maildir(fd)

    def test_logout_while_deleting_keeps_the_lock_until_done(self) -> None:
        name = deliver(self.maildir, b"x\n")
        threads = ManualThreads()
        mailbox = self.mailbox(threads)
        d = mailbox.open()
        threads.run_all()
        self.successResultOf(d)
        mailbox.deleteMessage(0)
        deleting = mailbox.sync()
        mailbox.logout()  # the connection dropped after QUIT
        self.assertTrue(self.registry.held(self.maildir))
        self.failureResultOf(self.mailbox().open(), MaildropInUse)
        threads.run_all()
        self.assertEqual(self.successResultOf(deleting), 1)
        self.assertNotIn(name, files(self.maildir, "new"))
        self.assertFalse(self.registry.held(self.maildir))

    def test_changes_are_announced(self) -> None:
        deliver(self.maildir, b"a\n")
        deliver(self.maildir, b"b\n")
        announced: list[list[str]] = []
        mailbox = MaildirMailbox(MaildirReader(self.maildir), self.registry, synchronous, announced.append)
        self.successResultOf(mailbox.open())
        self.addCleanup(mailbox.logout)
        self.successResultOf(mailbox.sync())  # nothing deleted
        self.assertEqual(announced, [])
        self.successResultOf(mailbox.markSeen(0))
        self.assertEqual(announced, [[self.maildir]])
        self.successResultOf(mailbox.markSeen(0))  # already seen: no change
        self.assertEqual(len(announced), 1)
        mailbox.deleteMessage(1)
        self.successResultOf(mailbox.sync())
        self.assertEqual(announced, [[self.maildir], [self.maildir]])

    def test_factory_builds_per_user_mailboxes_sharing_a_registry(self) -> None:
        base = self.mktemp()
        factory = pop3_mailbox_factory(lambda user: os.path.join(base, user), None, MaildirReader, synchronous)
        alice = factory("alice")
        self.assertEqual(alice.maildir, os.path.join(base, "alice"))
        self.successResultOf(alice.open())
        self.failureResultOf(factory("alice").open(), MaildropInUse)
        bob = factory("bob")
        self.successResultOf(bob.open())
        alice.logout()
        bob.logout()


class LockAcrossProcessesTests(SynchronousTestCase):
    def test_other_process_is_excluded(self) -> None:
        maildir = make_maildir(self.mktemp())
        script = textwrap.dedent(
            """
            import sys
            from mailserver.pop3.lock import MaildropInUse, lock_maildir
            try:
                lock_maildir(sys.argv[1])
            except MaildropInUse:
                print("in-use")
            else:
                print("locked")
            """
        )

        def other() -> str:
            return subprocess.run(
                [sys.executable, "-c", script, maildir], capture_output=True, text=True, check=True
            ).stdout.strip()

        fd = lock_maildir(maildir)
        try:
            self.assertEqual(other(), "in-use")
        finally:
            unlock_maildir(fd)
        self.assertEqual(other(), "locked")
