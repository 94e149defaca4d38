"""The folder index: consistency with the directory, persistence, flag and file operations."""

from __future__ import annotations

import json
import os

from twisted.trial.unittest import SynchronousTestCase

from mailserver.store import index as ix
from mailserver.store.folders import ensure_maildir
from mailserver.store.names import make_name
from mailserver.store.summaries import JOURNAL, SNAPSHOT


class Describer:
    """Counts how often messages are parsed."""

    version = "test-1"

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, data: bytes) -> dict:
        self.calls += 1
        return {"size": len(data), "first": data.split(b"\r\n", 1)[0].decode("latin-1")}


def deliver(maildir: str, body: bytes, n: int, when: float = 1_700_000_000.0) -> str:
    """Write a message the way the delivery store does: tmp/, then rename into new/."""
    name = make_name(when + n, 4242, n, "mx.test", len(body))
    tmp = os.path.join(maildir, "tmp", name)
    with open(tmp, "wb") as f:
        f.write(body)
    os.utime(tmp, (when + n, when + n))
    os.rename(tmp, os.path.join(maildir, "new", name))
    return name


class IndexTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.root = os.path.abspath(self.mktemp())
        ensure_maildir(self.root)
        self.describe = Describer()
        self.now = [2_000_000_000.0]

    def index(self, path: str | None = None) -> ix.FolderIndex:
        return ix.FolderIndex(path or self.root, self.root, self.describe, self.describe.version, clock=lambda: self.now[0])

    def test_sees_deliveries_with_stable_uids(self) -> None:
        idx = self.index()
        self.assertEqual(idx.refresh().records, ())
        deliver(self.root, b"Subject: one\n\nx\n", 1)
        deliver(self.root, b"Subject: two\n\nyy\n", 2)
        snap = idx.refresh()
        self.assertEqual([r.uid for r in snap.records], [1, 2])
        self.assertEqual([r.summary["first"] for r in snap.records], ["Subject: one", "Subject: two"])
        self.assertEqual(snap.records[0].vsize, len(b"Subject: one\r\n\r\nx\r\n"))
        self.assertEqual(snap.records[0].mtime, 1_700_000_001.0)
        self.assertTrue(all(r.recent for r in snap.records))
        self.assertEqual(snap.uidnext, 3)

    def test_unchanged_directory_is_not_reread(self) -> None:
        deliver(self.root, b"a\n", 1)
        idx = self.index()
        idx.refresh()
        idx._suspect = False  # mtimes old enough to trust
        calls = self.describe.calls
        listings = []
        original = idx._list
        idx._list = lambda: listings.append(1) or original()
        idx.refresh()
        self.assertEqual(listings, [])
        self.assertEqual(self.describe.calls, calls)

    def test_recent_mtime_is_not_trusted(self) -> None:
        idx = self.index()
        self.now[0] = os.stat(os.path.join(self.root, "new")).st_mtime + 0.01
        idx.refresh()
        self.assertTrue(idx._suspect)

    def test_whole_second_mtimes_trusted_after_two_seconds(self) -> None:
        for sub in ("new", "cur"):
            os.utime(os.path.join(self.root, sub), (1_700_000_000, 1_700_000_000))
        idx = self.index()
        self.now[0] = 1_700_000_000.5
        idx.refresh()
        self.assertTrue(idx._suspect)
        self.now[0] = 1_700_000_002.5
        idx.refresh(force=True)
        self.assertFalse(idx._suspect)

    def test_regression_fine_mtimes_trusted_after_a_tick(self) -> None:
        """Sub-second mtimes are trusted after 50 ms, not 2 s: a change no longer makes every command re-list."""
        for sub in ("new", "cur"):
            os.utime(os.path.join(self.root, sub), ns=(1_700_000_000_123_456_789,) * 2)
        idx = self.index()
        self.now[0] = 1_700_000_000.5
        idx.refresh()
        self.assertFalse(idx._suspect)

    def test_regression_no_relisting_within_the_mtime_tick(self) -> None:
        """A fresh mtime is listed once per tick, not at every command of the tick; the first refresh after it lists again."""
        for sub in ("new", "cur"):
            os.utime(os.path.join(self.root, sub), ns=(1_700_000_000_000_000_001,) * 2)
        idx = self.index()
        self.now[0] = 1_700_000_000.01
        idx.refresh()
        self.assertTrue(idx._suspect)
        looks = []
        original = idx._names_unchanged
        idx._names_unchanged = lambda: looks.append(1) or original()
        idx.refresh()
        self.assertEqual(looks, [])
        self.now[0] = 1_700_000_000.2
        idx.refresh()
        self.assertEqual(looks, [1])
        self.assertFalse(idx._suspect)

    def test_regression_unchanged_names_skip_the_listing(self) -> None:
        """Re-checking a folder whose files are exactly our records compares two name sets, no per-name work."""
        deliver(self.root, b"a\n", 1)
        deliver(self.root, b"b\n", 2)
        idx = self.index()
        idx.refresh()
        idx.store([1], ["\\Seen"], 1)  # our own rename changes cur/'s mtime
        listings = []
        original = idx._list
        idx._list = lambda: listings.append(1) or original()
        before = idx.snapshot
        self.assertIs(idx.refresh(force=True), before)
        self.assertEqual(listings, [])
        # a file renamed by someone else is noticed
        cur = os.path.join(self.root, "cur")
        name = [n for n in os.listdir(cur) if n.endswith(":2,S")][0]
        os.rename(os.path.join(cur, name), os.path.join(cur, name[:-1] + "FS"))
        snap = idx.refresh(force=True)
        self.assertEqual(listings, [1])
        self.assertIn("F", snap.by_uid[1].letters)

    def test_idle_relisting_keeps_the_snapshot(self) -> None:
        deliver(self.root, b"a\n", 1)
        idx = self.index()
        first = idx.refresh()
        self.assertIs(idx.refresh(force=True), first)
        idx.store([1], ["\\Seen"], 1)
        changed = idx.snapshot
        self.assertIsNot(changed, first)
        self.assertIsNot(idx.refresh(force=True), first)

    def test_summaries_persist_across_restarts(self) -> None:
        for n in range(5):
            deliver(self.root, b"m%d\n" % n, n)
        first = self.index().refresh()
        self.assertEqual(self.describe.calls, 5)
        self.assertTrue(os.path.exists(os.path.join(self.root, JOURNAL)))
        again = self.index().refresh()
        self.assertEqual(self.describe.calls, 5)
        self.assertEqual([(r.uid, r.base, r.summary) for r in again.records], [(r.uid, r.base, r.summary) for r in first.records])

    def test_compaction_writes_snapshot(self) -> None:
        for n in range(3):
            deliver(self.root, b"m%d\n" % n, n)
        idx = self.index()
        idx.refresh()
        self.assertTrue(idx.cache.compact([r.base for r in idx.snapshot.records], force=True))
        with open(os.path.join(self.root, SNAPSHOT), "rb") as f:
            self.assertEqual(len(json.load(f)["entries"]), 3)
        self.assertEqual(os.path.getsize(os.path.join(self.root, JOURNAL)), 0)
        self.index().refresh()
        self.assertEqual(self.describe.calls, 3)

    def test_corrupt_cache_is_rebuilt(self) -> None:
        deliver(self.root, b"m\n", 1)
        self.index().refresh()
        with open(os.path.join(self.root, JOURNAL), "wb") as f:
            f.write(b"{not json\n")
        with open(os.path.join(self.root, SNAPSHOT), "wb") as f:
            f.write(b"garbage")
        snap = self.index().refresh()
        self.assertEqual(len(snap.records), 1)
        self.assertEqual(self.describe.calls, 2)

    def test_follows_pop3_rename(self) -> None:
        name = deliver(self.root, b"m\n", 1)
        idx = self.index()
        uid = idx.refresh().records[0].uid
        os.rename(os.path.join(self.root, "new", name), os.path.join(self.root, "cur", name + ":2,S"))
        snap = idx.refresh(force=True)
        self.assertEqual(snap.records[0].uid, uid)
        self.assertEqual(snap.flags(snap.records[0]), {"\\Seen"})
        self.assertEqual(self.describe.calls, 1)

    def test_store_renames_and_survives_restart(self) -> None:
        deliver(self.root, b"m\n", 1)
        idx = self.index()
        idx.refresh()
        changed = idx.store([1], ["\\Flagged", "Work"], 1)
        self.assertEqual(changed[1].letters, "Fa")
        self.assertEqual(os.listdir(os.path.join(self.root, "new")), [])
        [name] = os.listdir(os.path.join(self.root, "cur"))
        self.assertTrue(name.endswith(":2,Fa"))
        with open(os.path.join(self.root, "dovecot-keywords")) as f:
            self.assertEqual(f.read(), "0 Work\n")
        snap = self.index().refresh()
        self.assertEqual(snap.flags(snap.records[0]), {"\\Flagged", "Work"})
        idx.store([1], ["work"], -1)
        self.assertEqual(self.index().refresh().records[0].letters, "F")

    def test_store_after_concurrent_rename_keeps_both_changes(self) -> None:
        name = deliver(self.root, b"m\n", 1)
        idx = self.index()
        idx.refresh()
        # POP3 marks it seen behind our back; our snapshot is stale.
        os.rename(os.path.join(self.root, "new", name), os.path.join(self.root, "cur", name + ":2,S"))
        changed = idx.store([1], ["\\Answered"], 1)
        self.assertEqual(changed[1].letters, "RS")
        self.assertEqual(os.listdir(os.path.join(self.root, "cur")), [name + ":2,RS"])

    def test_store_keeps_passed_letter(self) -> None:
        name = deliver(self.root, b"m\n", 1)
        os.rename(os.path.join(self.root, "new", name), os.path.join(self.root, "cur", name + ":2,PS"))
        idx = self.index()
        idx.refresh()
        idx.store([1], ["\\Seen"], -1)
        self.assertEqual(os.listdir(os.path.join(self.root, "cur")), [name + ":2,P"])

    def test_expunge_only_deleted(self) -> None:
        for n in range(3):
            deliver(self.root, b"m%d\n" % n, n)
        idx = self.index()
        idx.refresh()
        idx.store([1, 3], ["\\Deleted"], 1)
        self.assertEqual(idx.expunge([3]), [3])
        self.assertEqual([r.uid for r in idx.snapshot.records], [1, 2])
        self.assertEqual(idx.expunge(), [1])
        self.assertEqual([r.uid for r in self.index().refresh().records], [2])

    def test_claim_recent_once(self) -> None:
        deliver(self.root, b"m\n", 1)
        idx = self.index()
        idx.refresh()
        self.assertEqual(idx.claim_recent(), {1})
        self.assertEqual(idx.claim_recent(), set())
        self.assertFalse(self.index().refresh().records[0].recent)

    def test_append(self) -> None:
        idx = self.index()
        idx.refresh()
        validity, uid = idx.append(b"Subject: x\r\n\r\nbody\r\n", ["\\Seen", "$Label1"], 1_600_000_000.0)
        self.assertEqual(uid, 1)
        self.assertEqual(validity, idx.snapshot.uidvalidity)
        [name] = os.listdir(os.path.join(self.root, "cur"))
        self.assertTrue(name.endswith(":2,Sa"))
        path = os.path.join(self.root, "cur", name)
        with open(path, "rb") as f:
            self.assertEqual(f.read(), b"Subject: x\n\nbody\n")
        self.assertEqual(os.stat(path).st_mtime, 1_600_000_000.0)
        self.assertEqual(os.listdir(os.path.join(self.root, "tmp")), [])
        _, uid2 = idx.append(b"no flags\n", [], None)
        self.assertEqual(uid2, 2)
        self.assertEqual(len(os.listdir(os.path.join(self.root, "new"))), 1)
        self.assertEqual(idx.read(1), b"Subject: x\r\n\r\nbody\r\n")

    def test_transfer_copy_and_move(self) -> None:
        other_path = os.path.join(self.root, ".Other")
        ensure_maildir(other_path)
        for n in range(3):
            deliver(self.root, b"m%d\n" % n, n)
        src = self.index()
        dst = self.index(other_path)
        src.refresh()
        dst.refresh()
        src.store([2], ["Important"], 1)
        dst.append(b"already here\n", ["Other"], None)
        pairs = ix.transfer(src, [3, 2], dst, move=False)
        self.assertEqual(pairs, [(3, 2), (2, 3)])
        snap = dst.refresh(force=True)
        self.assertEqual(snap.flags(snap.by_uid[3]), {"Important"})
        self.assertEqual(dst.read(2), b"m2\r\n")
        self.assertEqual(len(src.refresh(force=True).records), 3)
        moved = ix.transfer(src, [1], dst, move=True)
        self.assertEqual(moved, [(1, 4)])
        self.assertEqual([r.uid for r in src.refresh(force=True).records], [2, 3])
        self.assertEqual(dst.read(4), b"m0\r\n")
        # the target's keyword letters were re-assigned: Other=a, Important=b
        with open(os.path.join(other_path, "dovecot-keywords")) as f:
            self.assertEqual(f.read(), "0 Other\n1 Important\n")

    def test_transfer_skips_vanished(self) -> None:
        other_path = os.path.join(self.root, ".Other")
        ensure_maildir(other_path)
        name = deliver(self.root, b"m\n", 1)
        src, dst = self.index(), self.index(other_path)
        src.refresh()
        os.unlink(os.path.join(self.root, "new", name))
        self.assertEqual(ix.transfer(src, [1], dst, move=False), [])

    def test_folder_gone(self) -> None:
        path = os.path.join(self.root, ".Gone")
        ensure_maildir(path)
        idx = self.index(path)
        idx.refresh()
        for sub in ("tmp", "new", "cur"):
            os.rmdir(os.path.join(path, sub))
        self.assertFalse(idx.refresh().exists)
        self.assertRaises(ix.FolderGone, idx.append, b"x\n", [], None)

    def test_registry_shares_and_forgets(self) -> None:
        registry = ix.FolderRegistry(self.describe, self.describe.version)
        a = registry.get(self.root + "/.A", self.root)
        self.assertIs(registry.get(self.root + "/.A/", self.root), a)
        registry.forget(self.root + "/.A")
        self.assertIsNot(registry.get(self.root + "/.A", self.root), a)

    def test_crlf_conversion(self) -> None:
        self.assertEqual(ix.to_crlf(b"a\nb\r\nc"), b"a\r\nb\r\nc")
        self.assertEqual(ix.to_lf(b"a\r\nb\nc"), b"a\nb\nc")

    def test_crlf_conversion_same_with_and_without_cr(self) -> None:
        """The LF-only short path gives what the two-pass conversion gives."""

        def two_pass(data: bytes) -> bytes:
            return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")

        pieces = [b"a", b"\n", b"\r", b"\r\n", b""]
        for first in pieces:
            for second in pieces:
                for third in pieces:
                    data = first + second + third + b"x\n\n"
                    self.assertEqual(ix.to_crlf(data), two_pass(data), data)
