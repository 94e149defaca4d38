"""
Fuzz: SMTP and POP3 command lines through the real protocol classes on a
StringTransport.  Every reply must be well formed (SMTP: a code, and an
enhanced status code wherever RFC 2034 asks for one; POP3: +OK/-ERR) and
nothing may be logged as an error.  SMTP AUTH is left out here: it has its
own fuzz with the SASL change.
"""

from __future__ import annotations

import re

from hypothesis import assume, given, strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import LogLevel, capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from mailserver.smtp.factory import SMTPFactory
from mailserver.smtp.server import SMTPPolicy
from tests.fakes import MemoryStore, anonymous_portal, build_core
from tests.fuzz.bounds import bounded
from tests.fuzz.strategies import salted_bytes
from tests.pop3.support import Fixture, deliver

SMTP_VERBS = [b"EHLO c.example", b"HELO c", b"MAIL FROM:", b"RCPT TO:", b"DATA", b".", b"RSET", b"NOOP", b"VRFY",
              b"EXPN", b"HELP", b"QUIT", b"STARTTLS", b"BDAT 10", b"ETRN", b"XCLIENT", b"TURN"]
SMTP_TOKENS = [b" ", b"<", b">", b"<>", b"@", b":", b"=", b"bob@example.com", b"alice@example.com",
               b"x@remote.example", b"nobody@example.com", b"@a.example:", b"SIZE=", b"999999999999",
               b"BODY=8BITMIME", b"SMTPUTF8", b'"q uoted"', b"\x00", b"\xff", b"\t", b"a" * 300, b"Subject: s",
               b".."]
SMTP_LINE = st.one_of(st.sampled_from(SMTP_VERBS), st.tuples(st.sampled_from(SMTP_VERBS), salted_bytes(SMTP_TOKENS))
                      .map(b"".join), salted_bytes(SMTP_TOKENS))
# A reply line: code, separator, and (RFC 2034) an enhanced status code.
_REPLY = re.compile(r"([2-5][0-9][0-9])([ -])(.*)\Z")
_ENHANCED = re.compile(r"[245]\.[0-9]{1,3}\.[0-9]{1,3}( |\Z)")


def is_auth(line: bytes) -> bool:
    return line.lstrip().upper().startswith(b"AUTH")


class SMTPLineTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        core = build_core(self.clock, store=MemoryStore(), message_size_limit=4000, recipient_limit=5)
        policy = SMTPPolicy(hostname="mx.example.com", banner="mx.example.com ESMTP mailserver",
                            message_size_limit=4000, hard_error_limit=1000, line_length_limit=512)
        self.factory = SMTPFactory(anonymous_portal(core), policy, self.clock, max_connections=1000,
                                   per_client_limit=1000)

    def converse(self, lines: list[bytes]) -> list[tuple[bytes, str]]:
        """Send C{lines}; (the line, the reply lines it produced) for each."""
        transport = StringTransport(peerAddress=IPv4Address("TCP", "192.0.2.1", 40000))
        protocol = self.factory.buildProtocol(None)
        protocol.makeConnection(transport)
        transport.clear()
        out = []
        for line in lines:
            if transport.disconnecting:
                break
            protocol.dataReceived(line + b"\r\n")
            self.clock.advance(5)
            out.append((line, transport.value().decode("utf-8", "replace")))
            transport.clear()
        if not transport.disconnecting:
            protocol.connectionLost(None)
        return out

    def assertWellFormed(self, line: bytes, output: str) -> None:
        """Check the replies one line (a command, or message text in DATA) produced."""
        replies = [r for r in output.split("\r\n") if r]
        self.assertTrue(output == "" or output.endswith("\r\n"), (line, output))
        greeting = line.upper().startswith((b"EHLO", b"HELO"))
        for reply in replies:
            found = _REPLY.match(reply)
            self.assertIsNotNone(found, (line, reply))
            code, separator, text = found.groups()
            if code == "354" or (greeting and code == "250"):
                continue  # RFC 2034: no enhanced code on these
            self.assertRegex(text, _ENHANCED, (line, reply))

    @given(st.lists(SMTP_LINE, min_size=1, max_size=25))
    def test_replies_are_well_formed(self, lines: list[bytes]) -> None:
        assume(not any(is_auth(line) for line in lines))
        with capturedLogs() as events:
            conversation = bounded(self.converse, lines)
        for line, output in conversation:
            self.assertWellFormed(line, output)
        bad = [e for e in events if e.get("log_level") in (LogLevel.error, LogLevel.critical) or "log_failure" in e]
        self.assertEqual(bad, [], [e.get("log_format") for e in bad])


POP3_VERBS = [b"USER alice", b"PASS secret", b"USER", b"PASS", b"STAT", b"LIST", b"RETR", b"TOP", b"DELE", b"RSET",
              b"NOOP", b"UIDL", b"CAPA", b"QUIT", b"STLS", b"APOP", b"AUTH", b"AUTH PLAIN", b"AUTH LOGIN", b"LAST",
              b"RPOP", b"*"]
POP3_TOKENS = [b" ", b"1", b"2", b"0", b"-1", b"99999999999999999999", b"alice", b"bob", b"\x00", b"\xff", b"\t",
               b"AGFsaWNlAHNlY3JldA==", b"=", b"a" * 300]
POP3_LINE = st.one_of(st.sampled_from(POP3_VERBS), st.tuples(st.sampled_from(POP3_VERBS), salted_bytes(POP3_TOKENS))
                      .map(b"".join), salted_bytes(POP3_TOKENS))


class POP3LineTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.fixture = Fixture(self.mktemp())
        maildir = self.fixture.maildir("alice")
        deliver(maildir, b"Subject: one\n\nbody\n.dot\n")
        deliver(maildir, b"Subject: two\n\n" + b"line\n" * 50)

    def converse(self, lines: list[bytes]) -> list[tuple[bytes, bytes]]:
        session = self.fixture.session()
        out = []
        for line in lines:
            if session.transport.disconnecting:
                break
            out.append((line, session.send(line)))
            self.fixture.clock.advance(5)
        if not session.transport.disconnecting:
            session.drop()
        return out

    @given(st.lists(POP3_LINE, min_size=1, max_size=25))
    def test_replies_are_well_formed(self, lines: list[bytes]) -> None:
        with capturedLogs() as events:
            conversation = bounded(self.converse, lines)
        for line, output in conversation:
            self.assertTrue(output == b"" or output.endswith(b"\r\n"), (line, output))
            if output:
                self.assertTrue(output.startswith((b"+OK", b"-ERR", b"+ ")), (line, output))
        bad = [e for e in events if e.get("log_level") in (LogLevel.error, LogLevel.critical) or "log_failure" in e]
        self.assertEqual(bad, [], [e.get("log_format") for e in bad])
