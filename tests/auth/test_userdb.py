"""Tests for mailserver.auth.userdb: the passwd-file database and the in-memory one."""

from __future__ import annotations

import os

from twisted.logger import LogLevel, capturedLogs
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from mailserver.auth.userdb import FileUserDatabase, MemoryUserDatabase, load_passwd
from mailserver.errors import ConfigError
from mailserver.interfaces import IUserDatabase
from mailserver.tables.passwd import UserRecord
from tests.reactors import ThreadedClock

SHA = "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1"


def line(name: str, *rest: str) -> str:
    return ":".join([name, "{SHA512-CRYPT}" + SHA, *rest]) + "\n"


class FileUserDatabaseTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.path = self.mktemp()
        self.reactor = ThreadedClock()

    def write(self, text: str, mode: int = 0o600) -> None:
        """Replace the file as the user command does (new inode)."""
        tmp = self.path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, self.path)

    def test_lookup_users_domains(self) -> None:
        self.write("# users\n" + line("Alice@Example.COM", "1", "2", "", "/home/alice") + line("bob") + line("carol@example.org"))
        db = FileUserDatabase(self.path, self.reactor)
        self.assertTrue(verifyObject(IUserDatabase, db))
        alice = db.lookup("alice@example.com")
        self.assertEqual((alice.name, alice.uid, alice.gid, alice.home), ("Alice@example.com", 1, 2, "/home/alice"))
        self.assertIs(db.lookup("ALICE@EXAMPLE.COM"), alice)
        self.assertEqual(db.lookup("BOB").name, "bob")
        self.assertIsNone(db.lookup("alice"))
        self.assertIsNone(db.lookup("dave@example.com"))
        self.assertEqual([r.name for r in db.users()], ["Alice@example.com", "bob", "carol@example.org"])
        self.assertEqual(db.domains(), {"example.com", "example.org"})

    def test_regression_daemon_skips_and_logs_unusable_user_names(self) -> None:
        """Issue 17 item 3: path-like users are not served (no internal errors later), the rest are."""
        self.write(line("../x@example.test") + line("x@../../tmp") + line("x@example.test.") + line("bob@example.test"))
        with capturedLogs() as events:
            db = FileUserDatabase(self.path, self.reactor)
        self.assertEqual([r.name for r in db.users()], ["bob@example.test"])
        self.assertIsNone(db.lookup("x@example.test."))
        skipped = [e["problem"] for e in events if "entry skipped" in e.get("problem", "")]
        self.assertEqual(len(skipped), 3)
        self.assertTrue(skipped[0].startswith(f"{self.path}:1: warning:"))

    def test_missing_file_means_no_users(self) -> None:
        with capturedLogs() as events:
            db = FileUserDatabase(self.path, self.reactor)
        self.assertEqual((db.users(), db.domains(), db.lookup("x")), ([], set(), None))
        self.assertEqual([e["log_level"] for e in events], [LogLevel.warn])
        self.assertIn("does not exist", events[0]["log_format"])

    def test_errors_at_start_raise(self) -> None:
        self.write(line("alice") + "bob:{MD5}x\n")
        with self.assertRaises(ConfigError) as caught:
            FileUserDatabase(self.path, self.reactor)
        self.assertEqual([(p.file, p.line) for p in caught.exception.problems], [(self.path, 2)])

    def test_not_utf8_is_an_error(self) -> None:
        with open(self.path, "wb") as f:
            f.write(line("alice").encode() + b"b\xffb:{PLAIN}x\n")
        with self.assertRaises(ConfigError) as caught:
            load_passwd(self.path)
        self.assertEqual(caught.exception.problems[0].line, 2)

    def test_warnings_are_logged(self) -> None:
        self.write("plain@example.com:{PLAIN}secret\n", mode=0o644)
        with capturedLogs() as events:
            db = FileUserDatabase(self.path, self.reactor)
        self.assertEqual(db.lookup("plain@example.com").password, "secret")
        text = [e.get("problem") or e["log_format"] for e in events]
        self.assertTrue(any("plaintext password" in t for t in text), text)
        self.assertTrue(any("accessible by all users" in t for t in text), text)

    def test_change_is_seen_within_two_seconds(self) -> None:
        self.write(line("alice@example.com"))
        db = FileUserDatabase(self.path, self.reactor)
        db.startService()
        self.addCleanup(db.stopService)
        self.write(line("alice@example.com") + line("bob@example.com"))
        self.assertIsNone(db.lookup("bob@example.com"))
        self.reactor.advance(2.0)
        self.assertEqual(db.lookup("Bob@Example.com").name, "bob@example.com")
        # The parse ran in the reactor's thread pool.
        self.assertEqual([func for func, _ in self.reactor.pool.calls], [load_passwd])

    def test_deleted_user_disappears(self) -> None:
        self.write(line("alice") + line("bob"))
        db = FileUserDatabase(self.path, self.reactor)
        self.write(line("alice"))
        self.assertTrue(self.successResultOf(db.reload()))
        self.assertIsNone(db.lookup("bob"))
        self.assertIsNotNone(db.lookup("alice"))

    def test_bad_edit_keeps_previous_table(self) -> None:
        self.write(line("alice"))
        db = FileUserDatabase(self.path, self.reactor)
        self.write(line("alice") + line("bob") + "carol:\n")
        with capturedLogs() as events:
            self.assertFalse(self.successResultOf(db.reload()))
        self.assertIsNone(db.lookup("bob"))
        self.assertIsNotNone(db.lookup("alice"))
        errors = [e for e in events if e["log_level"] == LogLevel.error]
        self.assertEqual(len(errors), 1)
        self.assertIn(f"{self.path}:3", errors[0]["error"])
        # Once fixed, the new table is used.
        self.write(line("alice") + line("bob"))
        self.assertTrue(self.successResultOf(db.reload()))
        self.assertIsNotNone(db.lookup("bob"))

    def test_removed_file_means_no_users(self) -> None:
        self.write(line("alice"))
        db = FileUserDatabase(self.path, self.reactor)
        os.remove(self.path)
        self.assertTrue(self.successResultOf(db.reload()))
        self.assertEqual(db.users(), [])

    def test_stop_service_stops_polling(self) -> None:
        self.write(line("alice"))
        db = FileUserDatabase(self.path, self.reactor)
        db.startService()
        self.assertEqual(len(self.reactor.getDelayedCalls()), 1)
        db.stopService()
        self.assertEqual(self.reactor.getDelayedCalls(), [])


