"""An SMTP session with SASL on StringTransport, for the AUTH tests and the AUTH fuzz test."""

from __future__ import annotations

import base64

from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport

from mailserver.auth.challengers import CHALLENGERS
from mailserver.auth.throttle import AuthThrottle
from mailserver.smtp.factory import SMTPFactory
from mailserver.smtp.server import SMTPPolicy
from tests.fakes import anonymous_portal, build_core

PEER = "198.51.100.7"


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


class AuthSession:
    """EHLO done; C{send} returns the reply lines, once the throttle's delays have passed."""

    def __init__(self, throttle: bool = True, limit: int = 100, ehlo: bool = True) -> None:
        self.clock = MemoryReactorClock()
        portal = anonymous_portal(build_core(self.clock))
        portal.registerChecker(InMemoryUsernamePasswordDatabaseDontUse(alice=b"right"))
        self.throttle = AuthThrottle(self.clock, base_delay=2, limit=limit) if throttle else None
        policy = SMTPPolicy(hostname="mx.example.com", banner="mx.example.com ESMTP", disable_plaintext_auth=False)
        self.factory = SMTPFactory(portal, policy, self.clock, challengers=dict(CHALLENGERS), throttle=self.throttle)
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", PEER, 4000))
        self.protocol = self.factory.buildProtocol(None)
        self.protocol.makeConnection(self.transport)
        if ehlo:
            self.send(b"EHLO client.example\r\n")

    def send(self, data: bytes) -> list[str]:
        self.transport.clear()
        self.protocol.dataReceived(data)
        self.clock.advance(60)  # past any failure delay
        return [line for line in self.transport.value().decode("latin-1").split("\r\n") if line]

    def failures(self) -> int:
        assert self.throttle is not None
        return self.throttle.failures(PEER)
