"""
The IMAP server over StringTransport, disk work inline and time from a
Clock: greeting, login (delay, logging), limits, bad input, pipelining,
IDLE, timeouts.
"""

from __future__ import annotations

import os

from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from tests.imap.support import MemorySession, deliver


def tagged(output: bytes, tag: bytes) -> bytes:
    for line in output.split(b"\r\n"):
        if line.startswith(tag + b" "):
            return line
    raise AssertionError(f"no {tag!r} response in {output!r}")


class GreetingAndLoginTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.s = MemorySession(self, login_failure_delay=3.0)
        self.greeting = self.s.output()

    def test_greeting_lists_capabilities(self) -> None:
        self.assertTrue(self.greeting.startswith(b"* OK [CAPABILITY IMAP4rev1 "))
        for cap in [b"IDLE", b"UIDPLUS", b"MOVE", b"NAMESPACE", b"SPECIAL-USE", b"CHILDREN",
                    b"UNSELECT", b"ID", b"ENABLE", b"LITERAL+", b"AUTH=PLAIN"]:
            self.assertIn(cap, self.greeting)

    def test_failed_login_is_delayed_and_logged(self) -> None:
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        out = self.s.send(b"a LOGIN alice wrong\r\n")
        self.assertEqual(out, b"")  # nothing until the delay is over
        self.s.reactor.advance(2.9)
        self.assertEqual(self.s.output(), b"")
        self.s.reactor.advance(0.2)
        self.assertEqual(tagged(self.s.output(), b"a"), b"a NO [AUTHENTICATIONFAILED] Authentication failed")
        failures = [e for e in events if e.get("auth_failure")]
        self.assertEqual(len(failures), 1)
        self.assertEqual((failures[0]["service"], failures[0]["rip"]), ("imap", "127.0.0.1"))
        self.assertEqual(failures[0]["user"], "alice")
        # the session goes on
        self.assertIn(b"b OK", self.s.send(b"b LOGIN alice secret\r\n"))

    def test_commands_wait_during_the_delay(self) -> None:
        self.s.send(b"a LOGIN alice wrong\r\nb NOOP\r\n")
        self.assertEqual(self.s.output(), b"")
        self.s.reactor.advance(3)
        out = self.s.output()
        self.assertLess(out.index(b"a NO"), out.index(b"b OK"))

    def test_login_creates_special_folders(self) -> None:
        out = self.s.send(b"a LOGIN alice secret\r\n")
        self.assertIn(b"a OK [CAPABILITY", out)
        out = self.s.send(b'b LIST "" "*"\r\n')
        self.assertIn(b'* LIST (\\HasNoChildren \\Sent) "/" Sent', out)
        self.assertIn(b'* LIST (\\HasNoChildren \\Trash) "/" Trash', out)

    def test_authenticate_plain(self) -> None:
        out = self.s.send(b"a AUTHENTICATE PLAIN\r\n")
        self.assertEqual(out, b"+ \r\n")  # the space is required (RFC 3501 continue-req)
        out = self.s.send(b"AGFsaWNlAHNlY3JldA==\r\n")  # \0alice\0secret
        self.assertIn(b"a OK", out)
        self.assertEqual(self.s.server.state, "auth")

    def test_authenticate_plain_initial_response(self) -> None:
        out = self.s.send(b"a AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA==\r\n")
        self.assertIn(b"a OK", out)

    def test_authenticate_cancel_and_garbage(self) -> None:
        self.s.send(b"a AUTHENTICATE PLAIN\r\n")
        self.assertIn(b"a BAD", self.s.send(b"*\r\n"))
        self.s.send(b"b AUTHENTICATE PLAIN\r\n")
        self.assertIn(b"b BAD", self.s.send(b"%%%\r\n"))
        self.assertIn(b"c NO", self.s.send(b"c AUTHENTICATE CRAM-MD5\r\n"))

    def test_mailbox_commands_need_login(self) -> None:
        out = self.s.send(b"a SELECT INBOX\r\n")
        self.assertTrue(tagged(out, b"a").startswith(b"a BAD"))
        self.assertEqual(self.s.server.state, "unauth")


class BadInputTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.s = MemorySession(self, literal_limit=1000, string_literal_limit=100)
        self.s.output()
        deliver(self.s.maildir(), b"Subject: one\n\nbody\n")
        self.s.send(b"L LOGIN alice secret\r\nS SELECT INBOX\r\n")

    def check_bad(self, command: bytes, tag: bytes = b"x") -> bytes:
        line = tagged(self.s.send(command + b"\r\n"), tag)
        self.assertTrue(line.startswith(tag + b" BAD "), line)
        # the session continues
        self.assertIn(b"n OK", self.s.send(b"n NOOP\r\n"))
        return line

    def test_unknown_command(self) -> None:
        self.assertIn(b"Unknown command", self.check_bad(b"x FROBNICATE"))

    def test_missing_command_and_empty_line(self) -> None:
        self.check_bad(b"x")
        self.assertIn(b"* BAD", self.s.send(b"\r\n"))

    def test_bad_sequence_sets(self) -> None:
        for bad in [b"x FETCH 0 FLAGS", b"x FETCH 1:a FLAGS", b"x FETCH 5 FLAGS", b"x STORE ,, +FLAGS (\\Seen)",
                    b"x FETCH 4294967296 FLAGS", b"x COPY -1 Trash"]:
            self.check_bad(bad)

    def test_broken_syntax(self) -> None:
        for bad in [b'x SELECT "INBOX', b"x FETCH 1 (FLAGS", b"x FETCH 1 BODY[HEADER.FIELDS]", b"x FETCH 1 FOO",
                    b"x STORE 1 FLAGS.QUIET (\\Seen)", b"x SEARCH FROM", b"x SEARCH BEFORE 32-Foo-2020",
                    b"x STATUS INBOX (BOGUS)", b"x LOGIN a b", b"x UID FROB 1", b"x NOOP extra",
                    b"x FETCH 1 BODY[]<0.0>", b'x APPEND INBOX "bad date" {1+}\r\nx', b"x SEARCH (SEEN"]:
            self.check_bad(bad)

    def test_star_in_empty_mailbox_is_not_an_error(self) -> None:
        self.s.send(b"c CREATE Empty\r\ns SELECT Empty\r\n")
        self.assertEqual(self.s.send(b"f FETCH 1:* FLAGS\r\n"), b"f OK FETCH completed\r\n")
        self.check_bad(b"x FETCH 1 FLAGS")

    def test_unsupported_charset(self) -> None:
        out = self.s.send(b"x SEARCH CHARSET KOI8-R ALL\r\n")
        self.assertIn(b"x NO [BADCHARSET (US-ASCII UTF-8)]", out)

    def test_synchronizing_literal_too_big_refused_before_reading(self) -> None:
        out = self.s.send(b"x APPEND INBOX {1001}\r\n")
        self.assertEqual(out, b"x NO [TOOBIG] Message too big (limit 1000 octets)\r\n")
        out = self.s.send(b"y LOGIN {101}\r\n")
        self.assertEqual(out, b"y BAD Literal too big (limit 100 octets)\r\n")
        self.assertIn(b"n OK", self.s.send(b"n NOOP\r\n"))

    def test_non_synchronizing_literal_too_big_closes(self) -> None:
        out = self.s.send(b"x APPEND INBOX {1001+}\r\n")
        self.assertIn(b"x BAD Literal too big", out)
        self.assertIn(b"* BYE", out)
        self.assertTrue(self.s.transport.disconnecting)

    def test_line_too_long(self) -> None:
        out = self.s.send(b"x NOOP " + b"a" * 70000 + b"\r\n")
        self.assertIn(b"* BYE", out)
        self.assertTrue(self.s.transport.disconnecting)

    def test_escaping_mailbox_names_refused(self) -> None:
        import os

        parent = os.path.dirname(self.s.base)
        before = sorted(os.walk(parent))
        for name in [b'"../x"', b'"/etc"', b'"a/../../b"', b'"x\\\\y/.."', b"{2}\r\n.."]:
            self.assertIn(b"x NO", self.s.send(b"x CREATE " + name + b"\r\n"), name)
        for command in [b'x RENAME Sent "../../evil"', b'x COPY 1 "../x"', b'x MOVE 1 "/abs"',
                        b'x APPEND "/tmp/x" {1+}\r\nx', b'x STATUS ".." (MESSAGES)', b'x DELETE "../.."',
                        b'x SUBSCRIBE "a/../../b"', b'x SELECT "../alice"']:
            self.assertIn(b"x NO", self.s.send(command + b"\r\n"), command)
        self.assertEqual(sorted(os.walk(parent)), before)


class LiteralTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.s = MemorySession(self)
        self.s.output()

    def test_login_with_literals(self) -> None:
        self.assertEqual(self.s.send(b"a LOGIN {5}\r\n"), b"+ Ready for literal data\r\n")
        self.assertEqual(self.s.send(b"alice {6}\r\n"), b"+ Ready for literal data\r\n")
        self.assertIn(b"a OK", self.s.send(b"secret\r\n"))

    def test_literal_plus_append_and_pipelining(self) -> None:
        self.s.send(b"a LOGIN alice secret\r\n")
        message = b"Subject: hi\r\n\r\nbody\r\n"
        out = self.s.send(
            b"b APPEND INBOX (\\Seen) {%d+}\r\n" % len(message) + message + b"\r\n"
            b"c APPEND INBOX {3+}\r\nabc\r\nd SELECT INBOX\r\n"
        )
        self.assertNotIn(b"+ ", out)
        self.assertIn(b"b OK [APPENDUID ", out)
        self.assertIn(b"c OK [APPENDUID ", out)
        self.assertIn(b"* 2 EXISTS", out)
        self.assertLess(out.index(b"b OK"), out.index(b"c OK"))

    def test_literal_split_across_packets(self) -> None:
        self.s.send(b"a LOGIN alice secret\r\n")
        self.assertIn(b"+ ", self.s.send(b"b APPEND INBOX {10}\r\n"))
        self.assertEqual(self.s.send(b"Subj"), b"")
        self.assertEqual(self.s.send(b"ect: "), b"")
        self.assertIn(b"b OK", self.s.send(b"x\r\n"))

    def test_search_with_literal(self) -> None:
        self.s.send(b"a LOGIN alice secret\r\n")
        deliver(self.s.maildir(), "Subject: caf\u00e9\n\nx\n".encode())
        self.s.send(b"s SELECT INBOX\r\n")
        out = self.s.send(b"b SEARCH CHARSET UTF-8 SUBJECT {5}\r\n")
        self.assertIn(b"+ ", out)
        out = self.s.send("café".encode() + b"\r\n")
        self.assertIn(b"* SEARCH 1\r\n", out)


class IdleAndTimeoutTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.s = MemorySession(self)
        self.s.output()
        deliver(self.s.maildir(), b"Subject: one\n\nbody\n")
        self.s.send(b"a LOGIN alice secret\r\nb SELECT INBOX\r\n")

    def test_idle_wakes_when_notified(self) -> None:
        self.assertEqual(self.s.send(b"c IDLE\r\n"), b"+ idling\r\n")
        deliver(self.s.maildir(), b"Subject: two\n\nbody\n")
        self.assertEqual(self.s.output(), b"")
        self.s.notifier.changed([self.s.maildir()])
        out = self.s.output()
        self.assertIn(b"* 2 EXISTS", out)
        self.assertIn(b"* 2 RECENT", out)  # both claimed by this session
        self.assertEqual(self.s.send(b"DONE\r\n"), b"c OK IDLE terminated\r\n")

    def test_idle_wakes_on_poll_for_outside_writers(self) -> None:
        self.s.send(b"c IDLE\r\n")
        import os

        name = deliver(self.s.maildir(), b"Subject: two\n\nbody\n")
        new = os.path.join(self.s.maildir(), "new")
        st = os.stat(new)
        os.utime(new, ns=(st.st_atime_ns, st.st_mtime_ns + 7_000_000))
        self.s.reactor.advance(1)
        self.assertIn(b"* 2 EXISTS", self.s.output())
        # expunge by another program is reported too while idling
        cur = os.path.join(self.s.maildir(), "cur")
        [moved] = [n for n in os.listdir(cur) if n.startswith(name)]
        os.unlink(os.path.join(cur, moved))
        st = os.stat(cur)
        os.utime(cur, ns=(st.st_atime_ns, st.st_mtime_ns + 9_000_000))
        self.s.reactor.advance(1)
        self.assertIn(b"* 2 EXPUNGE", self.s.output())
        self.s.send(b"DONE\r\n")
        self.assertEqual(self.s.notifier.watched, [])

    def test_idle_needs_done(self) -> None:
        self.s.send(b"c IDLE\r\n")
        self.assertIn(b"c BAD", self.s.send(b"NOPE\r\n"))
        self.assertIn(b"n OK", self.s.send(b"n NOOP\r\n"))

    def test_idle_timeout_after_30_minutes(self) -> None:
        self.s.send(b"c IDLE\r\n")
        self.s.reactor.advance(1799)
        self.assertFalse(self.s.transport.disconnecting)
        self.s.reactor.advance(2)
        self.assertIn(b"* BYE", self.s.output())
        self.assertTrue(self.s.transport.disconnecting)

    def test_preauth_timeout(self) -> None:
        other = MemorySession(self)
        other.reactor.advance(61)
        self.assertTrue(other.transport.disconnecting)


class MailboxStateTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.s = MemorySession(self)
        self.s.output()
        for n in range(3):
            deliver(self.s.maildir(), b"Subject: m%d\n\nbody\n" % n, when=1_700_000_000 + n)
        self.s.send(b"a LOGIN alice secret\r\n")

    def test_select_responses(self) -> None:
        out = self.s.send(b"s SELECT inbox\r\n")
        for line in [b"* FLAGS (\\Answered \\Deleted \\Draft \\Flagged \\Seen)", b"* 3 EXISTS", b"* 3 RECENT",
                     b"* OK [UNSEEN 1]", b"* OK [UIDNEXT 4]", b"* OK [PERMANENTFLAGS (\\Answered \\Deleted \\Draft \\Flagged \\Seen \\*)]",
                     b"s OK [READ-WRITE] SELECT completed"]:
            self.assertIn(line, out)
        self.assertRegex(out, rb"\* OK \[UIDVALIDITY \d+\]")

    def test_examine_is_read_only(self) -> None:
        out = self.s.send(b"e EXAMINE INBOX\r\n")
        self.assertIn(b"e OK [READ-ONLY] EXAMINE completed", out)
        self.assertIn(b"* OK [PERMANENTFLAGS ()]", out)
        self.assertIn(b"x NO [READ-ONLY]", self.s.send(b"x STORE 1 +FLAGS (\\Deleted)\r\n"))
        self.assertIn(b"y NO [READ-ONLY]", self.s.send(b"y EXPUNGE\r\n"))
        out = self.s.send(b"f FETCH 1 BODY[TEXT]\r\n")
        self.assertNotIn(b"\\Seen", out)
        self.assertEqual(len(os.listdir(os.path.join(self.s.maildir(), "new"))), 3)  # nothing claimed

    def test_close_expunges_silently_unselect_does_not(self) -> None:
        self.s.send(b"s SELECT INBOX\r\nt STORE 1:2 +FLAGS.SILENT (\\Deleted)\r\n")
        out = self.s.send(b"u UNSELECT\r\n")
        self.assertEqual(out, b"u OK UNSELECT completed\r\n")
        self.s.send(b"s SELECT INBOX\r\n")
        out = self.s.send(b"c CLOSE\r\n")
        self.assertEqual(out, b"c OK CLOSE completed\r\n")
        out = self.s.send(b"s SELECT INBOX\r\n")
        self.assertIn(b"* 1 EXISTS", out)

    def test_expunge_responses_in_order(self) -> None:
        self.s.send(b"s SELECT INBOX\r\nt STORE 1,3 +FLAGS.SILENT (\\Deleted)\r\n")
        out = self.s.send(b"x EXPUNGE\r\n")
        self.assertEqual(out, b"* 3 EXPUNGE\r\n* 1 EXPUNGE\r\nx OK EXPUNGE completed\r\n")

    def test_store_responses(self) -> None:
        self.s.send(b"s SELECT INBOX\r\n")
        self.assertEqual(self.s.send(b"t STORE 2 +FLAGS (\\Flagged)\r\n"),
                         b"* 2 FETCH (FLAGS (\\Flagged \\Recent))\r\nt OK STORE completed\r\n")
        self.assertEqual(self.s.send(b"u UID STORE 2 -FLAGS.SILENT (\\Flagged)\r\n"), b"u OK STORE completed\r\n")
        out = self.s.send(b"v STORE 1 FLAGS ($Label1)\r\n")
        self.assertIn(b"* FLAGS (\\Answered \\Deleted \\Draft \\Flagged \\Seen $Label1)", out)
        self.assertIn(b"* 1 FETCH (FLAGS (\\Recent $Label1))", out)
        self.assertIn(b"w BAD", self.s.send(b"w STORE 1 +FLAGS (\\Bogus)\r\n"))

    def test_rename_inbox(self) -> None:
        out = self.s.send(b"r RENAME INBOX Archive\r\n")
        self.assertIn(b"r OK", out)
        out = self.s.send(b'x STATUS INBOX (MESSAGES)\r\ny STATUS Archive (MESSAGES UIDNEXT)\r\n')
        self.assertIn(b"* STATUS INBOX (MESSAGES 0)", out)
        self.assertIn(b"* STATUS Archive (MESSAGES 3 UIDNEXT 4)", out)

    def test_delete_selected_mailbox(self) -> None:
        self.s.send(b"c CREATE Tmp\r\ns SELECT Tmp\r\n")
        out = self.s.send(b"d DELETE Tmp\r\n")
        self.assertIn(b"* OK [CLOSED]", out)
        self.assertIn(b"d OK", out)
        self.assertEqual(self.s.server.state, "auth")

    def test_id_enable_namespace(self) -> None:
        out = self.s.send(b'i ID ("name" "test" "version" NIL)\r\n')
        self.assertIn(b'* ID ("name" "mailserver"', out)
        self.assertIn(b"e OK", self.s.send(b"e ENABLE CONDSTORE\r\n"))
        self.assertIn(b'* NAMESPACE (("" "/")) NIL NIL', self.s.send(b"n NAMESPACE\r\n"))

    def test_too_many_failed_logins(self) -> None:
        other = MemorySession(self)
        out = b"".join(other.send(b"x LOGIN alice nope\r\n") for n in range(3))
        self.assertEqual(out.count(b"x NO [AUTHENTICATIONFAILED]"), 3)
        self.assertIn(b"* BYE Too many failed logins", out)
        self.assertTrue(other.transport.disconnecting)

    def test_starttls_drops_pipelined_plaintext(self) -> None:
        from zope.interface import implementer
        from twisted.internet.interfaces import ITLSTransport
        from twisted.internet.testing import StringTransport

        @implementer(ITLSTransport)
        class TLSTransport(StringTransport):
            tls = None

            def startTLS(self, ctx):
                self.tls = ctx

        session = MemorySession(self, context_factory=object())
        session.transport = TLSTransport()
        session.server.makeConnection(session.transport)
        self.assertIn(b"STARTTLS", session.output())
        out = session.send(b"t STARTTLS\r\nx LOGIN alice secret\r\n")
        self.assertEqual(out, b"t OK Begin TLS negotiation now\r\n")
        self.assertIsNotNone(session.transport.tls)
        self.assertEqual(session.server.state, "unauth")
        self.assertIn(b"u NO", session.send(b"u STARTTLS\r\n"))
