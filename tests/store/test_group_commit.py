"""Group commit: deliveries waiting for a writer share one fsync of new/."""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from mailserver.errors import MailError
from mailserver.store import maildir as maildir_module
from mailserver.store.maildir import MaildirStore
from tests.reactors import ThreadedClock


class GroupCommitTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.root = os.path.abspath(self.mktemp())
        os.makedirs(self.root)
        self.reactor = ThreadedClock(synchronous=False)
        self.store = MaildirStore(self.reactor, "mx.example.com")
        self.store.max_writers = 1
        self.synced: list[str] = []
        real = maildir_module.fsync_directory

        def record(path: str) -> None:
            self.synced.append(os.path.basename(path))
            real(path)

        self.patch(maildir_module, "fsync_directory", record)

    def test_waiting_deliveries_share_one_directory_fsync(self) -> None:
        box = os.path.join(self.root, "box")
        first = self.store.deliver(b"one\n", [(box, b"X: 1\n")])
        waiting = [self.store.deliver(b"%d\n" % n, [(box, b"X: n\n")]) for n in range(3)]
        self.assertEqual(len(self.reactor.pool.pending), 1)  # one writer, the rest wait
        self.reactor.pool.run_next()
        self.assertEqual(len(self.successResultOf(first)), 1)
        for d in waiting:
            self.assertNoResult(d)  # not acknowledged before their fsync
        self.synced.clear()
        self.reactor.pool.run_next()  # the three waiting ones, as one batch
        for d in waiting:
            self.assertEqual(len(self.successResultOf(d)), 1)
        self.assertEqual(self.synced.count("new"), 1)
        self.assertEqual(len(os.listdir(os.path.join(box, "new"))), 4)

    def test_one_failure_in_a_batch_fails_only_that_delivery(self) -> None:
        good = os.path.join(self.root, "good")
        bad = os.path.join(self.root, "bad")
        os.makedirs(bad)
        with open(os.path.join(bad, "new"), "w"):
            pass  # new/ is a file: that Maildir cannot be written
        blocker = self.store.deliver(b"x\n", [(good, b"")])
        ok = self.store.deliver(b"ok\n", [(good, b"")])
        broken = self.store.deliver(b"no\n", [(bad, b"")])
        self.reactor.pool.run_next()
        self.successResultOf(blocker)
        self.reactor.pool.run_next()
        self.assertEqual(len(self.successResultOf(ok)), 1)
        self.failureResultOf(broken, MailError)
        self.assertEqual(len(os.listdir(os.path.join(good, "new"))), 2)


class WriterCountTests(SynchronousTestCase):
    def test_regression_concurrent_deliveries_use_two_writers(self) -> None:
        """
        Ten deliveries into one Maildir at once: two writer batches run,
        the other eight wait and then share one batch (three new/ fsyncs
        in all, where four writers made five batches and five fsyncs).
        """
        root = os.path.abspath(self.mktemp())
        reactor = ThreadedClock(synchronous=False)
        store = MaildirStore(reactor, "mx.example.com")
        synced: list[str] = []
        real = maildir_module.fsync_directory

        def record(path: str) -> None:
            synced.append(path)
            real(path)

        self.patch(maildir_module, "fsync_directory", record)
        box = os.path.join(root, "box")
        os.makedirs(root)
        delivered = [store.deliver(b"%d\n" % n, [(box, b"")]) for n in range(10)]
        self.assertEqual(len(reactor.pool.pending), 2)
        synced.clear()  # ensure_maildir's fsyncs of the new Maildir
        for _ in range(3):
            reactor.pool.run_next()
        for d in delivered:
            self.assertEqual(len(self.successResultOf(d)), 1)
        self.assertEqual([os.path.basename(p) for p in synced].count("new"), 3)
