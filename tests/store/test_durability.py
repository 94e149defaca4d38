"""
Tests for mailserver.store.maildir: what is fsynced, in which order, and
that a failure anywhere leaves no file behind.
"""

from __future__ import annotations

import errno
import os
import shutil
from typing import Any

from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from mailserver.errors import MailError
from mailserver.store.maildir import ensure_maildir
from tests.store.maildir_harness import (
    MESSAGE,
    PREFIX,
    DeliveryTestsMixin,
    files,
    proc_path,
)


class FailureTests(DeliveryTestsMixin, SynchronousTestCase):
    """A failure anywhere leaves no file in any tmp/ or new/ and gives 451."""

    def assertTemporary(self, error: MailError) -> None:
        self.assertEqual((error.code, error.enhanced), (451, "4.3.0"))
        self.assertTrue(error.temporary)
        self.assertNotIn(self.root, error.text)
        self.assertNotIn("/", error.text)

    def test_new_is_a_file(self) -> None:
        """<maildir>/new being a regular file fails every copy."""
        a, b, c = self.maildir("a"), self.maildir("b"), self.maildir("c")
        ensure_maildir(b)
        os.rmdir(os.path.join(b, "new"))
        with open(os.path.join(b, "new"), "wb") as f:
            f.write(b"not a directory")
        with capturedLogs() as events:
            error = self.fail_delivery(MESSAGE, [(a, PREFIX), (c, b"X: y\n"), (b, PREFIX)])
        self.assertTemporary(error)
        self.assertNothingLeft(a, c)
        self.assertEqual(files(os.path.join(b, "tmp")), [])
        self.assertEqual(self.delivered, [])
        logged = [e for e in events if e.get("log_level").name == "error"]
        self.assertEqual(len(logged), 1)
        self.assertIsInstance(logged[0]["error"], NotADirectoryError)

    def test_maildir_is_a_file(self) -> None:
        """A Maildir path that is a regular file fails cleanly."""
        a, b = self.maildir("a"), self.maildir("b")
        os.makedirs(os.path.dirname(b))
        with open(b, "wb"):
            pass
        self.assertTemporary(self.fail_delivery(MESSAGE, [(a, PREFIX), (b, PREFIX)]))
        self.assertNothingLeft(a)

    def test_rename_fails_second_time(self) -> None:
        """A copy already renamed into new/ is removed when a later rename fails."""
        real_rename = os.rename
        calls = []

        def rename(src: str, dst: str) -> None:
            calls.append(dst)
            if len(calls) == 2:
                raise OSError(errno.ENOSPC, "No space left on device", dst)
            real_rename(src, dst)

        self.patch(os, "rename", rename)
        a, b, c = self.maildir("a"), self.maildir("b"), self.maildir("c")
        error = self.fail_delivery(MESSAGE, [(a, PREFIX), (b, PREFIX), (c, b"Z: z\n")])
        self.assertTemporary(error)
        self.assertEqual(len(calls), 2)
        self.assertFalse(os.path.exists(calls[0]))
        self.assertNothingLeft(a, b, c)

    def test_directory_fsync_fails(self) -> None:
        """If fsync of new/ fails, the renamed copies are removed again."""
        real_fsync = os.fsync
        a, b = self.maildir("a"), self.maildir("b")
        ensure_maildir(a)
        ensure_maildir(b)
        new_b = os.path.join(b, "new")
        failed = []

        def fsync(fd: int) -> None:
            if proc_path(fd) == new_b and not failed:
                failed.append(fd)
                raise OSError(errno.EIO, "Input/output error")
            real_fsync(fd)

        self.patch(os, "fsync", fsync)
        self.assertTemporary(self.fail_delivery(MESSAGE, [(a, PREFIX), (b, PREFIX)]))
        self.assertEqual(len(failed), 1)
        self.assertNothingLeft(a, b)

    def test_write_fails(self) -> None:
        """A short disk (write error) on the second file removes the first."""
        real_writev = os.writev
        writes = []

        def writev(fd: int, buffers: Any) -> int:
            writes.append(fd)
            if len(writes) == 2:
                raise OSError(errno.ENOSPC, "No space left on device")
            return real_writev(fd, buffers)

        self.patch(os, "writev", writev)
        a, b = self.maildir("a"), self.maildir("b")
        self.assertTemporary(self.fail_delivery(MESSAGE, [(a, PREFIX), (b, b"Other: 1\n")]))
        self.assertEqual(len(writes), 2)
        self.assertNothingLeft(a, b)

    def test_short_writes(self) -> None:
        """os.writev and os.write may write less than asked: the rest is written too."""
        real_write = os.write
        self.patch(os, "writev", lambda fd, buffers: real_write(fd, b"".join(buffers)[:5]))
        self.patch(os, "write", lambda fd, data: real_write(fd, bytes(data[:3])))
        a = self.maildir("a")
        [name] = self.deliver(MESSAGE, [(a, PREFIX)])
        with open(os.path.join(a, "new", name), "rb") as f:
            self.assertEqual(f.read(), PREFIX + MESSAGE)

    def test_removed_maildir_is_made_again(self) -> None:
        """A Maildir removed after a delivery is made again by the next one."""
        a = self.maildir("a")
        self.deliver(MESSAGE, [(a, PREFIX)])
        shutil.rmtree(a)
        [name] = self.deliver(MESSAGE, [(a, PREFIX)])
        with open(os.path.join(a, "new", name), "rb") as f:
            self.assertEqual(f.read(), PREFIX + MESSAGE)
        self.assertEqual(sorted(os.listdir(a)), ["cur", "new", "tmp"])

    def test_removed_new_directory_is_made_again(self) -> None:
        """new/ removed behind our back (tmp/ still there): the delivery makes it again."""
        a = self.maildir("a")
        self.deliver(MESSAGE, [(a, PREFIX)])
        shutil.rmtree(os.path.join(a, "new"))
        [name] = self.deliver(MESSAGE, [(a, PREFIX)])
        self.assertEqual(files(os.path.join(a, "new")), [name])
        self.assertEqual(files(os.path.join(a, "tmp")), [])

    def test_existing_maildir_costs_no_stat(self) -> None:
        """Delivering to a complete Maildir does not stat its directories first."""
        a = self.maildir("a")
        self.deliver(MESSAGE, [(a, PREFIX)])
        checked: list[str] = []
        real_isdir = os.path.isdir
        self.patch(os.path, "isdir", lambda path: checked.append(path) or real_isdir(path))
        self.deliver(MESSAGE, [(a, PREFIX)])
        self.assertEqual(checked, [])

    def test_unexpected_error_cleans_up(self) -> None:
        """A non-OSError bug still removes the files, and is not hidden as 451."""
        real_rename = os.rename
        calls = []

        def rename(src: str, dst: str) -> None:
            calls.append(dst)
            if len(calls) == 2:
                raise RuntimeError("bug")
            real_rename(src, dst)

        self.patch(os, "rename", rename)
        a, b = self.maildir("a"), self.maildir("b")
        self.failureResultOf(
            self.store.deliver(MESSAGE, [(a, PREFIX), (b, PREFIX)]), RuntimeError
        )
        self.assertNothingLeft(a, b)

    def test_cleanup_error_logged(self) -> None:
        """A file that cannot be removed after a failure is logged by name."""
        real_unlink = os.unlink

        def rename(src: str, dst: str) -> None:
            raise OSError(errno.EIO, "Input/output error", dst)

        def unlink(path: str) -> None:
            raise OSError(errno.EROFS, "Read-only file system", path)

        self.patch(os, "rename", rename)
        self.patch(os, "unlink", unlink)
        a = self.maildir("a")
        with capturedLogs() as events:
            self.fail_delivery(MESSAGE, [(a, PREFIX)])
        self.patch(os, "unlink", real_unlink)
        [leftover] = files(os.path.join(a, "tmp"))
        texts = [e.get("log_format", "") for e in events]
        self.assertTrue(any("could not remove" in t for t in texts), texts)
        self.assertIn(
            os.path.join(a, "tmp", leftover),
            [e.get("filename") for e in events],
        )


