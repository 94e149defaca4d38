"""Tests for mailserver.pop3.server on StringTransport: commands, states, limits."""

from __future__ import annotations

import base64
import os

from twisted.internet.interfaces import ITCPTransport
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs
from zope.interface import implementer
from twisted.trial.unittest import SynchronousTestCase

from mailserver.pop3.server import POP3Server
from tests.pop3.support import Fixture, ManualThreads, deliver, files


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


class Base(SynchronousTestCase):
    def setUp(self) -> None:
        self.fixture = Fixture(self.mktemp())
        self.maildir = self.fixture.maildir("alice")

    def session(self):
        session = self.fixture.session()
        self.addCleanup(lambda: session.protocol._lost or session.drop())
        return session

    def logged_in(self):
        session = self.session()
        self.assertEqual(session.login(), b"+OK Logged in.\r\n")
        return session


class GreetingAndCapabilityTests(Base):
    def test_greeting_has_no_apop_timestamp(self) -> None:
        protocol = self.fixture.factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        greeting = transport.value()
        self.assertEqual(greeting, b"+OK mailserver ready.\r\n")
        self.assertNotIn(b"<", greeting)
        protocol.connectionLost(None)

    def test_capa(self) -> None:
        reply = self.session().send(b"CAPA")
        lines = reply.split(b"\r\n")
        self.assertTrue(lines[0].startswith(b"+OK"))
        self.assertEqual(lines[-2:], [b".", b""])
        caps = set(lines[1:-2])
        for cap in (
            b"TOP", b"USER", b"UIDL", b"RESP-CODES", b"AUTH-RESP-CODE", b"PIPELINING",
            b"SASL PLAIN LOGIN", b"EXPIRE NEVER", b"IMPLEMENTATION mailserver",
        ):
            self.assertIn(cap, caps)
        # Twisted's jokes and misspelling are gone.
        for cap in (b"CELERITY", b"AUSPEX", b"POTENCE", b"PIPELINE"):
            self.assertNotIn(cap, caps)

    def test_capa_after_login(self) -> None:
        self.assertIn(b"\r\nUIDL\r\n", self.logged_in().send(b"CAPA"))

    def test_plaintext_refused_by_hook(self) -> None:
        self.fixture.factory.allow_plaintext = lambda transport: False
        session = self.session()
        capa = session.send(b"CAPA")
        self.assertNotIn(b"USER", capa)
        self.assertNotIn(b"SASL", capa)
        self.assertTrue(session.send(b"USER alice").startswith(b"-ERR [AUTH] Plaintext"))
        answer = session.send(b"AUTH PLAIN " + b64(b"\0alice\0secret"))
        self.assertTrue(answer.startswith(b"-ERR [AUTH]"))


