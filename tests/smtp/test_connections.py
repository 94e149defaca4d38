"""Connection slots: idle sessions make room under stress; refusals logged, rate-limited (issue 18)."""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, connectProtocol
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs, formatEvent
from twisted.protocols.basic import LineReceiver
from twisted.trial.unittest import SynchronousTestCase, TestCase

from mailserver.smtp.connections import RateLimitedLog
from mailserver.smtp.factory import SMTPFactory
from mailserver.smtp.server import SMTPPolicy
from tests.fakes import anonymous_portal, build_core
from tests.smtp.test_server import Session

EVICTED = "421 4.7.0 mx.example.com Error: too many connections, closing idle session"


class StressTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.policy = SMTPPolicy(hostname="mx.example.com", banner="mx.example.com ESMTP", timeout=300)
        self.factory = SMTPFactory(anonymous_portal(build_core(self.clock)), self.policy, self.clock,
                                   max_connections=10, per_client_limit=5, stress_timeout=10)

    def fill(self, count: int, command: bytes = b"EHLO c\r\n") -> list[Session]:
        sessions = []
        for n in range(count):
            session = Session(self.factory, f"192.0.2.{n // 5 + 1}")
            session.send(command)
            sessions.append(session)
        return sessions

    def test_regression_idle_session_evicted_before_anyone_is_refused(self) -> None:
        # 500 idle connections from 100 addresses locked every other client out with 421.
        sessions = self.fill(10)
        self.clock.advance(4)
        for session in sessions[1:]:
            session.send(b"NOOP\r\n")
        self.clock.advance(2)
        with capturedLogs() as events:
            newcomer = Session(self.factory, "203.0.113.5")
        self.assertEqual(newcomer.replies(), ["220 mx.example.com ESMTP"])
        self.assertEqual(sessions[0].replies(), [EVICTED])  # the one idle longest
        self.assertTrue(sessions[0].transport.disconnecting)
        self.assertFalse(any(s.transport.disconnecting for s in sessions[1:]))
        self.assertEqual(len(self.factory.slots.sessions), 10)
        [line] = [formatEvent(e) for e in events]
        self.assertEqual(line, "idle session closed under stress: rip=192.0.2.1 idle=6s connections=9")
        sessions[0].protocol.connectionLost(None)  # the slot was given back once only
        self.assertEqual(len(self.factory.slots.sessions), 10)

    def test_sessions_in_a_transaction_are_kept(self) -> None:
        self.fill(10, b"EHLO c\r\nMAIL FROM:<a@b.example>\r\n")
        self.clock.advance(60)
        with capturedLogs() as events:
            refused = Session(self.factory, "203.0.113.5")
        self.assertEqual(refused.replies(), ["421 4.7.0 Error: too many connections"])
        self.assertEqual([formatEvent(e) for e in events],
                         ["connection refused: rip=203.0.113.5 reason=too many connections connections=10"])

    def test_a_burst_is_refused_not_churned(self) -> None:
        self.fill(10)
        refused = Session(self.factory, "203.0.113.5")  # nobody has been idle for a second yet
        self.assertEqual(refused.replies(), ["421 4.7.0 Error: too many connections"])

    def test_sessions_idle_past_the_stress_timeout_all_closed(self) -> None:
        sessions = self.fill(8)  # 80 %: under stress (from the eighth session's EHLO on)
        self.clock.advance(9)
        sessions[7].send(b"NOOP\r\n")
        self.clock.advance(2)
        Session(self.factory, "203.0.113.5")
        self.assertEqual([s.transport.disconnecting for s in sessions], [True] * 7 + [False])

    def test_short_idle_timeout_under_stress(self) -> None:
        sessions = self.fill(8)
        self.assertEqual(sessions[0].send(b"NOOP\r\n"), ["250 2.0.0 Ok"])
        self.clock.advance(10)
        self.assertEqual(sessions[0].replies(), ["421 4.4.2 mx.example.com Error: timeout exceeded"])
        # A session in a mail transaction keeps smtpd_timeout.
        sessions[1].send(b"MAIL FROM:<a@b.example>\r\n")
        self.clock.advance(60)
        self.assertEqual(sessions[1].replies(), [])

    def test_normal_timeout_without_stress(self) -> None:
        [session] = self.fill(1)
        session.send(b"NOOP\r\n")
        self.clock.advance(10)
        self.assertEqual(session.replies(), [])

    def test_regression_idle_timeout_counts_from_the_last_command(self) -> None:
        """Commands do not reset the timer (it re-arms when it fires), yet a session closes 300 s after its last one."""
        [session] = self.fill(1)
        timers = len(self.clock.getDelayedCalls())
        self.clock.advance(200)
        for _ in range(3):
            session.send(b"NOOP\r\n")
        self.assertEqual(len(self.clock.getDelayedCalls()), timers)
        self.clock.advance(150)  # the first arming ran out at 300 s: idle 150 s, armed again for the rest
        self.assertEqual(session.replies(), [])
        self.assertFalse(session.transport.disconnecting)
        self.clock.advance(149)
        self.assertEqual(session.replies(), [])
        self.clock.advance(1)  # 300 s after the last NOOP
        self.assertEqual(session.replies(), ["421 4.4.2 mx.example.com Error: timeout exceeded"])


