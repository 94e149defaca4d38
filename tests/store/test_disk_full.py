"""
Named regression tests for a full disk (issue "Hardening", issue 13): a
failed write leaves UIDVALIDITY, the uidlist and the lock as they were, a
lock left behind is recognised as stale, and APPEND/COPY never answer NO
for a message that stays stored.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

from mailserver.store import index as ix
from mailserver.store import uidlist as u
from mailserver.store.folders import ensure_maildir
from tests.diskfull import DiskFull
from tests.store.test_index import Describer, deliver


def read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def messages(folder: str) -> list[str]:
    return sorted(os.listdir(os.path.join(folder, "new")) + os.listdir(os.path.join(folder, "cur")))


class DiskFullIndexTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.root = os.path.abspath(self.mktemp())
        ensure_maildir(self.root)
        self.describe = Describer()
        self.now = [2_000_000_000.0]  # directory mtimes are old: the index trusts them
        self.uidlist = os.path.join(self.root, u.FILE_NAME)
        self.lock = self.uidlist + u.LOCK_SUFFIX
        self.counter = os.path.join(self.root, u.UIDVALIDITY_FILE)

    def index(self) -> ix.FolderIndex:
        return ix.FolderIndex(self.root, self.root, self.describe, self.describe.version, clock=lambda: self.now[0])

    def test_regression_enospc_leaves_uidlist_and_uidvalidity_unchanged(self) -> None:
        index = self.index()
        for n in range(3):
            deliver(self.root, b"Subject: %d\n\nx\n" % n, n)
        before = index.refresh()
        on_disk = read(self.uidlist)
        counter = read(self.counter)
        for n in range(3, 36):
            deliver(self.root, b"Subject: %d\n\nx\n" % n, n)
        disk = DiskFull("dovecot-uidlist").install(self)
        self.assertRaises(OSError, index.refresh)
        self.assertTrue(disk.failures)
        self.assertEqual(read(self.uidlist), on_disk)
        self.assertEqual(read(self.counter), counter)
        self.assertFalse(os.path.exists(self.lock))
        self.assertEqual([n for n in os.listdir(self.root) if n.endswith(".tmp")], [])
        disk.full = False
        after = index.refresh()
        self.assertEqual(after.uidvalidity, before.uidvalidity)
        self.assertEqual(len(after.records), 36)

    def test_regression_select_after_enospc_reports_all_messages(self) -> None:
        """
        A refresh that failed to assign UIDs marked the directories as read:
        until their mtimes changed (minutes) every SELECT saw the empty
        snapshot of before, with UIDVALIDITY 0.
        """
        for n in range(36):
            deliver(self.root, b"Subject: %d\n\nx\n" % n, n)
        index = self.index()
        disk = DiskFull("dovecot-uidlist").install(self)
        self.assertRaises(OSError, index.refresh)
        disk.full = False
        snap = index.refresh()
        self.assertEqual(len(snap.records), 36)
        self.assertTrue(snap.uidvalidity)

    def test_regression_first_uidlist_write_failure_keeps_uidvalidity(self) -> None:
        """The UIDVALIDITY allocated for a first uidlist that could not be written is the one used later."""
        for n in range(3):
            deliver(self.root, b"Subject: %d\n\nx\n" % n, n)
        index = self.index()
        disk = DiskFull(os.sep + "." + u.FILE_NAME).install(self)  # the uidlist's temp file only
        self.assertRaises(OSError, index.refresh)
        self.assertIsNone(read(self.uidlist))
        allocated = read(self.counter)
        disk.full = False
        snap = index.refresh()
        self.assertEqual(read(self.counter), allocated)
        self.assertEqual(b"%d\n" % snap.uidvalidity, allocated)

    def test_regression_append_enospc_stores_nothing(self) -> None:
        index = self.index()
        deliver(self.root, b"Subject: old\n\nx\n", 0)
        first = index.refresh()
        disk = DiskFull("dovecot-uidlist").install(self)
        self.assertRaises(OSError, index.append, b"Subject: new\n\nbody\n", [], None)
        self.assertEqual(len(messages(self.root)), 1)
        self.assertEqual(os.listdir(os.path.join(self.root, "tmp")), [])
        self.assertFalse(os.path.exists(self.lock))
        disk.full = False
        uidvalidity, uid = index.append(b"Subject: new\n\nbody\n", [], None)
        self.assertEqual(uidvalidity, first.uidvalidity)
        self.assertEqual(len(messages(self.root)), 2)
        self.assertEqual(len(index.refresh(force=True).records), 2)

    def test_regression_append_message_write_enospc_leaves_no_partial_file(self) -> None:
        index = self.index()
        index.refresh()
        DiskFull(os.sep + "tmp" + os.sep).install(self)
        self.assertRaises(OSError, index.append, b"Subject: new\n\nbody\n", [], None)
        self.assertEqual(os.listdir(os.path.join(self.root, "tmp")), [])
        self.assertEqual(messages(self.root), [])

    def test_regression_copy_and_move_enospc_leave_folders_unchanged(self) -> None:
        target_path = os.path.join(self.root, ".Archive")
        ensure_maildir(target_path)
        deliver(self.root, b"Subject: a\n\nx\n", 1)
        deliver(self.root, b"Subject: b\n\nx\n", 2)
        source = self.index()
        target = ix.FolderIndex(target_path, self.root, self.describe, self.describe.version, clock=lambda: self.now[0])
        uids = [r.uid for r in source.refresh().records]
        target.refresh()
        before_source, before_target = messages(self.root), messages(target_path)
        disk = DiskFull(os.path.join(".Archive", "." + u.FILE_NAME)).install(self)  # the uidlist, not its lock
        for move in (False, True):
            self.assertRaises(OSError, ix.transfer, source, uids, target, move)
            self.assertEqual(messages(self.root), before_source)
            self.assertEqual(messages(target_path), before_target)
        disk.full = False
        self.assertEqual(len(ix.transfer(source, uids, target, True)), 2)
        self.assertEqual(len(messages(target_path)), 2)


class StaleLockTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.root = os.path.abspath(self.mktemp())
        os.makedirs(self.root)
        self.slept: list[float] = []
        self.lock = os.path.join(self.root, u.FILE_NAME + u.LOCK_SUFFIX)

    def make(self) -> u.UidList:
        return u.UidList(self.root, sleep=self.slept.append, timeout=0.0)

    def write_lock(self, pid: int, host: str | None = None) -> None:
        with open(self.lock, "w") as f:
            f.write(f"{pid}:{host or socket.gethostname()}\n")

    def test_regression_lock_released_when_its_write_fails(self) -> None:
        """ENOSPC while writing the lock's pid left an empty lock: SELECT then hung 30 s."""
        disk = DiskFull(u.LOCK_SUFFIX).install(self)
        ul = self.make()
        self.assertRaises(OSError, ul.sync, ["a"])
        self.assertFalse(os.path.exists(self.lock))
        disk.full = False
        self.assertEqual(ul.sync(["a"]).uids, {"a": 1})

    def test_regression_stale_lock_of_dead_process_broken(self) -> None:
        child = subprocess.Popen([sys.executable, "-c", "pass"])
        child.wait()
        self.write_lock(child.pid)
        self.assertEqual(self.make().sync(["a"]).uids, {"a": 1})
        self.assertEqual(self.slept, [])
        self.assertFalse(os.path.exists(self.lock))

    def test_regression_lock_left_by_this_process_broken(self) -> None:
        self.write_lock(os.getpid())
        self.assertEqual(self.make().sync(["a"]).uids, {"a": 1})
        self.assertEqual(self.slept, [])

    def test_live_holder_and_other_host_respected(self) -> None:
        self.write_lock(os.getppid())
        self.assertRaises(u.UidListError, self.make().sync, ["a"])
        self.write_lock(1, host="elsewhere.example")
        self.assertRaises(u.UidListError, self.make().sync, ["a"])
        self.assertTrue(os.path.exists(self.lock))

    def test_lock_held_in_this_process_respected(self) -> None:
        holder = self.make()
        with holder.locked():
            self.assertRaises(u.UidListError, self.make().sync, ["a"])
        self.assertFalse(os.path.exists(self.lock))

    def test_lock_being_written_by_this_process_is_not_stale(self) -> None:
        """Between the O_EXCL create and the pid write, another thread of ours must not break the lock."""
        first, second = u.DotLock(os.path.join(self.root, "x")), u.DotLock(os.path.join(self.root, "x"))
        real_write = os.write
        verdicts = []

        def write(fd: int, data: bytes) -> int:
            written = real_write(fd, data)
            verdicts.append(second._break_if_stale())  # pid now in the file
            return written

        self.patch(os, "write", write)
        first.acquire()
        self.assertEqual(verdicts, [False])
        self.assertTrue(os.path.exists(first.path))
        first.release()


