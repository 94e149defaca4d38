"""
ESEARCH (RFC 4731), SEARCHRES (RFC 5182) and STATUS=SIZE (RFC 8438).
"""

from __future__ import annotations

import imaplib

from twisted.trial.unittest import SynchronousTestCase, TestCase

from mailserver.imap.esearch import Found, respond
from tests.imap.support import LoopbackServer, MemorySession, deliver


class RespondTests(SynchronousTestCase):
    found = [Found(1, 10, 5), Found(2, 11, 7), Found(4, 20, 6)]

    def test_options(self) -> None:
        r = respond(b"a", False, frozenset({"MIN", "MAX", "COUNT", "ALL"}), self.found, False)
        self.assertEqual(r.line, b'* ESEARCH (TAG "a") MIN 1 MAX 4 ALL 1:2,4 COUNT 3')
        self.assertIsNone(r.saved)
        r = respond(b"a", True, frozenset({"ALL"}), self.found, False)
        self.assertEqual(r.line, b'* ESEARCH (TAG "a") UID ALL 10:11,20')
        self.assertEqual(respond(b"a", True, frozenset({"MIN"}), [], False).line, b'* ESEARCH (TAG "a") UID')
        self.assertEqual(respond(b"a", False, frozenset({"COUNT"}), [], True).line, b'* ESEARCH (TAG "a") COUNT 0')

    def test_modseq_of_what_is_shown(self) -> None:
        self.assertTrue(respond(b"a", False, frozenset({"MIN"}), self.found, True).line.endswith(b"MODSEQ 5"))
        self.assertTrue(respond(b"a", False, frozenset({"MAX"}), self.found, True).line.endswith(b"MODSEQ 6"))
        self.assertTrue(respond(b"a", False, frozenset({"ALL"}), self.found, True).line.endswith(b"MODSEQ 7"))

    def test_save(self) -> None:
        r = respond(b"a", False, frozenset({"SAVE"}), self.found, False)
        self.assertEqual((r.line, r.saved), (None, [10, 11, 20]))
        r = respond(b"a", False, frozenset({"SAVE", "MIN", "MAX"}), self.found, False)
        self.assertEqual(r.saved, [10, 20])
        r = respond(b"a", False, frozenset({"SAVE", "MIN", "COUNT"}), self.found, False)
        self.assertEqual(r.saved, [10, 11, 20])


class SessionTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.s = MemorySession(self)
        self.s.output()
        for n in range(5):
            deliver(self.s.maildir(), b"Subject: m%d\n\nbody %d\n" % (n, n), when=1_700_000_000 + n)
        self.s.send(b"a LOGIN alice secret\r\ns SELECT INBOX\r\n")

    def test_capabilities(self) -> None:
        out = self.s.send(b"c CAPABILITY\r\n")
        for cap in (b" ESEARCH", b" SEARCHRES", b" STATUS=SIZE"):
            self.assertIn(cap, out)

    def test_esearch(self) -> None:
        self.s.send(b"t STORE 2,4 +FLAGS.SILENT (\\Seen)\r\n")
        out = self.s.send(b"x UID SEARCH RETURN (MIN COUNT) SEEN\r\n")
        self.assertIn(b'* ESEARCH (TAG "x") UID MIN 2 COUNT 2\r\n', out)
        out = self.s.send(b"x SEARCH RETURN () CHARSET UTF-8 UNSEEN\r\n")
        self.assertIn(b'* ESEARCH (TAG "x") ALL 1,3,5\r\n', out)
        # RECENT still parses as a key, not as RETURN
        self.assertIn(b"* SEARCH", self.s.send(b"x SEARCH RECENT\r\n"))
        self.assertIn(b"x BAD", self.s.send(b"x SEARCH RETURN (FANCY) ALL\r\n"))

    def test_searchres_dollar(self) -> None:
        self.s.send(b"t STORE 2,4 +FLAGS.SILENT (\\Seen)\r\n")
        self.assertNotIn(b"ESEARCH", self.s.send(b"x SEARCH RETURN (SAVE) SEEN\r\n"))
        out = self.s.send(b"f FETCH $ (UID)\r\n")
        self.assertIn(b"* 2 FETCH (UID 2)", out)
        self.assertIn(b"* 4 FETCH (UID 4)", out)
        self.assertEqual(out.count(b"FETCH ("), 2)
        out = self.s.send(b"x UID SEARCH UID $ SUBJECT m3\r\n")
        self.assertIn(b"* SEARCH 4\r\n", out)
        self.s.send(b"t STORE $ +FLAGS.SILENT (\\Deleted)\r\nx EXPUNGE\r\n")
        self.assertIn(b"* SEARCH\r\n", self.s.send(b"x SEARCH $\r\n"))
        # a failed SAVE empties $
        self.s.send(b"x SEARCH RETURN (SAVE) ALL\r\n")
        self.assertIn(b"x NO", self.s.send(b"x SEARCH RETURN (SAVE) CHARSET KOI8-R ALL\r\n"))
        self.assertIn(b"* SEARCH\r\n", self.s.send(b"x SEARCH $\r\n"))

    def test_status_size(self) -> None:
        out = self.s.send(b"x STATUS INBOX (SIZE MESSAGES)\r\n")
        expected = sum(len(b"Subject: m%d\r\n\r\nbody %d\r\n" % (n, n)) for n in range(5))
        self.assertIn(b"* STATUS INBOX (SIZE %d MESSAGES 5)" % expected, out)


class LoopbackTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.server = LoopbackServer(self)

    async def test_imaplib_esearch_and_status_size(self) -> None:
        for n in range(3):
            self.server.deliver(b"Subject: m%d\n\nx\n" % n)

        def session(c: imaplib.IMAP4):
            c.select("INBOX")
            typ, data = c._simple_command("SEARCH", "RETURN", "(COUNT MAX)", "ALL")
            esearch = c.untagged_responses.pop("ESEARCH", None)
            return typ, esearch, c.status("INBOX", "(SIZE)")[1]

        typ, esearch, status = await self.server.imap(session)
        self.assertEqual(typ, "OK")
        self.assertIn(b"MAX 3 COUNT 3", esearch[0])
        self.assertIn(b"SIZE", status[0])