class MemoryUserDatabaseTests(SynchronousTestCase):
    def test_memory_database(self) -> None:
        alice = UserRecord("Alice@example.com", "PLAIN", "x")
        db = MemoryUserDatabase([alice, UserRecord("alice@EXAMPLE.com", "PLAIN", "y"), UserRecord("bob", "PLAIN", "z")])
        self.assertTrue(verifyObject(IUserDatabase, db))
        self.assertIs(db.lookup("ALICE@example.COM"), alice)
        self.assertEqual([r.name for r in db.users()], ["Alice@example.com", "bob"])
        self.assertEqual(db.domains(), {"example.com"})
        db.replace([UserRecord("carol@example.net", "PLAIN", "w")])
        self.assertIsNone(db.lookup("bob"))
        self.assertEqual(db.domains(), {"example.net"})


class SampleFileTests(SynchronousTestCase):
    """etc/passwd: no live account, and its commented example is right."""

    def test_sample(self) -> None:
        from mailserver.auth.schemes import verify
        from mailserver.tables.passwd import parse_passwd

        path = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "etc", "passwd")
        with open(path, encoding="utf-8") as f:
            text = f.read()
        self.assertEqual(parse_passwd(text, path), ({}, []))
        (example,) = [l[1:] for l in text.splitlines() if l.startswith("#alice@")]
        records, problems = parse_passwd(example, path)
        self.assertEqual(problems, [])
        alice = records["alice@example.com"]
        self.assertEqual(alice.home, "/var/mail/example.com/alice")
        self.assertTrue(verify(alice.scheme, alice.password, b"correct horse battery staple"))
