"""The SMTP listener: builds sessions, counts connections, holds TLS and AUTH settings."""

from __future__ import annotations

from collections import Counter
from typing import Any

from twisted.logger import Logger
from twisted.mail import smtp

from mailserver.smtp.server import ESMTPServer, SMTPPolicy


class _LimitedSession(ESMTPServer):
    """A session that first asks its factory for a connection slot."""

    def connectionMade(self) -> None:
        peer = self.transport.getPeer()
        ip = getattr(peer, "host", str(peer))
        refusal = self.factory.admit(ip)
        if refusal:
            self._counted = False
            self.transport.write(b"421 4.7.0 " + refusal.encode() + b"\r\n")
            self.transport.loseConnection()
            return
        self._counted = True
        super().connectionMade()

    def connectionLost(self, reason) -> None:
        if getattr(self, "_counted", False):
            self.factory.release(self.peer_ip)
            self._counted = False
            super().connectionLost(reason)


class SMTPFactory(smtp.SMTPFactory):
    """
    twisted.mail's SMTP factory for our sessions: a portal (anonymous or
    SASL logins give the delivery avatar), a policy, and the
    connection limits C{smtpd_max_connections} and
    C{smtpd_client_connection_count_limit}.
    """

    protocol = _LimitedSession
    noisy = False
    log = Logger(namespace="mailserver.smtp")

    def __init__(
        self,
        portal: Any,
        policy: SMTPPolicy,
        clock: Any,
        max_connections: int = 500,
        per_client_limit: int = 50,
        context_factory: Any = None,
        challengers: dict[bytes, Any] | None = None,
        implicit_tls: bool = False,
        throttle: Any = None,
    ) -> None:
        super().__init__(portal)
        self.policy = policy
        self.clock = clock
        self.max_connections = max_connections
        self.per_client_limit = per_client_limit
        self.context_factory = context_factory
        self.challengers = challengers or {}
        self.implicit_tls = implicit_tls
        self.throttle = throttle
        self.connections: Counter[str] = Counter()

    def buildProtocol(self, addr):
        session = self.protocol(
            self.policy, self.portal, self.clock, chal=dict(self.challengers), contextFactory=self.context_factory
        )
        session.factory = self
        return session

    def admit(self, ip: str) -> str | None:
        """Count a new connection from C{ip}; the refusal text if over a limit."""
        if sum(self.connections.values()) >= self.max_connections:
            return "Error: too many connections"
        if self.per_client_limit and self.connections[ip] >= self.per_client_limit:
            return f"Error: too many connections from {ip}"
        self.connections[ip] += 1
        return None

    def release(self, ip: str) -> None:
        self.connections[ip] -= 1
        if self.connections[ip] <= 0:
            del self.connections[ip]
