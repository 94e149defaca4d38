"""Tests for mailserver.store.cleanup: crash leftovers in Maildir tmp/ directories."""

from __future__ import annotations

import os
import time

from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase, TestCase

from mailserver.store.cleanup import TMP_MAX_AGE, MaildirTmpCleaner, sweep, tmp_directories
from tests.reactors import ThreadedClock

def touch(path: str, when: float | None = None, data: bytes = b"") -> str:
    """Write C{path}; its atime and mtime set to C{when} (its ctime is always now)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)
    if when is not None:
        os.utime(path, (when, when))
    return path


class SweepTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.root = os.path.abspath(self.mktemp())
        self.maildir = os.path.join(self.root, "example.com", "bob")
        for sub in ("tmp", "new", "cur", ".Sent/tmp", ".Sent/cur", "..deleted.x/tmp"):
            os.makedirs(os.path.join(self.maildir, sub))
        self.later = time.time() + 2 * TMP_MAX_AGE  # the sweep's "now": files written now are 72 hours old

    def test_regression_maildir_tmp_leftovers_removed_after_36_hours(self) -> None:
        """Issue 16 item 5: old tmp/ files (a 0-byte one too) go, in INBOX and folders; new/ and young files stay."""
        old = [
            touch(os.path.join(self.maildir, "tmp", "1.M1.host")),
            touch(os.path.join(self.maildir, "tmp", "2.M2.host"), data=b"half a message"),
            touch(os.path.join(self.maildir, ".Sent", "tmp", "3.M3.host")),
        ]
        keep = [
            touch(os.path.join(self.maildir, "tmp", "4.M4.host"), self.later - TMP_MAX_AGE + 60),
            touch(os.path.join(self.maildir, "new", "5.M5.host")),
            touch(os.path.join(self.maildir, "..deleted.x", "tmp", "6")),
        ]
        self.assertEqual(sweep([self.maildir], time.time()), [])  # nothing is 36 hours old yet
        removed = sweep([self.maildir, self.maildir], self.later)
        self.assertEqual(sorted(p for p, _ in removed), sorted(old))
        for path in old:
            self.assertFalse(os.path.exists(path))
        for path in keep:
            self.assertTrue(os.path.exists(path), path)

    def test_bounded(self) -> None:
        for index in range(5):
            touch(os.path.join(self.maildir, "tmp", f"f{index}"))
        self.assertEqual(len(sweep([self.maildir], self.later, max_examined=3)), 3)
        self.assertEqual(len(sweep([self.maildir], self.later)), 2)

    def test_missing_maildir_and_folders(self) -> None:
        self.assertEqual(sweep([os.path.join(self.root, "nobody")], self.later), [])
        self.assertEqual(
            list(tmp_directories(self.maildir)),
            [os.path.join(self.maildir, "tmp"), os.path.join(self.maildir, ".Sent", "tmp")],
        )


class CleanerServiceTests(SynchronousTestCase):
    def test_sweeps_at_start_and_every_interval_logging_each_removal(self) -> None:
        root = os.path.abspath(self.mktemp())
        maildir = os.path.join(root, "bob")
        clock = ThreadedClock()
        clock.advance(time.time() + 2 * TMP_MAX_AGE)  # files written now are 72 hours old on this clock
        cleaner = MaildirTmpCleaner(lambda: [maildir], clock, interval=100, start_delay=5)
        touch(os.path.join(maildir, "tmp", "a"))
        with capturedLogs() as events:
            cleaner.startService()
            clock.advance(5)
            self.assertFalse(os.path.exists(os.path.join(maildir, "tmp", "a")))
            touch(os.path.join(maildir, "tmp", "b"))
            clock.advance(100)
            self.assertFalse(os.path.exists(os.path.join(maildir, "tmp", "b")))
        paths = [e["path"] for e in events if "crash leftover" in e.get("log_format", "")]
        self.assertEqual(paths, [os.path.join(maildir, "tmp", "a"), os.path.join(maildir, "tmp", "b")])
        cleaner.stopService()
        self.assertEqual(clock.getDelayedCalls(), [])


class ServiceWiringTests(TestCase):
    def test_daemon_sweeps_every_users_maildir(self):
        from tests.harness import RunningServer

        server = RunningServer(self, users={"alice@example.com": "a", "harry": "h"})
        [cleaner] = [s for s in server.service if isinstance(s, MaildirTmpCleaner)]
        base = server.config.virtual_mailbox_base
        self.assertEqual(
            sorted(cleaner.maildirs()),
            sorted([
                os.path.join(base, "example.com", "alice"),
                os.path.join(base, "harry"),
                *(os.path.join(base, domain, "postmaster") for domain in server.service.server.local_domains),
            ]),
        )
