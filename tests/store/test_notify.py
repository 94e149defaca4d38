"""MailboxNotifier: direct change events and the mtime poll for outside writers."""

from __future__ import annotations

import os

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from mailserver.store.folders import ensure_maildir
from mailserver.store import notify
from mailserver.store.notify import MailboxNotifier, folder_key


class NotifierTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.root = os.path.abspath(self.mktemp())
        ensure_maildir(self.root)
        self.notifier = MailboxNotifier(self.clock)
        self.events: list[str] = []

    def test_changed_calls_subscribers_of_that_folder(self) -> None:
        other = []
        self.notifier.subscribe(self.root, self.events.append)
        self.notifier.subscribe(self.root + "/.Sent", other.append)
        self.notifier.changed([self.root + "/"])
        self.assertEqual(self.events, [folder_key(self.root)])
        self.assertEqual(other, [])

    def test_regression_delivery_with_nobody_watching_costs_nothing(self) -> None:
        """With no subscriber (nobody in IDLE), a delivery's change touches no folder key and no stat."""
        stats: list[str] = []
        notifier = MailboxNotifier(self.clock, stat=lambda path: stats.append(path))
        self.patch(notify, "folder_key", lambda path: self.fail("folder_key called"))
        notifier.changed([self.root, self.root + "/.Junk"])
        self.assertEqual(stats, [])

    def test_unsubscribe(self) -> None:
        stop = self.notifier.subscribe(self.root, self.events.append)
        stop()
        stop()  # twice is harmless
        self.notifier.changed([self.root])
        self.assertEqual(self.events, [])
        self.assertEqual(self.notifier.watched, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_poll_catches_outside_writers(self) -> None:
        self.notifier.subscribe(self.root, self.events.append)
        self.clock.advance(1)
        self.assertEqual(self.events, [])
        # another program delivers: new/ mtime changes
        path = os.path.join(self.root, "new", "x")
        with open(path, "w"):
            pass
        st = os.stat(os.path.join(self.root, "new"))
        os.utime(os.path.join(self.root, "new"), ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000))
        self.clock.advance(1)
        self.assertEqual(self.events, [folder_key(self.root)])
        self.clock.advance(1)
        self.assertEqual(len(self.events), 1)

    def test_failing_listener_does_not_stop_others(self) -> None:
        def broken(key: str) -> None:
            raise RuntimeError("boom")

        self.notifier.subscribe(self.root, broken)
        self.notifier.subscribe(self.root, self.events.append)
        self.notifier.changed([self.root])
        self.assertEqual(len(self.events), 1)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_injected_stat(self) -> None:
        stamps = {"value": 1}
        notifier = MailboxNotifier(self.clock, interval=0.5, stat=lambda path: stamps["value"])
        notifier.subscribe("/nowhere", self.events.append)
        self.clock.advance(0.5)
        self.assertEqual(self.events, [])
        stamps["value"] = 2
        self.clock.advance(0.5)
        self.assertEqual(self.events, [folder_key("/nowhere")])
