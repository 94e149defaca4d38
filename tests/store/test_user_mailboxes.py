"""UserMailboxes: a login's Maildir and Sieve home, and every Maildir for the cleaner."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from mailserver.store.user_mailboxes import UserMailboxes
from tests.fakes import FakeUser, StaticUsers


class UserMailboxesTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.users = StaticUsers("alice@example.com")
        self.users._users["carol"] = FakeUser("carol", "/home/carol")
        self.mailboxes = UserMailboxes(self.users, "Maildir/", "/mail")

    def test_maildir_of(self) -> None:
        self.assertEqual(self.mailboxes.maildir_of("alice@example.com"), "/mail/example.com/alice")
        self.assertEqual(self.mailboxes.maildir_of("carol"), "/home/carol/Maildir")

    def test_home_of(self) -> None:
        self.assertEqual(self.mailboxes.home_of("carol"), "/home/carol")
        self.assertEqual(self.mailboxes.home_of("alice@example.com"), "/mail/example.com/alice")

    def test_known_maildirs(self) -> None:
        self.assertEqual(
            self.mailboxes.known_maildirs({"example.com"}),
            ["/mail/example.com/alice", "/home/carol/Maildir", "/mail/example.com/postmaster"],
        )
