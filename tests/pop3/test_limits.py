"""POP3 connection limits, the login deadline and mail_max_userip_connections (StringTransport, Clock)."""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from mailserver.limits import DescriptorBudget, LoginLimits
from tests.pop3.support import Fixture


class POP3LimitTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.fixture = Fixture(self.mktemp())
        self.fixture.maildir("alice")

    def connect(self, limits: LoginLimits, ip: str = "192.0.2.1", port: int = 50000) -> tuple[Any, StringTransport]:
        self.fixture.factory.limits = limits
        transport = StringTransport(peerAddress=IPv4Address("TCP", ip, port))
        protocol = self.fixture.factory.buildProtocol(None)
        protocol.makeConnection(transport)

        def close() -> None:
            if not transport.disconnecting:
                protocol.connectionLost(Failure(ConnectionDone()))

        self.addCleanup(close)
        return protocol, transport

    def login(self, protocol: Any, transport: StringTransport) -> bytes:
        protocol.dataReceived(b"USER alice\r\n")
        transport.clear()
        protocol.dataReceived(b"PASS secret\r\n")
        return transport.value()

    def test_regression_prelogin_connections_limited(self) -> None:
        """Unauthenticated POP3 connections were never limited: over the total, -ERR [SYS/TEMP] and close."""
        limits = LoginLimits("pop3", client_limit=2)
        first = self.connect(limits, "192.0.2.1")
        self.connect(limits, "192.0.2.2")
        protocol, transport = self.connect(limits, "192.0.2.3")
        self.assertEqual(transport.value(), b"-ERR [SYS/TEMP] Too many connections, try again later.\r\n")
        self.assertTrue(transport.disconnecting)
        protocol.dataReceived(b"USER alice\r\n")  # not read
        self.assertEqual(transport.value(), b"-ERR [SYS/TEMP] Too many connections, try again later.\r\n")
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(sum(limits.connections.values()), 2)
        first[0].connectionLost(Failure(ConnectionDone()))
        _, transport = self.connect(limits, "192.0.2.3")
        self.assertTrue(transport.value().startswith(b"+OK"))

    def test_per_address_limit(self) -> None:
        limits = LoginLimits("pop3", per_ip_limit=1)
        self.connect(limits, "192.0.2.1")
        _, transport = self.connect(limits, "192.0.2.1", 50001)
        self.assertEqual(transport.value(), b"-ERR [SYS/TEMP] Too many connections from your address.\r\n")

    def test_descriptor_reserve(self) -> None:
        budget = DescriptorBudget(1000, self.fixture.clock, count_open=lambda: 900)  # reserve: 100
        _, transport = self.connect(LoginLimits("pop3", budget=budget))
        self.assertEqual(transport.value(), b"-ERR [SYS/TEMP] Server busy, try again later.\r\n")

    def test_login_timeout(self) -> None:
        protocol, transport = self.connect(LoginLimits("pop3", login_timeout=60))
        self.fixture.clock.advance(30)
        protocol.dataReceived(b"CAPA\r\n")  # activity does not extend it
        transport.clear()
        self.fixture.clock.advance(30)
        self.assertEqual(transport.value(), b"-ERR Disconnected: no login in time.\r\n")
        self.assertTrue(transport.disconnecting)

    def test_login_cancels_the_login_timeout(self) -> None:
        protocol, transport = self.connect(LoginLimits("pop3", login_timeout=60))
        self.assertIn(b"+OK", self.login(protocol, transport))
        self.fixture.clock.advance(120)
        self.assertFalse(transport.disconnecting)

    def test_mail_max_userip_connections_enforced(self) -> None:
        """Declared and documented but not enforced: a second session of alice from one address is refused."""
        limits = LoginLimits("pop3", userip_limit=1)
        first = self.connect(limits, "192.0.2.1")
        second = self.connect(limits, "192.0.2.1", 50001)
        self.assertIn(b"+OK Logged in", self.login(*first))
        self.assertEqual(
            self.login(*second),
            b"-ERR [IN-USE] Maximum number of connections from user+IP exceeded (mail_max_userip_connections=1).\r\n",
        )
        first[0].dataReceived(b"QUIT\r\n")
        first[0].connectionLost(Failure(ConnectionDone()))
        self.assertIn(b"+OK Logged in", self.login(*second))
