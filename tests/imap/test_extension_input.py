"""
Hostile input to the extension commands (SELECT parameters, FETCH and
STORE modifiers, SORT, THREAD, SEARCH RETURN, extended LIST, COMPRESS):
each answer is a tagged OK, NO or BAD, never an internal error.
"""

from __future__ import annotations

import random

from twisted.trial.unittest import SynchronousTestCase

from tests.imap.support import MemorySession, deliver

TEMPLATES = [
    b"SELECT INBOX {}", b"EXAMINE INBOX {}", b"FETCH 1:* (FLAGS) {}", b"UID FETCH 1:* (FLAGS) {}",
    b"STORE 1 {} +FLAGS (\\Seen)", b"SORT {} UTF-8 ALL", b"UID SORT (DATE) {}", b"THREAD {} UTF-8 ALL",
    b"THREAD REFERENCES UTF-8 {}", b"SEARCH RETURN {} ALL", b"SEARCH {}", b"LIST {} \"\" *",
    b"LIST \"\" {}", b"LIST \"\" * RETURN {}", b"STATUS INBOX {}", b"ENABLE {}", b"FETCH {} (UID)",
]
PIECES = [
    b"(", b")", b"()", b"(CONDSTORE)", b"(QRESYNC (1 1))", b"(QRESYNC (1 1 1:*))", b"(QRESYNC (x", b"QRESYNC",
    b"(CHANGEDSINCE 1)", b"(CHANGEDSINCE 99999999999999999999)", b"(CHANGEDSINCE -1)", b"(VANISHED)",
    b"(CHANGEDSINCE 1 VANISHED)", b"(UNCHANGEDSINCE 0)", b"(UNCHANGEDSINCE)", b"(DATE)", b"(REVERSE)",
    b"(REVERSE REVERSE DATE)", b"REFERENCES", b"ORDEREDSUBJECT", b"KOI8-R", b"UTF-8", b"(MIN MAX COUNT ALL SAVE)",
    b"(SAVE)", b"$", b"$,1", b"MODSEQ", b"MODSEQ 1", b"MODSEQ \"/flags/\\\\Seen\" all 1", b"MODSEQ \"x\" bogus 1",
    b"(SUBSCRIBED RECURSIVEMATCH)", b"(SPECIAL-USE)", b"(STATUS (MESSAGES SIZE HIGHESTMODSEQ))", b"(STATUS ())",
    b"(a b c)", b"*", b"%", b"\"\"", b"{3}", b"\x00", b"\xff", b"(HIGHESTMODSEQ SIZE)", b"CONDSTORE QRESYNC",
]


class HostileExtensionInputTests(SynchronousTestCase):
    def test_regression_no_internal_errors(self) -> None:
        s = MemorySession(self)
        s.output()
        for n in range(3):
            deliver(s.maildir(), b"Subject: Re: m%d\nMessage-ID: <%d@x>\nReferences: <%d@x>\n\nx\n" % (n, n, n - 1))
        s.send(b"a LOGIN alice secret\r\ns SELECT INBOX\r\n")
        rng = random.Random(4978)
        for i in range(600):
            template = rng.choice(TEMPLATES)
            args = b" ".join(rng.choice(PIECES) for _ in range(rng.randint(1, 3)))
            tag = b"t%d" % i
            out = s.send(tag + b" " + template.replace(b"{}", args) + b"\r\n")
            if b"{3}" in args and b"+ " in out:
                out += s.send(b"abc\r\n")
            self.assertIn(tag + b" ", out, template.replace(b"{}", args))
            self.assertNotIn(b"Internal server error", out, template.replace(b"{}", args))
            self.assertNotIn(b"SERVERBUG", out, template.replace(b"{}", args))
            if s.server.selected is None:
                s.send(b"s SELECT INBOX\r\n")
