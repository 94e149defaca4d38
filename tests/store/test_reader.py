"""The read-side Maildir interface (IMailboxReader) that POP3 reads through."""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from mailserver.interfaces import IMailboxReader
from mailserver.store.reader import MaildirReader


def _put(maildir: str, sub: str, name: str, data: bytes) -> str:
    path = os.path.join(maildir, sub, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


class MaildirReaderTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reader = MaildirReader(os.path.abspath(self.mktemp()))
        self.assertTrue(self.reader.prepare())

    def test_provides_interface(self) -> None:
        self.assertTrue(verifyObject(IMailboxReader, self.reader))

    def test_prepare_twice_makes_nothing(self) -> None:
        self.assertFalse(self.reader.prepare())

    def test_list_in_delivery_order_with_flags(self) -> None:
        root = self.reader.path
        _put(root, "cur", "1700000000.M1P1Q10.h,S=2,W=3:2,FS", b"b\n")
        _put(root, "new", "1700000000.M1P1Q9.h,S=2,W=3", b"a\n")
        listing = self.reader.list()
        self.assertEqual([(m.unique, m.size, m.letters) for m in listing],
                         [("1700000000.M1P1Q9.h", 3, ""), ("1700000000.M1P1Q10.h", 3, "FS")])

    def test_open_follows_a_rename(self) -> None:
        root = self.reader.path
        old = _put(root, "new", "1.M1P1Q1.h", b"x\n")
        moved = os.path.join(root, "cur", "1.M1P1Q1.h:2,S")
        os.rename(old, moved)
        fp, path = self.reader.open(old, "1.M1P1Q1.h")
        with fp:
            self.assertEqual(fp.read(), b"x\n")
        self.assertEqual(path, moved)

    def test_open_of_removed_message_is_none(self) -> None:
        old = _put(self.reader.path, "new", "1.M1P1Q1.h", b"x\n")
        os.unlink(old)
        self.assertIsNone(self.reader.open(old, "1.M1P1Q1.h"))

    def test_mark_seen_and_delete(self) -> None:
        root = self.reader.path
        old = _put(root, "new", "1.M1P1Q1.h", b"x\n")
        seen = self.reader.mark_seen(old, "1.M1P1Q1.h")
        self.assertEqual(seen, os.path.join(root, "cur", "1.M1P1Q1.h:2,S"))
        self.assertEqual(self.reader.delete([(old, "1.M1P1Q1.h")]), 1)
        self.assertEqual(self.reader.list(), [])
        self.assertEqual(self.reader.delete([(seen, "1.M1P1Q1.h")]), 0)