class LoginTests(Base):
    def test_user_pass(self) -> None:
        session = self.session()
        self.assertEqual(session.send(b"USER alice"), b"+OK Send PASS.\r\n")
        with capturedLogs() as events:
            self.assertEqual(session.send(b"PASS secret"), b"+OK Logged in.\r\n")
        self.assertTrue(any(e.get("user") == "alice" and e.get("peer") for e in events))

    def test_password_with_spaces(self) -> None:
        [checker] = set(self.fixture.portal.checkers.values())
        checker.addUser(b"carol", b"correct horse battery")
        session = self.session()
        self.assertEqual(session.login(b"carol", b"correct horse battery"), b"+OK Logged in.\r\n")

    def test_bad_password_is_delayed_and_logged(self) -> None:
        session = self.session()
        session.send(b"USER alice")
        with capturedLogs() as events:
            self.assertEqual(session.send(b"PASS wrong"), b"")
        self.assertEqual(session.send(b"STAT"), b"")  # held until the answer
        self.fixture.clock.advance(1.9)
        self.assertEqual(session.output(), b"")
        self.fixture.clock.advance(0.1)
        self.assertEqual(
            session.output(),
            b"-ERR [AUTH] Authentication failed.\r\n-ERR STAT is not allowed before login.\r\n",
        )
        failed = [e for e in events if e.get("auth_failure")]
        self.assertEqual(len(failed), 1)
        self.assertEqual(failed[0]["service"], "pop3")
        self.assertEqual(failed[0]["rip"], "192.168.1.1")
        self.assertEqual(failed[0]["user"], "alice")

    def test_unknown_user(self) -> None:
        session = self.session()
        session.login(b"mallory", b"x")
        self.fixture.clock.advance(2)
        self.assertEqual(session.output(), b"-ERR [AUTH] Authentication failed.\r\n")

    def test_too_many_failures_disconnect(self) -> None:
        session = self.session()
        for delay in (2, 4, 8):  # growing per-address delays (auth/throttle.py)
            session.login(b"alice", b"wrong")
            self.fixture.clock.advance(delay - 0.1)
            self.assertEqual(session.output(), b"")
            self.fixture.clock.advance(0.1)
            self.assertEqual(session.output(), b"-ERR [AUTH] Authentication failed.\r\n")
        self.assertTrue(session.transport.disconnecting)

    def test_pass_without_user(self) -> None:
        session = self.session()
        self.assertTrue(session.send(b"PASS secret").startswith(b"-ERR"))
        session.send(b"USER alice")
        session.send(b"NOOP")  # anything but PASS forgets USER
        self.assertTrue(session.send(b"PASS secret").startswith(b"-ERR No user name"))

    def test_legacy_commands_refused(self) -> None:
        session = self.session()
        self.assertTrue(session.send(b"APOP alice 0123456789abcdef").startswith(b"-ERR"))
        self.assertEqual(session.send(b"RPOP alice"), b"-ERR RPOP is not supported.\r\n")
        self.assertEqual(session.send(b"STLS"), b"-ERR STLS is not available.\r\n")
        session = self.logged_in()
        self.assertEqual(session.send(b"LAST"), b"-ERR LAST is not supported: use UIDL.\r\n")

    def test_quit_before_login(self) -> None:
        session = self.session()
        self.assertTrue(session.send(b"QUIT").startswith(b"+OK"))
        self.assertTrue(session.transport.disconnecting)

    def test_user_after_login_refused(self) -> None:
        self.assertTrue(self.logged_in().send(b"USER bob").startswith(b"-ERR"))

    def test_pipelined_login_and_commands_answered_in_order(self) -> None:
        threads = ManualThreads()
        self.fixture = Fixture(self.mktemp(), run_in_thread=threads)
        deliver(self.fixture.maildir("alice"), b"hello\n")
        session = self.fixture.session()
        session.protocol.dataReceived(b"USER alice\r\nPASS secret\r\nSTAT\r\nLIST\r\nQUIT\r\n")
        self.assertEqual(session.output(), b"+OK Send PASS.\r\n")  # the scan waits on the thread
        while threads.run_all():
            pass
        self.assertEqual(
            session.output(),
            b"+OK Logged in.\r\n+OK 1 7\r\n+OK 1 messages:\r\n1 7\r\n.\r\n+OK Logging out.\r\n",
        )
        self.assertTrue(session.transport.disconnecting)
        session.drop()


