"""
CONDSTORE and QRESYNC (RFC 7162): MODSEQ per message, persisted, bumped
by STORE, by other sessions and programs (POP3 renaming a file), by
delivery and by expunge; FETCH CHANGEDSINCE, STORE UNCHANGEDSINCE, SEARCH
MODSEQ, STATUS HIGHESTMODSEQ, SELECT (QRESYNC ...) with VANISHED (EARLIER).
"""

from __future__ import annotations

import imaplib
import os
import re

from twisted.internet.interfaces import ITCPTransport
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from mailserver.store.modseq import FILE_NAME, ModseqState
from tests.imap.support import LoopbackServer, MemorySession, _Address, deliver


def highest(output: bytes) -> int:
    return int(re.search(rb"HIGHESTMODSEQ (\d+)", output).group(1))


class CondstoreSessionTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.s = MemorySession(self)
        self.s.output()
        for n in range(3):
            deliver(self.s.maildir(), b"Subject: m%d\n\nbody\n" % n)
        self.s.send(b"a LOGIN alice secret\r\n")

    def select(self, extra: bytes = b"") -> bytes:
        out = self.s.send(b"s SELECT INBOX" + extra + b"\r\n")
        self.assertIn(b"s OK", out)
        return out

    def test_capabilities_and_enable(self) -> None:
        out = self.s.send(b"c CAPABILITY\r\n")
        self.assertIn(b" CONDSTORE", out)
        self.assertIn(b" QRESYNC", out)
        out = self.s.send(b"e ENABLE QRESYNC\r\n")
        self.assertIn(b"* ENABLED CONDSTORE QRESYNC\r\n", out)
        self.assertIn(b"* ENABLED\r\n", self.s.send(b"e ENABLE CONDSTORE X-UNKNOWN\r\n"))

    def test_select_reports_highestmodseq_and_store_bumps_it(self) -> None:
        first = highest(self.select(b" (CONDSTORE)"))
        self.assertGreaterEqual(first, 1)
        out = self.s.send(b"t STORE 1 +FLAGS (\\Seen)\r\n")
        match = re.search(rb"\* 1 FETCH \(FLAGS \(\\Recent \\Seen\) MODSEQ \((\d+)\)\)", out)
        self.assertIsNotNone(match, out)
        self.assertGreater(int(match.group(1)), first)
        out = self.s.send(b"f FETCH 1:* (UID FLAGS) (CHANGEDSINCE %d)\r\n" % first)
        self.assertEqual(out.count(b" FETCH ("), 1)
        self.assertIn(b"MODSEQ (%d)" % int(match.group(1)), out)
        status = self.s.send(b"u STATUS INBOX (HIGHESTMODSEQ)\r\n")
        self.assertEqual(highest(status), int(match.group(1)))

    def test_store_unchangedsince_reports_modified(self) -> None:
        base = highest(self.select())
        self.s.send(b"t STORE 2 +FLAGS.SILENT (\\Answered)\r\n")
        out = self.s.send(b"t UID STORE 1:3 (UNCHANGEDSINCE %d) +FLAGS.SILENT (\\Flagged)\r\n" % base)
        self.assertIn(b"t OK [MODIFIED 2] Conditional STORE failed", out)
        # .SILENT still tells the new MODSEQ of what changed
        self.assertIn(b"* 1 FETCH (UID 1 MODSEQ (", out)
        self.assertNotIn(b"* 2 FETCH", out)
        flags = self.s.send(b"f FETCH 2 (FLAGS)\r\n")
        self.assertNotIn(b"\\Flagged", flags)
        out = self.s.send(b"t STORE 1 (UNCHANGEDSINCE 0) +FLAGS (\\Draft)\r\n")
        self.assertIn(b"[MODIFIED 1]", out)

    def test_search_modseq(self) -> None:
        base = highest(self.select())
        self.s.send(b"t STORE 3 +FLAGS.SILENT (\\Seen)\r\n")
        out = self.s.send(b'q SEARCH MODSEQ "/flags/\\\\Seen" all %d\r\n' % (base + 1))
        self.assertIn(b"* SEARCH 3 (MODSEQ %d)\r\n" % (base + 1), out)
        self.assertIn(b"* SEARCH\r\n", self.s.send(b"q SEARCH MODSEQ %d\r\n" % (base + 5)))

    def test_qresync_expunge_is_vanished(self) -> None:
        self.s.send(b"e ENABLE QRESYNC\r\n")
        self.select()
        self.s.send(b"t STORE 2 +FLAGS.SILENT (\\Deleted)\r\n")
        out = self.s.send(b"x EXPUNGE\r\n")
        self.assertIn(b"* VANISHED 2\r\n", out)
        self.assertNotIn(b"EXPUNGE\r\n", out.replace(b"x OK EXPUNGE completed", b""))

    def test_select_qresync_resynchronises(self) -> None:
        self.s.send(b"e ENABLE QRESYNC\r\n")
        out = self.select()
        uidvalidity = int(re.search(rb"UIDVALIDITY (\d+)", out).group(1))
        known = highest(out)
        self.s.send(b"t STORE 1 +FLAGS.SILENT (\\Seen)\r\nt STORE 2 +FLAGS.SILENT (\\Deleted)\r\nx EXPUNGE\r\n")
        self.s.send(b"u UNSELECT\r\n")
        out = self.s.send(b"s SELECT INBOX (QRESYNC (%d %d 1:3))\r\n" % (uidvalidity, known))
        self.assertIn(b"* VANISHED (EARLIER) 2\r\n", out)
        self.assertIn(b"* 1 FETCH (UID 1 FLAGS (\\Seen) MODSEQ (", out)
        self.assertNotIn(b"UID 3", out)
        self.assertLess(out.index(b"VANISHED"), out.index(b"s OK"))
        # a stale UIDVALIDITY: no resync data
        out = self.s.send(b"s SELECT INBOX (QRESYNC (%d %d))\r\n" % (uidvalidity + 1, known))
        self.assertNotIn(b"VANISHED", out)
        # UID FETCH ... (CHANGEDSINCE m VANISHED)
        out = self.s.send(b"f UID FETCH 1:* (FLAGS) (CHANGEDSINCE %d VANISHED)\r\n" % known)
        self.assertIn(b"* VANISHED (EARLIER) 2\r\n", out)

    def test_qresync_needs_enable(self) -> None:
        out = self.s.send(b"s SELECT INBOX (QRESYNC (1 1))\r\n")
        self.assertIn(b"s BAD", out)
        self.select()
        self.assertIn(b"f BAD", self.s.send(b"f UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)\r\n"))

    def test_regression_pop3_seen_bumps_modseq(self) -> None:
        """A flag changed by renaming the file (POP3, another program) gets a new MODSEQ and an unsolicited FETCH."""
        base = highest(self.select(b" (CONDSTORE)"))
        cur = os.path.join(self.s.maildir(), "cur")
        name = sorted(os.listdir(cur))[0]
        os.rename(os.path.join(cur, name), os.path.join(cur, name.partition(":")[0] + ":2,S"))
        out = self.s.send(b"n NOOP\r\n")
        match = re.search(rb"FLAGS \(\\Recent \\Seen\) MODSEQ \((\d+)\)", out)
        self.assertIsNotNone(match, out)
        self.assertGreater(int(match.group(1)), base)

    def test_delivery_bumps_modseq(self) -> None:
        base = highest(self.select())
        deliver(self.s.maildir(), b"Subject: late\n\nbody\n")
        self.s.send(b"n NOOP\r\n")
        out = self.s.send(b"f FETCH 1:* (UID) (CHANGEDSINCE %d)\r\n" % base)
        self.assertIn(b"UID 4 MODSEQ (%d)" % (base + 1), out)
        self.assertEqual(out.count(b"FETCH ("), 1)


