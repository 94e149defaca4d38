"""The per-folder UID list: format, persistence, dotlock, allocation order."""

from __future__ import annotations

import os
import threading

from twisted.trial.unittest import SynchronousTestCase

from mailserver.store import uidlist as u


class FormatTests(SynchronousTestCase):
    def test_round_trip(self) -> None:
        m = u.UidMap(1234, 10, {"b": 7, "a": 3})
        text = u.format_uidlist(m)
        self.assertEqual(text, "3 V1234 N10\n3 :a\n7 :b\n")
        parsed = u.parse_uidlist(text)
        self.assertEqual((parsed.uidvalidity, parsed.uidnext, parsed.uids), (1234, 10, {"a": 3, "b": 7}))

    def test_dovecot_extension_fields_and_info_ignored(self) -> None:
        text = "3 V5 N3 Gabcdef\n1 W1234 :one,S=10\n2 :two:2,S\n"
        parsed = u.parse_uidlist(text)
        self.assertEqual(parsed.uids, {"one,S=10": 1, "two": 2})

    def test_uidnext_never_below_highest_uid(self) -> None:
        parsed = u.parse_uidlist("3 V5 N2\n9 :x\n")
        self.assertEqual(parsed.uidnext, 10)

    def test_bad_header(self) -> None:
        self.assertIsNone(u.parse_uidlist(""))
        self.assertIsNone(u.parse_uidlist("7 V1 N1\n"))
        self.assertIsNone(u.parse_uidlist("3 N5\n"))

    def test_regression_uidlist_unicode_digits_ignored(self) -> None:
        # str.isdigit() accepts "²"; int() then raised ValueError (found while fuzzing).
        parsed = u.parse_uidlist("3 V5 N2\n² :x\n4 :y\n")
        self.assertEqual(parsed.uids, {"y": 4})
        self.assertIsNone(u.parse_uidlist("3 V² N2\n"))
        self.assertIsNone(u.parse_uidlist("1 ² 5\n"))

    def test_regression_delivery_order_unicode_digit_name(self) -> None:
        # A file named "1²2" in new/ made delivery_order raise ValueError.
        names = ["1²2", "10.M1", "9.M1"]
        self.assertEqual(sorted(names, key=u.delivery_order), ["1²2", "9.M1", "10.M1"])

    def test_version_1(self) -> None:
        parsed = u.parse_uidlist("1 77 5\n3 name\n")
        self.assertEqual((parsed.uidvalidity, parsed.uidnext, parsed.uids), (77, 5, {"name": 3}))


class UidListTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.root = self.mktemp()
        os.makedirs(self.root)
        self.now = [1_700_000_000.0]

    def make(self, **kw) -> u.UidList:
        return u.UidList(self.root, clock=lambda: self.now[0], **kw)

    def test_assigns_in_order_and_persists(self) -> None:
        ul = self.make()
        m = ul.sync(["c", "a", "b"], first=["c"])
        self.assertEqual(m.uids, {"c": 1, "a": 2, "b": 3})
        self.assertEqual(m.uidvalidity, 1_700_000_000)
        self.assertEqual(m.uidnext, 4)
        # a new object (a restart) reads the same
        again = self.make().current()
        self.assertEqual((again.uidvalidity, again.uidnext, again.uids), (m.uidvalidity, 4, m.uids))

    def test_uids_never_reused(self) -> None:
        ul = self.make()
        ul.sync(["a", "b"])
        m = ul.sync(["b", "c"])  # a expunged, c new
        self.assertEqual(m.uids, {"b": 2, "c": 3})
        m = ul.sync(["c", "a"])  # "a" coming back is a new message
        self.assertEqual(m.uids["a"], 4)

    def test_two_instances_never_share_a_uid(self) -> None:
        first, second = self.make(), self.make()
        a = first.sync(["x"])
        b = second.sync(["x", "y"])
        self.assertEqual(b.uids, {"x": a.uids["x"], "y": 2})
        c = first.sync(["x", "y", "z"])
        self.assertEqual(c.uids, {"x": 1, "y": 2, "z": 3})

    def test_no_write_when_nothing_new(self) -> None:
        ul = self.make()
        ul.sync(["a"])
        stamp = os.stat(ul.path).st_ino
        ul.sync(["a"])
        self.assertEqual(os.stat(ul.path).st_ino, stamp)

    def test_lock_file_removed_after_use(self) -> None:
        ul = self.make()
        ul.sync(["a"])
        self.assertFalse(os.path.exists(ul.path + ".lock"))
        self.assertEqual(
            sorted(os.listdir(self.root)), sorted(["dovecot-uidlist", "dovecot-uidvalidity"])
        )

    def test_held_lock_times_out(self) -> None:
        with open(os.path.join(self.root, "dovecot-uidlist.lock"), "w"):
            pass
        slept = []

        def sleep(seconds: float) -> None:
            slept.append(seconds)
            self.now[0] += seconds

        os.utime(os.path.join(self.root, "dovecot-uidlist.lock"), (self.now[0], self.now[0]))
        ul = self.make(sleep=sleep, timeout=1.0)
        self.assertRaises(u.UidListError, ul.sync, ["a"])
        self.assertTrue(slept)
        self.assertFalse(os.path.exists(ul.path))

    def test_stale_lock_broken(self) -> None:
        lock = os.path.join(self.root, "dovecot-uidlist.lock")
        with open(lock, "w"):
            pass
        old = self.now[0] - u.STALE_AFTER - 1
        os.utime(lock, (old, old))
        m = self.make().sync(["a"])
        self.assertEqual(m.uids, {"a": 1})
        self.assertFalse(os.path.exists(lock))

    def test_lock_excludes_other_threads(self) -> None:
        ul = self.make()
        other = self.make()
        order = []
        with ul.locked():
            t = threading.Thread(target=lambda: order.append(other.sync(["late"]).uids["late"]))
            t.start()
            t.join(0.2)
            self.assertEqual(order, [])  # waiting for our lock
            ul.assign_locked(["early"])
        t.join(5)
        self.assertEqual(order, [2])

    def test_two_processes_never_share_a_uid(self) -> None:
        import multiprocessing

        def worker(prefix: str) -> None:
            ul = u.UidList(self.root)
            names: list[str] = []
            for n in range(150):
                names.append(f"{prefix}{n}")
                ul.sync(names, forget_absent=False)

        context = multiprocessing.get_context("fork")
        workers = [context.Process(target=worker, args=(p,)) for p in ("a", "b")]
        for w in workers:
            w.start()
        for w in workers:
            w.join(60)
            self.assertEqual(w.exitcode, 0)
        final = u.UidList(self.root).current()
        self.assertEqual(len(final.uids), 300)
        self.assertEqual(sorted(final.uids.values()), list(range(1, 301)))

    def test_uidvalidity_increases_for_recreated_folders(self) -> None:
        a = u.allocate_uidvalidity(self.root, 100.0)
        b = u.allocate_uidvalidity(self.root, 100.0)
        self.assertEqual((a, b), (100, 101))

    def test_atomic_write_leaves_no_temp(self) -> None:
        path = os.path.join(self.root, "f")
        u.write_atomically(path, b"data")
        with open(path, "rb") as f:
            self.assertEqual(f.read(), b"data")
        self.assertEqual(os.listdir(self.root), ["f"])


class ListingRaceTests(SynchronousTestCase):
    def test_names_added_after_our_listing_are_kept(self) -> None:
        root = self.mktemp()
        os.makedirs(root)
        ours, theirs = u.UidList(root), u.UidList(root)
        ours.sync(["old"])
        before = ours.current().uidnext
        # we list the directory ("old", "mine"); meanwhile another process
        # assigns a UID to "theirs", which our listing did not see
        theirs.sync(["old", "theirs"])
        m = ours.sync(["old", "mine"], listed_before=before)
        self.assertEqual(m.uids, {"old": 1, "theirs": 2, "mine": 3})
        # an entry that was known when we listed and is gone now is dropped
        m = ours.sync(["theirs", "mine", "new"], listed_before=m.uidnext)
        self.assertEqual(m.uids, {"theirs": 2, "mine": 3, "new": 4})
