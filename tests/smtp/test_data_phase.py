"""The DATA phase on StringTransport: deadlines on an injected clock, spool back-pressure and clean-up."""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from mailserver.delivery.incoming import IncomingSpool
from mailserver.smtp.deadline import DataDeadline
from mailserver.smtp.factory import SMTPFactory
from mailserver.smtp.server import SMTPPolicy
from tests.fakes import MemoryStore, anonymous_portal, build_core
from tests.reactors import ThreadedClock
from tests.smtp.test_server import Session

ENVELOPE = b"EHLO c\r\nMAIL FROM:<x@remote.example>\r\nRCPT TO:<alice@example.com>\r\nDATA\r\n"
TIMEOUT = "421 4.4.2 mx.example.com Error: timeout exceeded"


class DataPhaseCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = ThreadedClock(synchronous=True)
        self.store = MemoryStore()
        self.directory = os.path.abspath(self.mktemp())
        self.spool = IncomingSpool(self.directory, self.clock, threshold=1000, high_water=2000)
        self.spool.clear()

    def session(self, **policy: object) -> Session:
        core = build_core(self.clock, store=self.store, spool=self.spool, message_size_limit=1 << 20)
        settings = dict(hostname="mx.example.com", banner="mx ESMTP", timeout=300, data_time_limit=600,
                        min_data_rate=500, message_size_limit=1 << 20)
        settings.update(policy)
        factory = SMTPFactory(anonymous_portal(core), SMTPPolicy(**settings), self.clock, max_connections=5)
        session = Session(factory)
        session.replies()
        self.assertEqual(session.send(ENVELOPE)[-1], "354 End data with <CR><LF>.<CR><LF>")
        return session

    def files(self) -> list[str]:
        return os.listdir(self.directory)


class DeadlineTests(DataPhaseCase):
    def test_regression_data_drip_disconnected(self) -> None:
        """A byte a second during DATA used to keep the connection forever (each read reset smtpd_timeout)."""
        session = self.session()
        replies: list[str] = []
        for _ in range(1000):  # bounded: the deadline falls after about smtpd_timeout seconds
            replies += session.send(b"x")
            if session.transport.disconnecting:
                break
            self.clock.advance(1)
            replies += session.replies()
        self.assertEqual(replies, [TIMEOUT])
        self.assertTrue(session.transport.disconnecting)
        self.assertLess(self.clock.seconds(), 310)
        self.assertEqual(self.store.delivered, [])

    def test_data_time_limit_caps_a_fast_enough_client(self) -> None:
        session = self.session(data_time_limit=60)
        for _ in range(59):
            self.assertEqual(session.send(b"y" * 1000 + b"\r\n"), [])
            self.clock.advance(1)
        self.clock.advance(1)
        self.assertEqual(session.replies(), [TIMEOUT])
        self.assertTrue(session.transport.disconnecting)
        self.assertEqual(self.store.delivered, [])
        self.assertEqual(self.files(), [])  # the spool file went with the transaction

    def test_client_above_the_rate_finishes(self) -> None:
        session = self.session(data_time_limit=0)
        for _ in range(400):  # 400 s at 1 KB/s: slow, but above 500 bytes/s
            session.send(b"z" * 1000 + b"\r\n")
            self.clock.advance(1)
        replies = session.send(b".\r\n")
        self.assertRegex(replies[0], r"^250 2\.0\.0 Ok")
        self.assertEqual(len(self.store.delivered), 1)
        self.assertEqual(self.files(), [])

    def test_deadline_stopped_after_data(self) -> None:
        """
        After end of data no DATA deadline is due (its timer, kept for the
        next DATA phase, fires idle); the connection's end drops it.
        """
        session = self.session(data_time_limit=60)
        self.assertEqual(len(self.clock.getDelayedCalls()), 2)  # smtpd_timeout and the DATA deadline
        self.assertRegex(session.send(b"hi\r\n.\r\n")[0], r"^250 ")
        self.clock.advance(61)
        self.assertEqual(session.replies(), [])
        self.assertFalse(session.transport.disconnecting)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)  # smtpd_timeout only, once it fired idle
        session.protocol.connectionLost(None)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_regression_one_timer_for_two_messages(self) -> None:
        """The second DATA phase reuses the first one's timer, and its deadline still applies."""
        session = self.session(data_time_limit=60)
        self.assertRegex(session.send(b"hi\r\n.\r\n")[0], r"^250 ")
        pending = set(map(id, self.clock.getDelayedCalls()))
        self.assertEqual(len(pending), 2)  # smtpd_timeout and the idle DATA timer
        self.clock.advance(10)
        replies = session.send(b"MAIL FROM:<s@remote.example>\r\nRCPT TO:<alice@example.com>\r\nDATA\r\n")
        self.assertRegex(replies[-1], r"^354 ")
        self.assertEqual(set(map(id, self.clock.getDelayedCalls())), pending)  # the same timer, not a new one
        for _ in range(59):
            self.assertEqual(session.send(b"y" * 1000 + b"\r\n"), [])
            self.clock.advance(1)
        self.clock.advance(1)
        self.assertEqual(session.replies(), [TIMEOUT])

    def test_time_paused_by_us_does_not_count(self) -> None:
        expired: list[str] = []
        deadline = DataDeadline(self.clock, expired.append, time_limit=100, timeout=300, min_rate=500)
        self.clock.advance(50)
        deadline.pause()
        self.clock.advance(1000)
        self.assertEqual(expired, [])
        deadline.resume()
        self.clock.advance(49)
        self.assertEqual(expired, [])
        self.clock.advance(1)
        self.assertEqual(expired, ["smtpd_data_time_limit"])


class SpoolFlowTests(DataPhaseCase):
    def test_transport_paused_while_the_writer_is_behind(self) -> None:
        self.clock.pool.synchronous = False
        session = self.session()
        session.send(b"a" * 998 + b"\r\n")  # in memory
        for _ in range(3):
            session.send(b"b" * 998 + b"\r\n")  # spilled, waiting for the writer thread
        self.assertEqual(session.transport.producerState, "paused")
        self.clock.pool.run()
        self.assertEqual(session.transport.producerState, "producing")
        session.send(b".\r\n")
        self.clock.pool.run()
        self.assertRegex(session.replies()[0], r"^250 2\.0\.0 Ok")
        [(_, stored)] = self.store.delivered
        self.assertTrue(stored.endswith(b"a" * 998 + b"\n" + (b"b" * 998 + b"\n") * 3))
        self.assertEqual(self.files(), [])

    def test_regression_spool_file_removed_on_connection_loss(self) -> None:
        session = self.session()
        session.send(b"c" * 5000 + b"\r\n")
        self.assertEqual(len(self.files()), 1)
        session.protocol.connectionLost(None)
        self.assertEqual(self.files(), [])

    def test_size_limit_stops_storing_then_552(self) -> None:
        session = self.session()
        for _ in range(20):
            session.send(b"d" * 65534 + b"\r\n")
        self.assertEqual(self.files(), [])  # past the limit: stopped storing at once
        replies = session.send(b".\r\n")
        self.assertEqual(replies, ["552 5.3.4 Message size exceeds fixed limit"])
        self.assertEqual(self.store.delivered, [])
