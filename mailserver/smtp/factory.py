"""The SMTP listener: builds sessions, counts connections, holds TLS and AUTH settings."""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger
from twisted.mail import smtp

from mailserver.smtp.connections import ConnectionSlots
from mailserver.smtp.rate_checks import connection_rate_allowed
from mailserver.smtp.server import ESMTPServer, SMTPPolicy


class _LimitedSession(ESMTPServer):
    """A session that first asks its factory for a connection slot, and may be evicted when idle."""

    _counted = False  # holds a slot
    _started = False  # admitted: the session's own state exists

    def connectionMade(self) -> None:
        peer = self.transport.getPeer()
        ip = getattr(peer, "host", str(peer))
        self.last_active = self.clock.seconds()
        if not connection_rate_allowed(self.factory.rates, self.transport, ip, self.clock.seconds()):
            return
        refusal = self.factory.slots.admit(self, ip)
        if refusal:
            self.transport.write(b"421 4.7.0 " + refusal.encode() + b"\r\n")
            self.transport.loseConnection()
            return
        self._counted = self._started = True
        super().connectionMade()

    def connectionLost(self, reason) -> None:
        if self._counted:
            self.factory.slots.release(self)
            self._counted = False
        if self._started:
            self._started = False
            super().connectionLost(reason)

    def resetTimeout(self) -> None:
        """
        Each command: active now; under stress, the timer is the short one.
        Otherwise a timer already armed for the full timeout is left alone:
        when it fires, L{timeoutConnection} sees the activity since and
        re-arms for the rest (no timer reset for every command line).
        """
        self.last_active = self.clock.seconds()
        if self.timeOut is None or self.transport.disconnecting:
            return
        slots = self.factory.slots
        if slots.under_stress():
            self.setTimeout(min(slots.stress_timeout, self.timeout))
        elif self.timeOut != self.timeout:
            self.setTimeout(self.timeout)

    def timeoutConnection(self) -> None:
        """Idle too long: C{smtpd_timeout}, or the stress timeout outside a mail transaction."""
        idle = self.clock.seconds() - self.last_active
        stressed = self.factory.slots.under_stress() and self.idle_outside_transaction()
        if idle < self.timeout and not stressed:
            self.setTimeout(self.timeout - idle)  # armed short under stress; this session may stay
            return
        super().timeoutConnection()

    def idle_outside_transaction(self) -> bool:
        return self._envelope is None and self._transaction is None and self._pending is None

    def evict(self, reason: str) -> None:
        self._counted = False  # the slot is already given back
        self.reply(421, "4.7.0", f"{self.policy.hostname} {reason}")
        self._flush_replies()
        self.transport.loseConnection()


class SMTPFactory(smtp.SMTPFactory):
    """
    twisted.mail's SMTP factory for our sessions: a portal (anonymous or
    SASL logins give the delivery avatar), a policy, and the
    connection limits C{smtpd_max_connections} and
    C{smtpd_client_connection_count_limit} (L{ConnectionSlots}), and
    the milters of each connection (C{open_milter}).
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
        stress_timeout: float = 10,
        open_milter: Any = None,
        rates: Any = None,
    ) -> None:
        super().__init__(portal)
        self.policy = policy
        self.clock = clock
        self.context_factory = context_factory
        self.challengers = challengers or {}
        self.implicit_tls = implicit_tls
        self.throttle = throttle
        # smtpd_milters: () -> (IMilterSession, MacroContext) for each connection, or None.
        self.open_milter = open_milter
        # smtpd_client_connection_rate_limit, smtpd_client_message_rate_limit (policy.rates.RateLimiter).
        self.rates = rates
        self.slots = ConnectionSlots(clock, max_connections, per_client_limit, stress_timeout)

    def buildProtocol(self, addr):
        session = self.protocol(
            self.policy, self.portal, self.clock, chal=dict(self.challengers), contextFactory=self.context_factory
        )
        session.factory = self
        return session
