"""IMAP over in-memory folders: the protocol reads and writes messages through IFolder alone."""

from __future__ import annotations

import imaplib
import os

from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from mailserver.imap.structure import describe
from mailserver.interfaces import IFolder, IFolderRegistry
from tests import fakes
from tests.imap import support

MESSAGE = b"From: Ann <ann@example.org>\r\nSubject: hello\r\n\r\nbody line\r\n"


class MemoryFolderTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.registry = fakes.MemoryFolderRegistry(describe)
        self.patch(support, "default_registry", lambda: self.registry)
        self.server = support.LoopbackServer(self)

    def test_fakes_provide_interfaces(self) -> None:
        self.assertTrue(verifyObject(IFolderRegistry, self.registry))
        self.assertTrue(verifyObject(IFolder, self.registry.get("/m/alice/Maildir", "/m/alice/Maildir")))

    async def test_session_through_the_interfaces(self) -> None:
        """APPEND, SELECT, FETCH, STORE, COPY, MOVE, EXPUNGE, STATUS: not one message file on disk."""

        def session(c: imaplib.IMAP4):
            c.append("INBOX", "(\\Flagged $Work)", None, MESSAGE)
            c.append("INBOX", None, None, MESSAGE.replace(b"hello", b"second"))
            c.select("INBOX")
            fetched = c.fetch("1:*", "(UID FLAGS BODY.PEEK[] ENVELOPE)")[1]
            c.store("2", "+FLAGS", "(\\Deleted)")
            copied = c.copy("1", "Sent")
            moved = c.uid("MOVE", "1", "Trash")
            c.expunge()
            left = c.fetch("1:*", "(UID)")[1]
            status = [c.status(name, "(MESSAGES UIDNEXT)")[1][0] for name in ("INBOX", "Sent", "Trash")]
            c.select("Sent")
            sent = c.fetch("1", "(FLAGS BODY[HEADER.FIELDS (SUBJECT)])")[1]
            return fetched, copied, moved, left, status, sent

        fetched, copied, moved, left, status, sent = await self.server.imap(session)
        self.assertEqual(fetched[0][1], MESSAGE)
        self.assertIn(b"FLAGS (\\Flagged \\Recent $Work)", fetched[0][0])  # appended with flags: recent, as on disk
        self.assertIn(b'"hello"', fetched[0][0] + fetched[1])  # ENVELOPE from the describe()d summary
        self.assertEqual(copied[0], "OK")
        self.assertEqual(moved[0], "OK")
        self.assertEqual(left, [None])
        self.assertEqual(
            status,
            [b"INBOX (MESSAGES 0 UIDNEXT 3)", b"Sent (MESSAGES 1 UIDNEXT 2)", b"Trash (MESSAGES 1 UIDNEXT 2)"],
        )
        self.assertIn(b"FLAGS (\\Flagged \\Recent \\Seen $Work)", sent[0][0])  # copied flags, BODY[] sets seen
        self.assertEqual(sent[0][1], b"Subject: hello\r\n\r\n")
        root = self.server.maildir()
        for folder in (root, os.path.join(root, ".Sent"), os.path.join(root, ".Trash")):
            self.assertEqual(os.listdir(os.path.join(folder, "new")) + os.listdir(os.path.join(folder, "cur")), [])
