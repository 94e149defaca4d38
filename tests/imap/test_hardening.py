"""
Named regression tests for IMAP security and robustness defects: wildcard
matching, mailbox name encodings, commands pipelined behind a disconnect.
(Disk-full behaviour: tests/store/test_disk_full.py.)
"""

from __future__ import annotations

import os
import random
import re
import socket

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.logger import LogLevel, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from mailserver.imap import listing
from mailserver.imap.folder_commands import decode_name
from mailserver.store.folders import FolderNameError, mutf7_decode
from tests.diskfull import DiskFull
from tests.imap.support import LoopbackServer, MemorySession, RawClient, deliver
from tests.imap.test_protocol import tagged
from tests.reactors import ThreadedClock


class WildcardTests(SynchronousTestCase):
    def test_regression_list_wildcards_linear(self) -> None:
        """
        Issue 17 item 1: ``*a*a*a*a*ab`` against a 200-character name took
        23 s in a backtracking regex (40x per extra wildcard); this one has
        nine wildcards and would not finish before the test times out.
        """
        name = "a" * 200
        existing = ["INBOX", name, "a" * 120 + "/" + "a" * 100]
        for pattern in ["*a*a*a*a*ab", "*a*a*a*a*a*a*a*a*ab", "%a%a%a%a%a%a%a%a%ab", "*%*%a*%*%a*%b"]:
            self.assertEqual(listing.list_folders(existing, "", pattern, {}), [])
        self.assertEqual({n for n, _ in listing.list_folders(existing, "", "*a*a*a*a*a*a*a*a*a", {})},
                         {name, "a" * 120, existing[2]})
        self.assertEqual({n for n, _ in listing.list_folders(existing, "", "%a%a%a%a%a%a%a%a%a", {})},
                         {name, "a" * 120})

    def test_regression_lsub_wildcards_linear(self) -> None:
        """LSUB did the same against a subscribed 255-character name."""
        subscribed = ["b" * 255, "b" * 100 + "/" + "b" * 100]
        pattern = "*b*b*b*b*b*b*b*b*b*bc"
        self.assertEqual(listing.list_subscribed(subscribed, [], "", pattern, {}), [])
        self.assertEqual(listing.list_subscribed(subscribed, [], "", "%b%b%b%b%b%b%b", {}),
                         [("b" * 100, ["\\Noselect"]), ("b" * 255, ["\\Noselect"])])

    def test_matcher_agrees_with_glob_semantics(self) -> None:
        cases = [
            ("*", "a/b", True), ("%", "a/b", False), ("a/%", "a/b", True), ("a%", "ab/c", False),
            ("a*c", "ab/c", True), ("%/%", "a/b", True), ("%/%", "a/b/c", False), ("a**%%b", "ab", True),
            ("", "", True), ("x", "", False), ("*%", "", True), ("a%b%c", "aXbYc", True), ("a%b", "a/b", False),
            ("inbox", "INBOX", True), ("INBOX*", "INBOX/x", True), ("%b", "bb", True), ("b%b%b", "bbb", True),
        ]
        for pattern, name, expected in cases:
            self.assertEqual(listing.Pattern("", pattern).match(name), expected, (pattern, name))

    def test_matcher_agrees_with_a_regex_on_short_inputs(self) -> None:
        """Against the old regex translation, on inputs too short for backtracking to hurt."""
        rng = random.Random(17)
        for _ in range(5000):
            name = "".join(rng.choice("ab/") for _ in range(rng.randint(0, 9)))
            pattern = "".join(rng.choice("ab/*%") for _ in range(rng.randint(0, 7)))
            regex = "".join(".*" if c == "*" else "[^/]*" if c == "%" else re.escape(c) for c in pattern)
            expected = re.fullmatch(regex, name, re.DOTALL) is not None
            self.assertEqual(listing.Pattern("", pattern).match(name), expected, (pattern, name))

    def test_regression_list_matching_runs_in_thread_pool(self) -> None:
        s = MemorySession(self)
        s.send(b"L LOGIN alice secret\r\n")
        s.reactor.pool.calls.clear()
        out = s.send(b'a LIST "" "*a*a*a*a*ab"\r\n')
        self.assertEqual(tagged(out, b"a"), b"a OK LIST completed")
        self.assertEqual([f.__name__ for f, _ in s.reactor.pool.calls], ["scan_and_match"])

    def test_regression_list_wildcards_session(self) -> None:
        """The probe of the issue, as a session: CREATE a 200-character name, then LIST."""
        s = MemorySession(self)
        s.send(b"L LOGIN alice secret\r\n")
        self.assertIn(b"c OK", s.send(b"c CREATE " + b"a" * 200 + b"\r\n"))
        out = s.send(b'a LIST "" "*a*a*a*a*a*a*a*a*a*ab"\r\n')
        self.assertEqual(out, b"a OK LIST completed\r\n")
        self.assertIn(b"b OK", s.send(b"b SUBSCRIBE " + b"a" * 200 + b"\r\n"))
        self.assertEqual(s.send(b'a LSUB "" "*a*a*a*a*a*a*a*a*a*ab"\r\n'), b"a OK LSUB completed\r\n")