class ModseqStateTests(SynchronousTestCase):
    def test_survives_reload_and_never_goes_backwards(self) -> None:
        folder = self.mktemp()
        os.makedirs(folder)
        state = ModseqState(folder)
        state.update(7, [(1, ""), (2, "S")])
        state.update(7, [(1, "F"), (2, "S")])
        state.update(7, [(1, "F")])
        self.assertEqual(state.highest, 3)
        again = ModseqState(folder)
        again.update(7, [(1, "F")])
        self.assertEqual((again.highest, again.modseqs), (3, {1: 2}))
        self.assertEqual(again.expunged_since(2), ([2], True))
        # a new UIDVALIDITY starts a new UID space, not a lower HIGHESTMODSEQ
        again.update(8, [(1, "")])
        self.assertEqual(again.highest, 4)
        self.assertEqual(again.expunged_since(0), ([], False))

    def test_torn_line_ignored_and_expunges_bounded(self) -> None:
        folder = self.mktemp()
        os.makedirs(folder)
        state = ModseqState(folder, keep_expunged=2)
        state.update(1, [(u, "") for u in range(1, 6)])
        for n in range(5, 0, -1):
            state.update(1, [(u, "") for u in range(1, n)])
        self.assertEqual(len(state.expunged), 2)
        self.assertEqual(state.expunged_since(0)[1], False)
        with open(os.path.join(folder, FILE_NAME), "a") as f:
            f.write("12 9")  # a torn append: no newline, but parsable... and garbage
            f.write("\nE x y\n")
        reloaded = ModseqState(folder)
        reloaded.update(1, [])
        self.assertGreaterEqual(reloaded.highest, state.highest)


class CondstoreLoopbackTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.server = LoopbackServer(self)

    async def test_imaplib_highestmodseq_survives_restart(self) -> None:
        for n in range(3):
            self.server.deliver(b"Subject: m%d\n\nbody\n" % n)

        def session(c: imaplib.IMAP4):
            c.enable("CONDSTORE")
            c.select("INBOX")
            before = int(c.untagged_responses["HIGHESTMODSEQ"][-1])
            c.uid("STORE", "2", "+FLAGS", "(\\Flagged)")
            typ, data = c.uid("FETCH", "1:*", "(FLAGS)", "(CHANGEDSINCE %d)" % before)
            return before, data, c.status("INBOX", "(HIGHESTMODSEQ)")[1]

        before, data, status = await self.server.imap(session)
        self.assertEqual(len(data), 1)
        self.assertIn(b"UID 2", data[0])
        after = int(re.search(rb"HIGHESTMODSEQ (\d+)", status[0]).group(1))
        self.assertGreater(after, before)
        await self.server.restart()

        def again(c: imaplib.IMAP4):
            c.select("INBOX")
            return int(c.untagged_responses["HIGHESTMODSEQ"][-1])

        self.assertEqual(await self.server.imap(again), after)


class NoDelayTests(SynchronousTestCase):
    def test_regression_imap_sets_tcp_nodelay(self) -> None:
        """Without TCP_NODELAY a FETCH CHANGEDSINCE answered in two writes waited 40 ms for a delayed ACK."""

        @implementer(ITCPTransport)
        class TCPTransport(StringTransport):
            nodelay = False

            def setTcpNoDelay(self, enabled: bool) -> None:
                self.nodelay = enabled

        transport = TCPTransport(peerAddress=_Address("127.0.0.1", 40000))
        MemorySession(self, transport=transport)
        self.assertTrue(transport.nodelay)


class FetchModseqTests(SynchronousTestCase):
    def test_regression_flags_carry_modseq_once_enabled(self) -> None:
        """IMAPClient's live test_fetch: with CONDSTORE on, a FETCH of FLAGS also answers MODSEQ."""
        s = MemorySession(self)
        s.output()
        deliver(s.maildir(), b"Subject: x\n\ny\n")
        s.send(b"a LOGIN alice secret\r\ns SELECT INBOX\r\n")
        self.assertNotIn(b"MODSEQ", s.send(b"f FETCH 1 (FLAGS)\r\n"))
        s.send(b"n NOOP\r\n")
        s.send(b"u UNSELECT\r\ne ENABLE CONDSTORE\r\ns SELECT INBOX\r\n")
        self.assertRegex(s.send(b"f FETCH 1 (FLAGS INTERNALDATE)\r\n"), rb"\* 1 FETCH \(FLAGS \([^)]*\) INTERNALDATE \"[^\"]+\" MODSEQ \(\d+\)\)")
        self.assertNotIn(b"MODSEQ", s.send(b"f FETCH 1 (UID)\r\n"))