class RefusalLogTests(SynchronousTestCase):
    def test_regression_refusals_logged_once_per_address_per_minute(self) -> None:
        clock = MemoryReactorClock()
        factory = SMTPFactory(anonymous_portal(build_core(clock)), SMTPPolicy(hostname="mx", banner="mx"), clock,
                              max_connections=10, per_client_limit=1)
        Session(factory, "192.0.2.1")
        with capturedLogs() as events:
            for _ in range(5):
                Session(factory, "192.0.2.1")
            Session(factory, "192.0.2.2")
            clock.advance(61)
            Session(factory, "192.0.2.1")
        self.assertEqual([formatEvent(e) for e in events], [
            "connection refused: rip=192.0.2.1 reason=too many connections from 192.0.2.1 connections=1",
            "connection refused: rip=192.0.2.1 reason=too many connections from 192.0.2.1 connections=2"
            " (4 similar lines suppressed)",
        ])

    def test_memory_bounded(self) -> None:
        clock = Clock()
        notices = RateLimitedLog(clock, interval=60, max_keys=3)
        with capturedLogs() as events:
            logged = [notices.warn(n, "x {n}", n=n) for n in range(5)]
        self.assertEqual(logged, [True, True, True, False, False])
        self.assertEqual(len(events), 3)
        clock.advance(60)
        self.assertTrue(notices.warn(9, "x"))


class Client(LineReceiver):
    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.greeted: Deferred = Deferred()
        self.closed: Deferred = Deferred()

    def lineReceived(self, line: bytes) -> None:
        self.lines.append(line)
        if len(self.lines) == 1:
            self.greeted.callback(line)

    def connectionLost(self, reason) -> None:
        self.closed.callback(self.lines)


class LoopbackStressTests(TestCase):
    @inlineCallbacks
    def test_newcomer_served_when_idle_clients_fill_the_server(self) -> None:
        clock = Clock()  # the sessions' idle time; the sockets are real
        factory = SMTPFactory(anonymous_portal(build_core(clock)), SMTPPolicy(hostname="mx.example.com", banner="mx"),
                              clock, max_connections=5, per_client_limit=0)
        port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
        self.addCleanup(port.stopListening)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
        idle = []
        for _ in range(5):
            client = yield connectProtocol(endpoint, Client())
            yield client.greeted
            idle.append(client)
            self.addCleanup(client.transport.loseConnection)
        clock.advance(30)
        newcomer = yield connectProtocol(endpoint, Client())
        self.addCleanup(newcomer.transport.loseConnection)
        self.assertEqual((yield newcomer.greeted), b"220 mx")
        lines = yield idle[0].closed
        self.assertEqual(lines, [b"220 mx", EVICTED.encode()])
