"""Maildir++ folders: name safety, disk mapping, create/delete/rename, subscriptions."""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from mailserver.store import folders as fo


class NameTests(SynchronousTestCase):
    def test_normalize(self) -> None:
        self.assertEqual(fo.normalize_name("inbox"), "INBOX")
        self.assertEqual(fo.normalize_name("Inbox/Sub"), "INBOX/Sub")
        self.assertEqual(fo.normalize_name("a/b/", allow_trailing_delimiter=True), "a/b")

    def test_refused_names(self) -> None:
        bad = [
            "", "/", "/etc", "a//b", "a/", "..", "a/../b", ".", "a/./b", "x\x00y", "x\ny",
            "tab\there", "del\x7f", "a*", "b%", "x" * 300, "/".join("a" * 20), " lead", "trail ",
            "\ud800",
        ]
        for name in bad:
            self.assertRaises(fo.FolderNameError, fo.normalize_name, name)

    def test_disk_names(self) -> None:
        self.assertEqual(fo.disk_name("INBOX"), "")
        self.assertEqual(fo.disk_name("Sent"), ".Sent")
        self.assertEqual(fo.disk_name("a/b"), ".a.b")
        # a dot inside a component cannot be confused with the separator
        self.assertEqual(fo.disk_name("v1.2"), ".v1&AC4-2")
        self.assertEqual(fo.disk_name("Entw\u00fcrfe"), ".Entw&APw-rfe")

    def test_disk_round_trip(self) -> None:
        for name in ["Sent", "a/b/c", "v1.2/x.y", "Entw\u00fcrfe", "&amp", "\u65e5\u672c"]:
            entry = fo.disk_name(name)
            self.assertNotIn("/", entry)
            self.assertNotIn("..", entry)
            self.assertEqual(fo.name_from_disk(entry), name)

    def test_not_folders(self) -> None:
        for entry in ["cur", "..", "..deleted.1", ".", ".&bad", "dovecot-uidlist"]:
            self.assertIsNone(fo.name_from_disk(entry))

    def test_mutf7(self) -> None:
        self.assertEqual(fo.mutf7_encode("~peter/mail/\u53f0\u5317/\u65e5\u672c\u8a9e"), "~peter/mail/&U,BTFw-/&ZeVnLIqe-")
        self.assertEqual(fo.mutf7_decode("&U,BTFw-"), "\u53f0\u5317")
        self.assertEqual(fo.mutf7_decode("a&-b"), "a&b")
        self.assertRaises(fo.FolderNameError, fo.mutf7_decode, "&U,BTFw")
        self.assertRaises(fo.FolderNameError, fo.mutf7_decode, "&!!!-")


class FoldersTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.root = os.path.abspath(self.mktemp())
        self.folders = fo.Folders(self.root)
        self.folders.ensure_defaults()

    def test_defaults_created_and_subscribed_once(self) -> None:
        self.assertEqual(self.folders.names(), ["INBOX", "Drafts", "Junk", "Sent", "Trash"])
        for sub in ("tmp", "new", "cur"):
            self.assertTrue(os.path.isdir(os.path.join(self.root, ".Sent", sub)))
        self.assertEqual(sorted(self.folders.subscriptions()), ["Drafts", "Junk", "Sent", "Trash"])
        self.folders.unsubscribe("Junk")
        self.folders.ensure_defaults()
        self.assertNotIn("Junk", self.folders.subscriptions())

    def test_delete_drops_cached_quota_usage(self) -> None:
        """The deleted folder's messages leave the count: maildirsize goes, the next read recounts."""
        from mailserver.store.quota import MAILDIRSIZE

        with open(os.path.join(self.root, MAILDIRSIZE), "w") as f:
            f.write("1000S\n500 3\n")
        self.folders.delete("Junk")
        self.assertFalse(os.path.exists(os.path.join(self.root, MAILDIRSIZE)))

    def test_create_and_exists(self) -> None:
        self.folders.create("a/b")
        self.assertTrue(os.path.isdir(os.path.join(self.root, ".a.b", "cur")))
        self.assertTrue(self.folders.exists("a/b"))
        self.assertFalse(self.folders.exists("a"))
        self.assertRaises(fo.FolderExistsError, self.folders.create, "a/b")
        self.assertRaises(fo.FolderExistsError, self.folders.create, "inbox")

    def test_escaping_names_never_touch_the_disk(self) -> None:
        before = sorted(os.listdir(os.path.dirname(self.root)))
        for name in ["../evil", "/etc/passwd", "a/../../x", "..", "x/.."]:
            self.assertRaises(fo.FolderNameError, self.folders.create, name)
        self.assertEqual(sorted(os.listdir(os.path.dirname(self.root))), before)

    def test_symlinked_folder_refused(self) -> None:
        outside = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(outside, "cur"))
        os.symlink(outside, os.path.join(self.root, ".Link"))
        self.assertRaises(fo.FolderNameError, self.folders.path, "Link")
        self.assertNotIn("Link", self.folders.names())

    def test_delete_keeps_children(self) -> None:
        self.folders.create("a/b")
        self.folders.create("a")
        self.folders.delete("a")
        self.assertEqual(self.folders.names()[-2:], ["Trash", "a/b"])
        self.assertEqual([e for e in os.listdir(self.root) if e.startswith("..")], [])
        self.assertRaises(fo.FolderNotFoundError, self.folders.delete, "a")
        self.assertRaises(fo.FolderError, self.folders.delete, "INBOX")

    def test_rename_moves_children(self) -> None:
        self.folders.create("a")
        self.folders.create("a/b")
        moves = self.folders.rename("a", "z/y")
        self.assertEqual(moves, [("a", "z/y"), ("a/b", "z/y/b")])
        self.assertIn("z/y/b", self.folders.names())
        self.assertNotIn("a", self.folders.names())
        self.assertRaises(fo.FolderExistsError, self.folders.rename, "Sent", "Trash")
        self.assertRaises(fo.FolderError, self.folders.rename, "Sent", "Sent/x")
        self.assertRaises(fo.FolderNotFoundError, self.folders.rename, "nope", "x")

    def test_rename_inbox_moves_messages(self) -> None:
        for sub, name in (("new", "1.a,S=1"), ("cur", "2.b,S=1:2,S")):
            with open(os.path.join(self.root, sub, name), "wb") as f:
                f.write(b"x")
        self.folders.create("INBOX/child")
        self.folders.rename("INBOX", "Old")
        self.assertEqual(os.listdir(os.path.join(self.root, "new")), [])
        self.assertEqual(os.listdir(os.path.join(self.root, "cur")), [])
        self.assertEqual(os.listdir(os.path.join(self.root, ".Old", "cur")), ["2.b,S=1:2,S"])
        self.assertIn("INBOX/child", self.folders.names())

    def test_subscriptions(self) -> None:
        self.folders.create("here/now")
        self.folders.subscribe("here/now")
        self.assertIn("here/now", self.folders.subscriptions())
        self.folders.unsubscribe("here/now")
        self.assertNotIn("here/now", self.folders.subscriptions())
        self.assertRaises(fo.FolderNotFoundError, self.folders.unsubscribe, "never")
        self.assertRaises(fo.FolderNameError, self.folders.subscribe, "../x")

    def test_regression_subscribe_missing_folder_refused(self) -> None:
        """SUBSCRIBE to a mailbox that does not exist answered OK; Dovecot answers NO."""
        self.assertRaises(fo.FolderNotFoundError, self.folders.subscribe, "not/yet/there")
        self.assertNotIn("not/yet/there", self.folders.subscriptions())
