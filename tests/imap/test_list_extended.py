"""
LIST-EXTENDED (RFC 5258), LIST-STATUS (RFC 5819): selection and return
options, multiple patterns, CHILDINFO, \\NonExistent, STATUS per mailbox.
"""

from __future__ import annotations

import imaplib

from twisted.trial.unittest import SynchronousTestCase, TestCase

from mailserver.imap.list_extended import select
from tests.imap.support import LoopbackServer, MemorySession, deliver

EXISTING = ["INBOX", "a", "a/b", "a/c", "d", "e/f"]
SUBSCRIBED = ["INBOX", "a/b", "gone", "e/f"]


def names(entries):
    return [(e.name, sorted(e.attributes), e.childinfo) for e in entries]


class SelectTests(SynchronousTestCase):
    def run_select(self, patterns, selection=(), returns=()):
        return names(select(EXISTING, SUBSCRIBED, "", patterns, frozenset(selection), frozenset(returns), {}))

    def test_multiple_patterns(self) -> None:
        self.assertEqual([n for n, _, _ in self.run_select(["a/%", "d"])], ["a/b", "a/c", "d"])

    def test_subscribed_selection(self) -> None:
        self.assertEqual(self.run_select(["*"], ["SUBSCRIBED"]), [
            ("INBOX", ["\\Subscribed"], False),
            ("a/b", ["\\Subscribed"], False),
            ("e/f", ["\\Subscribed"], False),
            ("gone", ["\\NonExistent", "\\Subscribed"], False),
        ])

    def test_recursivematch_childinfo(self) -> None:
        out = self.run_select(["%"], ["SUBSCRIBED", "RECURSIVEMATCH"], ["CHILDREN"])
        self.assertIn(("a", ["\\HasChildren"], True), out)
        self.assertIn(("e", ["\\NonExistent"], True), out)
        self.assertNotIn("d", [n for n, _, _ in out])

    def test_return_subscribed(self) -> None:
        out = self.run_select(["a*"], (), ["SUBSCRIBED"])
        self.assertIn(("a/b", ["\\HasNoChildren", "\\Subscribed"], False), out)
        self.assertIn(("a", ["\\HasChildren"], False), out)


class SessionTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.s = MemorySession(self)
        self.s.output()
        self.s.send(b"a LOGIN alice secret\r\n")
        for name in (b"Work", b"Work/Old", b"Play"):
            self.s.send(b"c CREATE " + name + b"\r\n")
        self.s.send(b"s SUBSCRIBE Work/Old\r\n")
        deliver(self.s.maildir() + "/.Work", b"Subject: x\n\ny\n")

    def test_capabilities(self) -> None:
        out = self.s.send(b"c CAPABILITY\r\n")
        self.assertIn(b" LIST-EXTENDED", out)
        self.assertIn(b" LIST-STATUS", out)

    def test_list_status(self) -> None:
        out = self.s.send(b'l LIST "" (Work Play) RETURN (STATUS (MESSAGES UNSEEN))\r\n')
        lines = out.split(b"\r\n")
        work = lines.index(b'* LIST (\\HasChildren) "/" Work')
        self.assertEqual(lines[work + 1], b"* STATUS Work (MESSAGES 1 UNSEEN 1)")
        self.assertIn(b"* STATUS Play (MESSAGES 0 UNSEEN 0)", out)
        self.assertIn(b"l OK", out)

    def test_recursivematch(self) -> None:
        out = self.s.send(b'l LIST (SUBSCRIBED RECURSIVEMATCH) "" % RETURN (CHILDREN)\r\n')
        self.assertIn(b'* LIST (\\HasChildren) "/" Work ("CHILDINFO" ("SUBSCRIBED"))\r\n', out)

    def test_errors(self) -> None:
        for command in (b'l LIST (FANCY) "" ""', b'l LIST (RECURSIVEMATCH) "" ""',
                        b'l LIST (RECURSIVEMATCH REMOTE) "" ""', b'l LIST "" "" RETURN (FANCY)',
                        b'l LIST "" * RETURN (STATUS (BOGUS))'):
            self.assertIn(b"l BAD", self.s.send(command + b"\r\n"), command)


class LoopbackTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.server = LoopbackServer(self)

    async def test_imaplib_list_extended(self) -> None:
        def session(c: imaplib.IMAP4):
            c.create("Archive")
            c.subscribe("Archive")
            return c._simple_command("LIST", "(SUBSCRIBED)", '""', "*", "RETURN", "(STATUS", "(MESSAGES))")

        typ, data = await self.server.imap(session)
        self.assertEqual(typ, "OK")