class DiskFullModseqTests(SynchronousTestCase):
    def test_regression_modseq_write_failure_keeps_serving(self) -> None:
        """A full disk while recording a MODSEQ does not fail the refresh; the state is written once space is back."""
        from mailserver.store.modseq import FILE_NAME, ModseqState

        root = os.path.abspath(self.mktemp())
        ensure_maildir(root)
        describe = Describer()
        index = ix.FolderIndex(root, root, describe, describe.version, clock=lambda: 2_000_000_000.0)
        deliver(root, b"Subject: 1\n\nx\n", 1)
        first = index.refresh().highestmodseq
        deliver(root, b"Subject: 2\n\nx\n", 2)
        disk = DiskFull(FILE_NAME).install(self)
        snap = index.refresh()
        self.assertTrue(disk.failures)
        self.assertEqual(len(snap.records), 2)
        self.assertGreater(snap.highestmodseq, first)
        disk.full = False
        deliver(root, b"Subject: 3\n\nx\n", 3)
        again = index.refresh()
        reloaded = ModseqState(root)
        reloaded.update(again.uidvalidity, [(r.uid, r.letters) for r in again.records])
        self.assertEqual(reloaded.highest, again.highestmodseq)
        self.assertEqual(reloaded.modseqs, dict(again.modseqs))