class SaslTests(Base):
    def test_plain_initial_response(self) -> None:
        session = self.session()
        self.assertEqual(session.send(b"AUTH PLAIN " + b64(b"\0alice\0secret")), b"+OK Logged in.\r\n")

    def test_plain_with_empty_challenge(self) -> None:
        session = self.session()
        self.assertEqual(session.send(b"AUTH PLAIN"), b"+ \r\n")
        self.assertEqual(session.send(b64(b"alice\0alice\0secret")), b"+OK Logged in.\r\n")

    def test_mechanism_name_case_insensitive(self) -> None:
        session = self.session()
        self.assertEqual(session.send(b"auth plain " + b64(b"\0alice\0secret")), b"+OK Logged in.\r\n")

    def test_login(self) -> None:
        session = self.session()
        self.assertEqual(session.send(b"AUTH LOGIN"), b"+ " + b64(b"Username:") + b"\r\n")
        self.assertEqual(session.send(b64(b"alice")), b"+ " + b64(b"Password:") + b"\r\n")
        self.assertEqual(session.send(b64(b"secret")), b"+OK Logged in.\r\n")

    def test_login_with_initial_user_name(self) -> None:
        session = self.session()
        answer = session.send(b"AUTH LOGIN " + b64(b"alice"))
        self.assertEqual(answer, b"+ " + b64(b"Password:") + b"\r\n")
        self.assertEqual(session.send(b64(b"secret")), b"+OK Logged in.\r\n")

    def test_wrong_password_delayed(self) -> None:
        session = self.session()
        self.assertEqual(session.send(b"AUTH PLAIN " + b64(b"\0alice\0nope")), b"")
        self.fixture.clock.advance(2)
        self.assertEqual(session.output(), b"-ERR [AUTH] Authentication failed.\r\n")

    def test_other_authorization_identity_refused(self) -> None:
        session = self.session()
        session.send(b"AUTH PLAIN " + b64(b"bob\0alice\0secret"))
        self.fixture.clock.advance(2)
        self.assertEqual(session.output(), b"-ERR [AUTH] Authentication failed.\r\n")
        self.assertIsNone(session.protocol.mbox)

    def test_cancel(self) -> None:
        session = self.session()
        session.send(b"AUTH LOGIN")
        self.assertEqual(session.send(b"*"), b"-ERR Authentication cancelled.\r\n")
        self.assertTrue(session.send(b"NOOP").startswith(b"-ERR NOOP is not allowed before login"))

    def test_bad_base64(self) -> None:
        session = self.session()
        self.assertTrue(session.send(b"AUTH PLAIN !!!").startswith(b"-ERR Invalid base64"))
        session.send(b"AUTH PLAIN")
        self.assertTrue(session.send(b"not base64!").startswith(b"-ERR Invalid base64"))
        self.assertEqual(session.send(b"AUTH PLAIN " + b64(b"\0alice\0secret")), b"+OK Logged in.\r\n")

    def test_unknown_mechanism(self) -> None:
        self.assertEqual(self.session().send(b"AUTH CRAM-MD5"), b"-ERR Unsupported SASL mechanism.\r\n")

    def test_list_mechanisms(self) -> None:
        self.assertEqual(
            self.session().send(b"AUTH"), b"+OK Supported SASL mechanisms:\r\nPLAIN\r\nLOGIN\r\n.\r\n"
        )