class DurabilityTests(DeliveryTestsMixin, SynchronousTestCase):
    def test_fsync_order(self) -> None:
        """
        The file is fsynced before its rename, every rename comes before the
        fsync of new/, and both new/ directories are fsynced.
        """
        events: list[tuple[str, str]] = []
        real_fsync, real_rename = os.fsync, os.rename

        def fsync(fd: int) -> None:
            events.append(("fsync", proc_path(fd)))
            real_fsync(fd)

        def rename(src: str, dst: str) -> None:
            events.append(("rename", os.path.abspath(dst)))
            real_rename(src, dst)

        a, b = self.maildir("a"), self.maildir("b")
        ensure_maildir(a)
        ensure_maildir(b)
        self.patch(os, "fsync", fsync)
        self.patch(os, "rename", rename)
        names = self.deliver(MESSAGE, [(a, PREFIX), (b, b"Other: 1\n")])
        tmp_a = os.path.join(a, "tmp", names[0])
        tmp_b = os.path.join(b, "tmp", names[1])
        new_a, new_b = os.path.join(a, "new"), os.path.join(b, "new")
        self.assertEqual(
            events,
            [
                ("fsync", tmp_a),
                ("fsync", tmp_b),
                ("rename", os.path.join(new_a, names[0])),
                ("rename", os.path.join(new_b, names[1])),
                ("fsync", new_a),
                ("fsync", new_b),
            ],
        )

    def test_new_dir_fsynced_once(self) -> None:
        """Linked copies are not rewritten and one new/ is fsynced once."""
        paths: list[str] = []
        real_fsync = os.fsync

        def fsync(fd: int) -> None:
            paths.append(proc_path(fd))
            real_fsync(fd)

        a = self.maildir("a")
        ensure_maildir(a)
        self.patch(os, "fsync", fsync)
        names = self.deliver(MESSAGE, [(a, PREFIX), (a, PREFIX)])
        self.assertEqual(paths, [os.path.join(a, "tmp", names[0]), os.path.join(a, "new")])

    def test_created_directories_fsynced(self) -> None:
        """Creating a Maildir fsyncs the directories holding the new entries."""
        paths: list[str] = []
        real_fsync = os.fsync

        def fsync(fd: int) -> None:
            paths.append(proc_path(fd))
            real_fsync(fd)

        self.patch(os, "fsync", fsync)
        box = self.maildir("new-user")
        self.assertTrue(ensure_maildir(box))
        self.assertEqual(
            sorted(paths), sorted([self.root, os.path.dirname(box), box])
        )
        paths.clear()
        self.assertFalse(ensure_maildir(box))
        self.assertEqual(paths, [])

    def test_ensure_maildir_repairs(self) -> None:
        """A Maildir missing only cur/ gets it back; other contents are kept."""
        box = self.maildir("a")
        ensure_maildir(box)
        with open(os.path.join(box, "new", "keep"), "wb"):
            pass
        os.rmdir(os.path.join(box, "cur"))
        self.assertTrue(ensure_maildir(box))
        self.assertTrue(os.path.isdir(os.path.join(box, "cur")))
        self.assertEqual(files(os.path.join(box, "new")), ["keep"])

    def test_ensure_maildir_refuses_file(self) -> None:
        box = self.maildir("a")
        os.makedirs(box)
        with open(os.path.join(box, "tmp"), "wb"):
            pass
        self.assertRaises(NotADirectoryError, ensure_maildir, box)
