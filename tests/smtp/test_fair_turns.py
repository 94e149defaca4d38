"""
Issue 16: a pipelined flood is answered a bounded number of commands per
reactor turn, with reading paused in between, so other sessions get theirs.
"""

from __future__ import annotations

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from mailserver.smtp.factory import SMTPFactory
from mailserver.smtp.server import COMMANDS_PER_TURN, SMTPPolicy
from tests.fakes import anonymous_portal, build_core
from tests.smtp.test_server import Session

NOOP_OK = "250 2.0.0 Ok"


class FairTurnTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        core = build_core(self.clock)
        self.policy = SMTPPolicy(hostname="mx.example.com", banner="mx.example.com ESMTP mailserver")
        self.factory = SMTPFactory(anonymous_portal(core), self.policy, self.clock,
                                   max_connections=10, per_client_limit=10)

    def turn(self) -> None:
        """One reactor turn: the calls due now, not those they schedule (as runUntilCurrent)."""
        now = self.clock.seconds()
        for call in [c for c in self.clock.getDelayedCalls() if c.getTime() <= now]:
            if call.active():
                self.clock.calls.remove(call)
                call.called = 1
                call.func(*call.args, **call.kw)

    def session(self, ip: str) -> Session:
        s = Session(self.factory, ip)
        s.replies()
        self.addCleanup(lambda: s.transport.disconnecting or s.protocol.connectionLost(None))
        return s

    def test_regression_noop_flood_answered_over_turns(self) -> None:
        """10,000 pipelined NOOPs were all answered in one reactor turn; now 100 a turn, others in between."""
        flood, other = self.session("192.0.2.1"), self.session("192.0.2.2")
        count = 10_000
        self.assertEqual(flood.send(b"NOOP\r\n" * count), [NOOP_OK] * COMMANDS_PER_TURN)
        self.assertEqual(flood.transport.producerState, "paused")
        answered, turns = COMMANDS_PER_TURN, 1
        while answered < count and turns < 2 * count // COMMANDS_PER_TURN:  # bounded
            # Another session is answered at once between the flood's turns.
            self.assertEqual(other.send(b"NOOP\r\n"), [NOOP_OK])
            self.assertEqual(flood.transport.producerState, "paused")
            self.turn()
            replies = flood.replies()
            self.assertLessEqual(len(replies), COMMANDS_PER_TURN)
            self.assertEqual(set(replies), {NOOP_OK})
            answered += len(replies)
            turns += 1
        self.assertEqual(answered, count)
        self.assertEqual(turns, count // COMMANDS_PER_TURN)
        # Drained: reading resumes, and the next command is answered at once.
        self.turn()
        self.assertEqual(flood.transport.producerState, "producing")
        self.assertEqual(flood.send(b"NOOP\r\n"), [NOOP_OK])

    def test_replies_stay_in_order_across_turns(self) -> None:
        s = self.session("192.0.2.1")
        s.send(b"EHLO c\r\n")
        commands = [b"NOOP"] * (COMMANDS_PER_TURN - 1) + [b"MAIL FROM:<a@b.example>", b"RSET", b"QUIT"]
        first = s.send(b"".join(c + b"\r\n" for c in commands))
        self.assertEqual(first, [NOOP_OK] * (COMMANDS_PER_TURN - 1) + ["250 2.1.0 Ok"])
        self.turn()
        self.assertEqual(s.replies()[0], "250 2.0.0 Ok")  # RSET
        self.assertTrue(s.transport.disconnecting)  # QUIT

    def test_regression_input_bounded_while_yielding(self) -> None:
        """Input arriving while a session waits for its next turn is bounded by max_pending_bytes."""
        s = self.session("192.0.2.1")
        s.send(b"NOOP\r\n" * (2 * COMMANDS_PER_TURN))
        # A client ignoring the paused reading (the StringTransport reads on).
        replies = s.send(b"NOOP\r\n" * (self.policy.max_pending_bytes // 6 + 1))
        self.assertEqual(replies, ["421 4.7.0 Error: too much pipelined input"])
        self.assertTrue(s.transport.disconnecting)
        self.assertEqual(s.protocol._buffer, b"")
        self.turn()  # the pending turn answers nothing more
        self.assertEqual(s.replies(), [])

    def test_turn_cancelled_on_connection_lost(self) -> None:
        s = self.session("192.0.2.1")
        s.send(b"NOOP\r\n" * (2 * COMMANDS_PER_TURN))
        s.protocol.connectionLost(None)
        self.assertEqual([c for c in self.clock.getDelayedCalls() if c.getTime() == self.clock.seconds()
                          and getattr(c.func, "__name__", "") == "_take_turn"], [])