class TransactionTests(Base):
    def setUp(self) -> None:
        super().setUp()
        self.names = [
            deliver(self.maildir, b"Subject: one\n\nfirst\n"),
            deliver(self.maildir, b"Subject: two\n\n.dot\nline2\nline3\n"),
            deliver(self.maildir, b"Subject: three\n\nthird\n", "cur", "2,F"),
        ]
        self.uidls = [n.split(",")[0].encode() for n in self.names]

    def test_stat_list(self) -> None:
        session = self.logged_in()
        self.assertEqual(session.send(b"STAT"), b"+OK 3 84\r\n")
        self.assertEqual(session.send(b"LIST"), b"+OK 3 messages:\r\n1 23\r\n2 36\r\n3 25\r\n.\r\n")
        self.assertEqual(session.send(b"LIST 2"), b"+OK 2 36\r\n")
        self.assertEqual(session.send(b"LIST 4"), b"-ERR There's no message 4.\r\n")
        self.assertEqual(session.send(b"LIST 0"), b"-ERR There's no message 0.\r\n")
        self.assertEqual(session.send(b"LIST x"), b"-ERR Invalid message number.\r\n")

    def test_uidl(self) -> None:
        session = self.logged_in()
        expected = b"".join(b"%d %s\r\n" % (i + 1, u) for i, u in enumerate(self.uidls))
        self.assertEqual(session.send(b"UIDL"), b"+OK\r\n" + expected + b".\r\n")
        self.assertEqual(session.send(b"UIDL 3"), b"+OK 3 " + self.uidls[2] + b"\r\n")

    def test_retr_crlf_and_dot_stuffed(self) -> None:
        session = self.logged_in()
        self.assertEqual(
            session.send(b"RETR 2"),
            b"+OK 36 octets\r\nSubject: two\r\n\r\n..dot\r\nline2\r\nline3\r\n.\r\n",
        )

    def test_top(self) -> None:
        session = self.logged_in()
        self.assertEqual(
            session.send(b"TOP 2 1"), b"+OK Top of message follows.\r\nSubject: two\r\n\r\n..dot\r\n.\r\n"
        )
        self.assertEqual(
            session.send(b"TOP 1 0"), b"+OK Top of message follows.\r\nSubject: one\r\n\r\n.\r\n"
        )
        self.assertEqual(session.send(b"TOP 1"), b"-ERR TOP takes a message number and a line count.\r\n")
        self.assertEqual(session.send(b"TOP 1 -1"), b"-ERR Invalid line count.\r\n")

    def test_top_does_not_mark_seen(self) -> None:
        session = self.logged_in()
        session.send(b"TOP 1 10")
        self.assertEqual(len(files(self.maildir, "new")), 2)

    def test_retr_marks_seen(self) -> None:
        session = self.logged_in()
        session.send(b"RETR 1")
        session.send(b"RETR 3")
        self.assertEqual(files(self.maildir, "new"), [self.names[1]])
        self.assertEqual(
            files(self.maildir, "cur"),
            sorted([self.names[0] + ":2,S", self.names[2][: -len(":2,F")] + ":2,FS"]),
        )
        # UIDLs are unchanged by the moves.
        self.assertEqual(session.send(b"UIDL 1"), b"+OK 1 " + self.uidls[0] + b"\r\n")

    def test_retr_reads_in_the_thread_runner(self) -> None:
        threads = ManualThreads()
        self.fixture.factory.run_in_thread = threads
        session = self.logged_in()
        session.protocol.run_in_thread = threads
        session.protocol.mbox._run = threads
        self.assertEqual(session.send(b"RETR 1"), b"")  # opening the file waits on the thread
        self.assertEqual(session.send(b"NOOP"), b"")  # and so does the next command
        threads.run_all()
        self.assertEqual(
            session.output(), b"+OK 23 octets\r\nSubject: one\r\n\r\nfirst\r\n.\r\n+OK\r\n"
        )

    def test_dele_rset(self) -> None:
        session = self.logged_in()
        self.assertEqual(session.send(b"DELE 1"), b"+OK Message 1 deleted.\r\n")
        self.assertEqual(session.send(b"DELE 1"), b"-ERR Message 1 is deleted.\r\n")
        self.assertEqual(session.send(b"RETR 1"), b"-ERR Message 1 is deleted.\r\n")
        self.assertEqual(session.send(b"STAT"), b"+OK 2 61\r\n")
        self.assertEqual(session.send(b"LIST"), b"+OK 2 messages:\r\n2 36\r\n3 25\r\n.\r\n")
        self.assertNotIn(self.uidls[0], session.send(b"UIDL"))
        self.assertEqual(session.send(b"RSET"), b"+OK 3 messages.\r\n")
        self.assertEqual(session.send(b"STAT"), b"+OK 3 84\r\n")

    def test_quit_deletes(self) -> None:
        session = self.logged_in()
        session.send(b"DELE 1")
        session.send(b"DELE 3")
        self.assertEqual(session.send(b"QUIT"), b"+OK Logging out, 2 messages deleted.\r\n")
        self.assertTrue(session.transport.disconnecting)
        self.assertEqual(files(self.maildir, "new"), [self.names[1]])
        self.assertEqual(files(self.maildir, "cur"), [])
        session.drop()

    def test_rset_then_quit_deletes_nothing(self) -> None:
        session = self.logged_in()
        session.send(b"DELE 1")
        session.send(b"RSET")
        session.send(b"QUIT")
        self.assertEqual(len(files(self.maildir, "new")) + len(files(self.maildir, "cur")), 3)

    def test_dropped_connection_deletes_nothing(self) -> None:
        session = self.logged_in()
        session.send(b"DELE 1")
        session.send(b"DELE 2")
        session.drop()
        self.assertEqual(files(self.maildir, "new"), sorted(self.names[:2]))
        # ... and the lock is released.
        self.assertEqual(self.logged_in().send(b"STAT"), b"+OK 3 84\r\n")

    def test_delete_of_file_removed_elsewhere_is_not_an_error(self) -> None:
        session = self.logged_in()
        session.send(b"DELE 1")
        os.unlink(os.path.join(self.maildir, "new", self.names[0]))
        self.assertTrue(session.send(b"QUIT").startswith(b"+OK"))

    def test_retr_of_file_removed_elsewhere(self) -> None:
        session = self.logged_in()
        os.unlink(os.path.join(self.maildir, "new", self.names[0]))
        self.assertEqual(
            session.send(b"RETR 1"), b"-ERR [SYS/TEMP] Message 1 was removed by another session.\r\n"
        )
        self.assertEqual(session.send(b"NOOP"), b"+OK\r\n")

    def test_retr_of_file_moved_elsewhere(self) -> None:
        session = self.logged_in()
        os.rename(
            os.path.join(self.maildir, "new", self.names[0]),
            os.path.join(self.maildir, "cur", self.names[0] + ":2,R"),
        )
        self.assertTrue(session.send(b"RETR 1").startswith(b"+OK 23 octets\r\n"))
        self.assertIn(self.names[0] + ":2,RS", files(self.maildir, "cur"))

    def test_new_mail_during_session_not_listed(self) -> None:
        session = self.logged_in()
        deliver(self.maildir, b"late\n")
        self.assertEqual(session.send(b"STAT"), b"+OK 3 84\r\n")

    def test_connection_lost_during_retr(self) -> None:
        big = deliver(self.maildir, b"Subject: big\n\n" + b"x" * 200_000 + b"\n")
        threads = ManualThreads()
        session = self.logged_in()
        session.protocol.run_in_thread = threads
        self.assertEqual(session.send(b"RETR 4"), b"+OK 200018 octets\r\n")
        self.assertTrue(threads.run_one())  # the first chunk
        self.assertTrue(session.output().startswith(b"Subject: big\r\n\r\nxxx"))
        producer = session.transport.producer
        self.assertIsNotNone(producer)
        producer.pauseProducing()  # the client stops reading
        self.assertTrue(threads.run_one())  # the read already under way
        self.assertEqual(threads.calls, [])  # paused: nothing more is read
        session.drop()
        producer.stopProducing()
        self.assertIn(big, files(self.maildir, "new"))  # not marked seen
        self.assertEqual(threads.calls, [])


