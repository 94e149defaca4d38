"""
IMAP4rev2 (RFC 9051) beside IMAP4rev1: after ENABLE IMAP4rev2, UTF-8
mailbox names, no \\Recent, SEARCH answered with ESEARCH, STATUS DELETED.
"""

from __future__ import annotations

import imaplib

from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.imap.support import LoopbackServer, MemorySession, deliver


class Rev2SessionTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.s = MemorySession(self)
        self.s.output()
        for n in range(3):
            deliver(self.s.maildir(), b"Subject: m%d\n\nx\n" % n)
        self.s.send(b"a LOGIN alice secret\r\n")

    def test_both_advertised_and_rev1_unchanged(self) -> None:
        out = self.s.send(b"c CAPABILITY\r\n")
        self.assertIn(b"* CAPABILITY IMAP4rev1 IMAP4rev2 ", out)
        out = self.s.send(b"s SELECT INBOX\r\n")
        self.assertIn(b"* 3 RECENT", out)
        self.assertIn(b"* SEARCH 1 2 3\r\n", self.s.send(b"x SEARCH ALL\r\n"))
        self.assertIn(b"\\Recent", self.s.send(b"f FETCH 1 FLAGS\r\n"))

    def test_enable_rev2(self) -> None:
        self.assertIn(b"* ENABLED IMAP4rev2\r\n", self.s.send(b"e ENABLE IMAP4rev2\r\n"))
        out = self.s.send(b"s SELECT INBOX\r\n")
        self.assertNotIn(b"RECENT", out)
        self.assertIn(b"* 3 EXISTS", out)
        self.assertNotIn(b"\\Recent", self.s.send(b"f FETCH 1:* FLAGS\r\n"))
        self.assertIn(b'* ESEARCH (TAG "x") UID ALL 1:3\r\n', self.s.send(b"x UID SEARCH ALL\r\n"))
        self.s.send(b"t STORE 2 +FLAGS.SILENT (\\Deleted)\r\n")
        self.assertIn(b"(DELETED 1 MESSAGES 3)", self.s.send(b"u STATUS INBOX (DELETED MESSAGES)\r\n"))
        deliver(self.s.maildir(), b"Subject: late\n\nx\n")
        out = self.s.send(b"n NOOP\r\n")
        self.assertIn(b"* 4 EXISTS", out)
        self.assertNotIn(b"RECENT", out)

    def test_utf8_mailbox_names(self) -> None:
        self.s.send(b"e ENABLE IMAP4rev2\r\n")
        name = "Caf\u00e9 & Bar".encode()
        out = self.s.send(b'c CREATE "' + name + b'"\r\n')
        self.assertIn(b"c OK", out)
        out = self.s.send(b'l LIST "" "Caf*"\r\n')
        self.assertIn(name, out)
        self.assertNotIn(b"&AOk-", out)
        rev1 = MemorySession(self, base=self.s.base)
        rev1.output()
        rev1.send(b"a LOGIN alice secret\r\n")
        self.assertIn(b"Caf&AOk- &- Bar", rev1.send(b'l LIST "" "Caf*"\r\n'))


class Rev2LoopbackTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.server = LoopbackServer(self)

    async def test_imaplib_enable_rev2(self) -> None:
        self.server.deliver(b"Subject: a\n\nx\n")

        def session(c: imaplib.IMAP4):
            c.enable("IMAP4rev2")
            c.select("INBOX")
            recent = c.untagged_responses.get("RECENT")
            typ, _ = c._simple_command("SEARCH", "ALL")
            return recent, typ, c.untagged_responses.pop("ESEARCH", None)

        recent, typ, esearch = await self.server.imap(session)
        self.assertIsNone(recent)
        self.assertEqual(typ, "OK")
        self.assertIn(b"ALL 1", esearch[0])