class NameEncodingTests(SynchronousTestCase):
    def test_regression_mutf7_non_canonical_refused(self) -> None:
        """Issue 17 item 7: ``&AGEAYgBj-`` is not ``abc``, ``a&AC8-b`` not ``a/b`` (RFC 3501 5.1.3)."""
        for raw in [b"&AGEAYgBj-", b"a&AC8-b", b"&AOk-&AOk-", b"&AOl-", b"&AC4-"]:
            self.assertRaises(FolderNameError, decode_name, raw)
        self.assertEqual(decode_name(b"&AOkA6Q-"), "\u00e9\u00e9")
        self.assertEqual(decode_name(b"a&-b"), "a&b")
        # on disk "." is spelled &AC4- on purpose: disk names stay lenient
        self.assertEqual(mutf7_decode("a&AC4-b"), "a.b")

    def test_regression_mutf7_non_canonical_create_session(self) -> None:
        s = MemorySession(self)
        s.send(b"L LOGIN alice secret\r\n")
        for raw in [b"&AGEAYgBj-", b"a&AC8-b"]:
            self.assertTrue(tagged(s.send(b"c CREATE " + raw + b"\r\n"), b"c").startswith(b"c NO"))
        out = s.send(b'l LIST "" "*"\r\n')
        self.assertNotIn(b" abc\r\n", out)
        self.assertNotIn(b" a/b\r\n", out)

    def test_regression_list_pattern_naming_no_mailbox_is_ok(self) -> None:
        """``LIST "" "!#$&'+,-.%*"`` names no mailbox: OK with no matches, not NO."""
        s = MemorySession(self)
        s.send(b"L LOGIN alice secret\r\n")
        for pattern in [b"\"!#$&'+,-.%*\"", b'"&AGEAYgBj-"', b'"&Zz"']:
            self.assertEqual(s.send(b"a LIST \"\" " + pattern + b"\r\n"), b"a OK LIST completed\r\n")
            self.assertEqual(s.send(b"a LSUB \"\" " + pattern + b"\r\n"), b"a OK LSUB completed\r\n")


class DisconnectTests(SynchronousTestCase):
    def test_regression_pipelined_fetch_after_disconnect_is_quiet(self) -> None:
        """
        Issue 18 item 3: FETCHes pipelined behind a slow one, then a
        disconnect, logged one critical traceback each
        ("'NoneType' object has no attribute 'select'").
        """
        clock = ThreadedClock(synchronous=False)
        s = MemorySession(self, reactor=clock)
        deliver(s.maildir(), b"Subject: one\n\nbody\n")
        s.send(b"L LOGIN alice secret\r\n")
        clock.pool.run()
        s.send(b"S SELECT INBOX\r\n")
        clock.pool.run()
        self.assertIn(b"S OK", s.output())
        events: list[dict] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        s.send(b"".join(b"f%d FETCH 1 BODY[]\r\n" % i for i in range(200)))
        s.server.connectionLost(Failure(ConnectionError("peer went away")))
        s.transport.disconnected = True  # as a TCP transport after the peer's FIN: not "disconnecting"
        for _ in range(5):
            clock.pool.run()
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertEqual([e for e in events if e.get("log_level") is not None and e["log_level"].name in ("error", "critical")], [])
        self.assertEqual(clock.pool.pending, [])


