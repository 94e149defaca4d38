"""The store's read-side family and IMAP's folder interfaces, proved on their implementations."""

from __future__ import annotations

import os

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from mailserver.interfaces import (
    IFolder,
    IFolderReader,
    IFolderRegistry,
    IFolderTree,
    IFolderWriter,
    IMailboxNotifier,
    IMailboxReader,
    IMaildirReader,
)
from mailserver.store.folders import Folders, ensure_maildir, folder_registry
from mailserver.store.notify import MailboxNotifier
from mailserver.store.reader import MaildirReader
from mailserver.store.records import MessageRecord, Snapshot


def describe(data: bytes) -> dict:
    return {"size": len(data)}


class ReadSideFamilyTests(SynchronousTestCase):
    def test_one_read_side_family(self) -> None:
        """POP3's reader and IMAP's folder reader share one base; the folder is both sides."""
        self.assertTrue(IMailboxReader.extends(IMaildirReader))
        self.assertTrue(IFolderReader.extends(IMaildirReader))
        self.assertFalse(IFolderWriter.extends(IFolderReader))
        self.assertTrue(IFolder.extends(IFolderReader) and IFolder.extends(IFolderWriter))

    def test_pop3_reader_provides_the_base(self) -> None:
        reader = MaildirReader(os.path.abspath(self.mktemp()))
        self.assertTrue(verifyObject(IMailboxReader, reader))
        self.assertTrue(verifyObject(IMaildirReader, reader))


class FolderInterfaceTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.root = os.path.abspath(self.mktemp())
        ensure_maildir(self.root)
        self.registry = folder_registry(describe, "test-1")

    def test_registry_provides_interface(self) -> None:
        self.assertTrue(verifyObject(IFolderRegistry, self.registry))

    def test_folder_tree_provides_interface(self) -> None:
        """IMAP's account reaches the user's folder tree through IFolderTree alone."""
        self.assertTrue(verifyObject(IFolderTree, Folders(self.root, {"Sent": "\\Sent"})))

    def test_folder_provides_both_sides(self) -> None:
        folder = self.registry.get(self.root, self.root)
        folder.refresh()
        for interface in (IMaildirReader, IFolderReader, IFolderWriter, IFolder):
            self.assertTrue(verifyObject(interface, folder), interface)
        self.assertIs(self.registry.get(self.root + "/", self.root), folder)  # one per directory

    def test_snapshot_values_come_from_records(self) -> None:
        """What a reader hands out are the pure value types of store/records.py."""
        folder = self.registry.get(self.root, self.root)
        _, uid = folder.append(b"Subject: x\r\n\r\nbody\r\n", ["\\Seen"], 1_700_000_000.0)
        snap = folder.refresh()
        self.assertIsInstance(snap, Snapshot)
        self.assertIsInstance(snap.by_uid[uid], MessageRecord)
        self.assertEqual(folder.read(uid), b"Subject: x\r\n\r\nbody\r\n")

    def test_transfer_through_the_writer(self) -> None:
        """COPY and MOVE are a method of the write side (IMAP imports no store function for them)."""
        Folders(self.root).create("Archive")
        source = self.registry.get(self.root, self.root)
        target = self.registry.get(os.path.join(self.root, ".Archive"), self.root)
        _, first = source.append(b"Subject: a\r\n\r\n1\r\n", [], None)
        _, second = source.append(b"Subject: b\r\n\r\n2\r\n", ["\\Flagged"], None)
        pairs = source.transfer([first, second], target, True)
        self.assertEqual([p[0] for p in pairs], [first, second])
        self.assertEqual(source.refresh(force=True).records, ())
        moved = target.refresh(force=True)
        self.assertEqual(moved.flags(moved.by_uid[pairs[1][1]]), frozenset({"\\Flagged"}))


class NotifierInterfaceTests(SynchronousTestCase):
    def test_notifier_provides_interface(self) -> None:
        self.assertTrue(verifyObject(IMailboxNotifier, MailboxNotifier(Clock())))