class InUseTests(Base):
    def test_second_session_in_use(self) -> None:
        first = self.logged_in()
        second = self.session()
        with capturedLogs() as events:
            self.assertEqual(
                second.login(), b"-ERR [IN-USE] Mailbox is locked by another POP3 session.\r\n"
            )
        self.assertTrue(any("in use" in e["log_format"] for e in events))
        self.assertEqual(second.send(b"STAT"), b"-ERR STAT is not allowed before login.\r\n")
        # Another user is not affected.
        self.assertEqual(self.session().login(b"bob"), b"+OK Logged in.\r\n")
        first.send(b"QUIT")
        self.assertEqual(second.login(), b"+OK Logged in.\r\n")

    def test_lock_released_at_quit_before_the_answer(self) -> None:
        session = self.logged_in()
        session.send(b"QUIT")
        # The client may reconnect as soon as it reads +OK.
        self.assertEqual(self.session().login(), b"+OK Logged in.\r\n")
        session.drop()

    def test_connection_lost_during_login_releases(self) -> None:
        threads = ManualThreads()
        self.fixture = Fixture(self.mktemp(), run_in_thread=threads)
        session = self.fixture.session()
        session.send(b"USER alice")
        session.send(b"PASS secret")
        session.drop()
        while threads.run_all():
            pass
        self.assertEqual(session.output(), b"")
        other = self.fixture.session()
        other.send(b"USER alice")
        other.send(b"PASS secret")
        while threads.run_all():
            pass
        self.assertEqual(other.output(), b"+OK Logged in.\r\n")
        other.drop()


