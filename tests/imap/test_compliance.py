"""
Named regression tests for the compliance gaps of issue "IMAP for modern
clients": \\Recent after COPY/MOVE/APPEND by another session, SEARCH on
addresses with comments, SUBSCRIBE to a missing mailbox.  (ENVELOPE names
from comments: tests/imap/test_structure.py; LIST patterns naming no
mailbox: tests/imap/test_hardening.py.)
"""

from __future__ import annotations

from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from tests.imap.support import MemorySession, _Address, deliver
from tests.imap.test_protocol import tagged


class TwoSessions(SynchronousTestCase):
    """Two connections to one factory: one folder index, as in the server."""

    def setUp(self) -> None:
        self.s = MemorySession(self)
        self.s.output()
        self.transport = StringTransport(peerAddress=_Address("127.0.0.1", 40001))
        self.other = self.s.factory.buildProtocol(self.transport.getPeer())
        self.other.makeConnection(self.transport)
        self.addCleanup(self.other.connectionLost, None)
        self.s.send(b"L LOGIN alice secret\r\n")
        self.send_other(b"L LOGIN alice secret\r\n")

    def send_other(self, data: bytes) -> bytes:
        self.other.dataReceived(data)
        out = self.transport.value()
        self.transport.clear()
        return out


class RecentTests(TwoSessions):
    def setUp(self) -> None:
        super().setUp()
        deliver(self.s.maildir(), b"Subject: one\n\nx\n")
        self.send_other(b"c CREATE Archive\r\n")
        self.assertIn(b"* 1 RECENT", self.s.send(b"S SELECT INBOX\r\n"))

    def assert_recent_for_selecting_session(self, command: bytes) -> None:
        self.assertIn(b"OK", tagged(self.send_other(command), command.split(b" ", 1)[0]))
        out = self.s.send(b"n NOOP\r\n")
        self.assertIn(b"* 2 EXISTS", out)
        self.assertIn(b"* 2 RECENT", out)
        out = self.s.send(b"f FETCH 2 FLAGS\r\n")
        self.assertIn(b"\\Recent", out)
        # recent for one session only
        self.assertIn(b"* 0 RECENT", self.send_other(b"x EXAMINE INBOX\r\n"))

    def test_regression_recent_after_other_session_append_with_flags(self) -> None:
        message = b"Subject: two\r\n\r\nx\r\n"
        self.assert_recent_for_selecting_session(b"a APPEND INBOX (\\Seen) {%d+}\r\n" % len(message) + message + b"\r\n")

    def test_recent_after_other_session_append(self) -> None:
        self.assert_recent_for_selecting_session(b"a APPEND INBOX {3+}\r\nx\r\n\r\n")

    def test_regression_recent_after_other_session_copy(self) -> None:
        deliver(self.s.maildir() + "/.Archive", b"Subject: archived\n\nx\n")
        self.send_other(b"s SELECT Archive\r\n")
        self.assert_recent_for_selecting_session(b"c COPY 1 INBOX\r\n")

    def test_regression_recent_after_other_session_move(self) -> None:
        deliver(self.s.maildir() + "/.Archive", b"Subject: archived\n\nx\n")
        self.send_other(b"s SELECT Archive\r\n")
        self.assert_recent_for_selecting_session(b"m MOVE 1 INBOX\r\n")

    def test_status_counts_unclaimed_copies(self) -> None:
        self.s.send(b"u UNSELECT\r\n")
        deliver(self.s.maildir() + "/.Archive", b"Subject: archived\n\nx\n")
        self.send_other(b"s SELECT Archive\r\nc COPY 1 INBOX\r\n")
        self.assertIn(b"(MESSAGES 2 RECENT 1)", self.s.send(b"t STATUS INBOX (MESSAGES RECENT)\r\n"))


class SearchAddressTests(SynchronousTestCase):
    def test_regression_search_from_ignores_address_comments(self) -> None:
        s = MemorySession(self)
        deliver(s.maildir(), b"From: <user-from (comment)@ (comment) domain.org>\nSubject: a\n\nx\n")
        deliver(s.maildir(), b"From: Real Name <other@domain.org>\nTo: x@y (Xavier)\nSubject: b\n\nx\n")
        s.send(b"L LOGIN alice secret\r\nS SELECT INBOX\r\n")
        self.assertIn(b"* SEARCH 1\r\n", s.send(b"a SEARCH FROM user-from@domain.org\r\n"))
        self.assertIn(b"* SEARCH 1\r\n", s.send(b"a SEARCH FROM comment\r\n"))  # the header text still counts
        self.assertIn(b"* SEARCH 2\r\n", s.send(b'a SEARCH FROM "Real Name <other@domain.org>"\r\n'))
        self.assertIn(b"* SEARCH 2\r\n", s.send(b"a SEARCH TO x@y\r\n"))


class SubscribeTests(SynchronousTestCase):
    def test_regression_subscribe_missing_mailbox_is_no(self) -> None:
        s = MemorySession(self)
        s.send(b"L LOGIN alice secret\r\n")
        self.assertIn(b"a NO [NONEXISTENT]", s.send(b"a SUBSCRIBE nowhere\r\n"))
        self.assertEqual(s.send(b'l LSUB "" nowhere\r\n'), b"l OK LSUB completed\r\n")
        s.send(b"c CREATE somewhere\r\n")
        self.assertIn(b"b OK", s.send(b"b SUBSCRIBE somewhere\r\n"))
