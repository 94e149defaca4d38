"""durable.replace_atomically: the one tmp + fsync + rename + directory-fsync helper."""

from __future__ import annotations

import ast
import os

from twisted.trial.unittest import SynchronousTestCase

import mailserver
from mailserver import durable
from tests.diskfull import DiskFull


class ReplaceAtomicallyTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.root = self.mktemp()
        os.makedirs(self.root)
        self.path = os.path.join(self.root, "file")

    def read(self) -> bytes:
        with open(self.path, "rb") as f:
            return f.read()

    def test_creates_then_replaces_with_mode(self) -> None:
        durable.replace_atomically(self.path, b"one", 0o640)
        durable.replace_atomically(self.path, b"two", 0o600)
        self.assertEqual(self.read(), b"two")
        self.assertEqual(os.stat(self.path).st_mode & 0o777, 0o600)
        self.assertEqual(os.listdir(self.root), ["file"])

    def test_mode_is_not_narrowed_by_the_umask(self) -> None:
        old = os.umask(0o077)
        try:
            durable.replace_atomically(self.path, b"x", 0o644)
        finally:
            os.umask(old)
        self.assertEqual(os.stat(self.path).st_mode & 0o777, 0o644)

    def test_fsyncs_file_and_directory_before_returning(self) -> None:
        synced: list[str] = []
        real = os.fsync

        def fsync(fd: int) -> None:
            synced.append(os.readlink(f"/proc/self/fd/{fd}"))
            real(fd)

        self.patch(os, "fsync", fsync)
        durable.replace_atomically(self.path, b"data")
        self.assertEqual(len(synced), 2)
        self.assertTrue(synced[0].endswith(".tmp"), synced)
        self.assertEqual(synced[1], os.path.realpath(self.root))

    def test_disk_full_keeps_the_old_content_and_leaves_no_temporary(self) -> None:
        durable.replace_atomically(self.path, b"old")
        DiskFull().install(self)
        self.assertRaises(OSError, durable.replace_atomically, self.path, b"new")
        self.assertEqual(self.read(), b"old")
        self.assertEqual(os.listdir(self.root), ["file"])

    def test_symlink_at_path_is_replaced_not_followed(self) -> None:
        outside = os.path.join(self.root, "outside")
        with open(outside, "wb") as f:
            f.write(b"keep")
        os.symlink(outside, self.path)
        durable.replace_atomically(self.path, b"new")
        self.assertFalse(os.path.islink(self.path))
        self.assertEqual(self.read(), b"new")
        with open(outside, "rb") as f:
            self.assertEqual(f.read(), b"keep")

    def test_owner_is_applied(self) -> None:
        durable.replace_atomically(self.path, b"x", 0o600, (os.getuid(), os.getgid()))
        st = os.stat(self.path)
        self.assertEqual((st.st_uid, st.st_gid), (os.getuid(), os.getgid()))


class OneHelperTests(SynchronousTestCase):
    def test_regression_one_atomic_write_helper(self) -> None:
        """No module hand-writes tmp + fsync + replace: they call durable.replace_atomically.

        Renames that move mail between Maildir/queue states (and a file created with
        write_new_file then renamed into place) are not this pattern: only
        C{os.replace} is, and it lives in durable.py alone.
        """
        root = os.path.dirname(mailserver.__file__)
        offenders = []
        for directory, _dirs, files in os.walk(root):
            for filename in files:
                if not filename.endswith(".py") or filename == "durable.py":
                    continue
                path = os.path.join(directory, filename)
                with open(path, encoding="utf-8") as f:
                    tree = ast.parse(f.read())
                for node in ast.walk(tree):
                    if isinstance(node, ast.Attribute) and node.attr == "replace":
                        if isinstance(node.value, ast.Name) and node.value.id == "os":
                            offenders.append(os.path.relpath(path, root))
        self.assertEqual(offenders, [])

    def test_regression_summary_cache_rewritten_through_helper(self) -> None:
        """
        The IMAP summary cache's compaction goes through replace_atomically
        (unsynced: a cache): a symlink planted at the name the hand-written
        rename used (``mailserver.index.<pid>.<thread>.tmp``) is never written
        through, and no temporary file is left.
        """
        import threading

        from mailserver.store.summaries import SNAPSHOT, Summary, SummaryCache

        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        outside = os.path.abspath(self.mktemp())
        with open(outside, "wb") as f:
            f.write(b"keep")
        planted = os.path.join(folder, f"{SNAPSHOT}.{os.getpid()}.{threading.get_ident()}.tmp")
        os.symlink(outside, planted)
        cache = SummaryCache(folder, "v1")
        cache.add([("base", Summary(1.0, 10, {"size": 12}))])
        self.assertTrue(cache.compact(["base"], force=True))
        with open(outside, "rb") as f:
            self.assertEqual(f.read(), b"keep")
        self.assertEqual(sorted(os.listdir(folder)), sorted([SNAPSHOT, os.path.basename(planted), "mailserver.index.log"]))
        self.assertEqual(SummaryCache(folder, "v1").get("base"), Summary(1.0, 10, {"size": 12}))

    def test_unsynced_replace_fsyncs_nothing(self) -> None:
        root = os.path.abspath(self.mktemp())
        os.makedirs(root)
        calls: list[object] = []
        self.patch(durable.os, "fsync", calls.append)
        durable.replace_atomically(os.path.join(root, "cache"), b"x", sync=False)
        self.assertEqual(calls, [])
        with open(os.path.join(root, "cache"), "rb") as f:
            self.assertEqual(f.read(), b"x")