class BadInputTests(Base):
    def test_unknown_command_session_goes_on(self) -> None:
        session = self.session()
        self.assertEqual(session.send(b"FROB"), b"-ERR Unknown command.\r\n")
        self.assertEqual(session.send(b"\xff\xfe"), b"-ERR Unknown command.\r\n")
        self.assertEqual(session.send(b""), b"-ERR Unknown command.\r\n")
        self.assertEqual(session.login(), b"+OK Logged in.\r\n")

    def test_too_many_bad_commands(self) -> None:
        session = self.logged_in()
        for _ in range(19):
            self.assertEqual(session.send(b"FROB"), b"-ERR Unknown command.\r\n")
        self.assertEqual(session.send(b"FROB"), b"-ERR Too many bad commands.\r\n")
        self.assertTrue(session.transport.disconnecting)
        self.assertEqual(session.send(b"STAT"), b"")

    def test_broken_syntax(self) -> None:
        session = self.logged_in()
        for line in (b"STAT 1", b"RETR", b"RETR one", b"DELE 1 2", b"NOOP x", b"CAPA x", b"RSET x",
                     b"RETR 99999999999999"):
            self.assertTrue(session.send(line).startswith(b"-ERR "), line)
        self.assertEqual(session.send(b"STAT"), b"+OK 0 0\r\n")

    def test_long_command_line(self) -> None:
        session = self.session()
        self.assertEqual(session.send(b"USER " + b"a" * 300), b"-ERR Command line too long.\r\n")
        self.assertFalse(session.transport.disconnecting)

    def test_line_over_hard_limit_disconnects(self) -> None:
        session = self.session()
        session.protocol.dataReceived(b"A" * (POP3Server.MAX_LENGTH + 10))
        self.assertEqual(session.output(), b"-ERR Line too long.\r\n")
        self.assertTrue(session.transport.disconnecting)

    def test_control_characters_escaped_in_logs(self) -> None:
        session = self.session()
        session.send(b"USER ev\ril\x1b[2J")
        with capturedLogs() as events:
            session.send(b"PASS x")
            self.fixture.clock.advance(2)
        [failed] = [e for e in events if e.get("auth_failure")]
        self.assertEqual(failed["user"], "ev\\x0dil\\x1b[2J")

    def test_tcp_nodelay(self) -> None:
        @implementer(ITCPTransport)
        class TCPTransport(StringTransport):
            nodelay = False

            def setTcpNoDelay(self, enabled: bool) -> None:
                self.nodelay = enabled

        transport = TCPTransport()
        protocol = self.fixture.factory.buildProtocol(None)
        protocol.makeConnection(transport)
        self.assertTrue(transport.nodelay)
        protocol.connectionLost(None)

    def test_bare_lf_accepted(self) -> None:
        session = self.session()
        session.protocol.dataReceived(b"USER alice\nPASS secret\n")
        self.assertEqual(session.output(), b"+OK Send PASS.\r\n+OK Logged in.\r\n")

    def test_idle_timeout(self) -> None:
        session = self.logged_in()
        self.fixture.clock.advance(599)
        self.assertFalse(session.transport.disconnecting)
        session.send(b"NOOP")
        self.fixture.clock.advance(599)
        self.assertFalse(session.transport.disconnecting)
        self.fixture.clock.advance(1)
        self.assertEqual(session.output(), b"-ERR Disconnected for inactivity.\r\n")
        self.assertTrue(session.transport.disconnecting)
        session.drop()
        self.assertEqual(self.fixture.clock.getDelayedCalls(), [])
