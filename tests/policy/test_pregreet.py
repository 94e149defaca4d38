"""The pregreet test: clients that talk before the greeting."""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs
from twisted.protocols.basic import LineReceiver
from twisted.trial.unittest import SynchronousTestCase

from mailserver.policy.pregreet import PregreetFactory


class Banner(LineReceiver):
    def connectionMade(self) -> None:
        self.sendLine(b"220 mx.example.com ESMTP mailserver")

    def lineReceived(self, line: bytes) -> None:
        self.sendLine(b"250 seen " + line)


def connect(action: str = "ignore", factory: PregreetFactory | None = None, host: str = "192.0.2.1"
            ) -> tuple[Clock, StringTransport, object]:  # fmt: skip
    if factory is None:
        factory = PregreetFactory(Factory.forProtocol(Banner), Clock(), "mx.example.com ESMTP", 6,
                                  action, ttl=86400, exempt=["127.0.0.0/8"])  # fmt: skip
    protocol = factory.buildProtocol(IPv4Address("TCP", host, 4567))
    transport = StringTransport(peerAddress=IPv4Address("TCP", host, 4567))
    protocol.makeConnection(transport)
    return factory.clock, transport, protocol


class PregreetTests(SynchronousTestCase):
    def test_patient_client(self) -> None:
        """A client that waits gets the two-line greeting and a normal session."""
        clock, transport, protocol = connect("drop")
        self.assertEqual(transport.value(), b"220-mx.example.com ESMTP\r\n")
        clock.advance(6)
        self.assertEqual(transport.value(), b"220-mx.example.com ESMTP\r\n220 mx.example.com ESMTP mailserver\r\n")
        protocol.dataReceived(b"EHLO client\r\n")
        self.assertTrue(transport.value().endswith(b"250 seen EHLO client\r\n"))
        self.assertFalse(protocol.violation)

    def test_drop(self) -> None:
        """drop: 521 and disconnect; the SMTP session never starts; one PREGREET line is logged."""
        clock, transport, protocol = connect("drop")
        with capturedLogs() as events:
            clock.advance(1)
            protocol.dataReceived(b"EHLO bot\r\n")
        self.assertTrue(transport.value().endswith(b"521 5.5.1 Protocol error\r\n"))
        self.assertTrue(transport.disconnecting)
        self.assertTrue(protocol.violation)
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertIn("PREGREET 10 after 1.00 from [192.0.2.1]:4567: EHLO bot",
                      [e["log_format"].format(**e) for e in events])  # fmt: skip

    def test_ignore(self) -> None:
        """ignore: logged, and what the client sent is handed to the session after the greeting."""
        clock, transport, protocol = connect("ignore")
        protocol.dataReceived(b"EHLO early\r\n")
        self.assertEqual(transport.value(), b"220-mx.example.com ESMTP\r\n")
        clock.advance(6)
        self.assertTrue(transport.value().endswith(b"220 mx.example.com ESMTP mailserver\r\n250 seen EHLO early\r\n"))
        self.assertTrue(protocol.violation)

    def test_ignore_is_bounded(self) -> None:
        """A flood during the wait is dropped instead of buffered."""
        clock, transport, protocol = connect("ignore")
        protocol.dataReceived(b"x" * 5000)
        self.assertTrue(transport.disconnecting)

    def test_lost_during_wait(self) -> None:
        """A client leaving during the wait leaves no timer and no session behind."""
        clock, transport, protocol = connect()
        protocol.connectionLost(None)
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertIsNone(protocol.wrappedProtocol.transport)

    def test_passed_clients_and_mynetworks_skip_the_wait(self) -> None:
        """A client that waited once is greeted at once for postscreen_greet_ttl; mynetworks always."""
        clock, transport, protocol = connect("drop")
        clock.advance(6)
        _, again, _ = connect(factory=protocol.factory)
        self.assertEqual(again.value(), b"220 mx.example.com ESMTP mailserver\r\n")
        clock.advance(86400)
        _, later, _ = connect(factory=protocol.factory)
        self.assertEqual(later.value(), b"220-mx.example.com ESMTP\r\n")
        _, local, _ = connect(factory=protocol.factory, host="127.0.0.1")
        self.assertEqual(local.value(), b"220 mx.example.com ESMTP mailserver\r\n")

    def test_violator_not_remembered(self) -> None:
        clock, transport, protocol = connect("ignore")
        protocol.dataReceived(b"EHLO early\r\n")
        clock.advance(6)
        _, again, _ = connect(factory=protocol.factory)
        self.assertEqual(again.value(), b"220-mx.example.com ESMTP\r\n")

    def test_remembered_is_bounded(self) -> None:
        factory = PregreetFactory(Factory.forProtocol(Banner), Clock(), "b", 6, max_remembered=10)
        for n in range(50):
            factory.passed(f"192.0.2.{n}")
        self.assertEqual(len(factory._passed), 10)
        self.assertTrue(factory.trusted("192.0.2.49"))
        self.assertFalse(factory.trusted("192.0.2.0"))

    def test_bad_action(self) -> None:
        self.assertRaises(ValueError, PregreetFactory, Factory(), Clock(), "b", 6, "enforce")