class DiskFullSessionTests(SynchronousTestCase):
    """Issue "Hardening" and issue 13: IMAP after a disk-full episode."""

    def setUp(self) -> None:
        self.s = MemorySession(self)
        self.s.output()
        self.inbox = self.s.maildir()

    def age_directories(self) -> None:
        """Make new/ and cur/ look settled, so the index trusts their mtimes (as minutes later)."""
        for sub in ("new", "cur"):
            os.utime(os.path.join(self.inbox, sub), (1_600_000_000, 1_600_000_000))

    def test_regression_login_during_enospc(self) -> None:
        DiskFull().install(self)
        out = self.s.send(b"L LOGIN alice secret\r\n")
        self.assertIn(b"L OK", out)
        self.assertNotIn(b"SERVERBUG", out)

    def test_regression_select_after_enospc_reports_all_messages(self) -> None:
        self.s.send(b"L LOGIN alice secret\r\n")
        for n in range(36):
            deliver(self.inbox, b"Subject: %d\n\nx\n" % n)
        self.age_directories()
        disk = DiskFull("dovecot-uidlist").install(self)
        out = self.s.send(b"S SELECT INBOX\r\n")
        self.assertIn(b"S NO [SERVERBUG]", out)
        self.assertFalse(os.path.exists(os.path.join(self.inbox, "dovecot-uidlist.lock")))
        disk.full = False
        out = self.s.send(b"S SELECT INBOX\r\n")
        self.assertIn(b"* 36 EXISTS", out)
        self.assertIn(b"S OK", out)
        self.assertNotIn(b"[UIDVALIDITY 0]", out)

    def test_regression_append_enospc_no_then_ok_without_duplicate(self) -> None:
        self.s.send(b"L LOGIN alice secret\r\n")
        deliver(self.inbox, b"Subject: old\n\nx\n")
        self.assertIn(b"S OK", self.s.send(b"S SELECT INBOX\r\n"))
        self.age_directories()
        disk = DiskFull("dovecot-uidlist").install(self)
        message = b"Subject: new\r\n\r\nbody\r\n"
        append = b"A APPEND INBOX {%d+}\r\n" % len(message) + message + b"\r\n"
        self.assertIn(b"A NO [SERVERBUG]", self.s.send(append))
        disk.full = False
        out = self.s.send(append)
        self.assertIn(b"A OK [APPENDUID", out)
        self.assertNotIn(b"BYE", out)
        self.assertIn(b"* 2 EXISTS", out)
        names = os.listdir(os.path.join(self.inbox, "new")) + os.listdir(os.path.join(self.inbox, "cur"))
        self.assertEqual(len(names), 2)


class LoopbackDisconnectTests(TestCase):
    timeout = 60

    async def test_regression_pipelined_fetches_then_close_log_nothing(self) -> None:
        """The probe of issue 18 over TCP: 2,000 pipelined FETCHes, then the client closes."""
        server = LoopbackServer(self)
        server.deliver(b"Subject: big\n\n" + b"x" * 20000 + b"\n")
        events: list[dict] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)

        def session(client: RawClient) -> None:
            client.login()
            assert client.command(b"S SELECT INBOX")[-1].startswith(b"S OK")
            client.send(b"".join(b"f%d FETCH 1 BODY.PEEK[]\r\n" % i for i in range(2000)))
            client.sock.shutdown(socket.SHUT_RDWR)

        await server.raw(session)
        for _ in range(500):  # until the server has seen the close and finished its command
            if server.factory.servers and all(s.lost for s in server.factory.servers):
                break
            await deferLater(reactor, 0.01, lambda: None)
        await deferLater(reactor, 0.1, lambda: None)  # a command still in the thread pool
        self.assertTrue(all(s.lost for s in server.factory.servers))
        errors = [e for e in events if e.get("log_level") in (LogLevel.error, LogLevel.critical)]
        self.assertEqual(errors, [])
        self.assertEqual(self.flushLoggedErrors(), [])
