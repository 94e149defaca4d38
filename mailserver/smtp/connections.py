"""
SMTP connection slots: C{smtpd_max_connections} and
C{smtpd_client_connection_count_limit}, with idle sessions making room
under stress, and refusals logged one line per client address at most per
minute.

Like Postfix under stress (its C{smtpd_timeout} of C{${stress?{10}:{300}}}),
from 80% of C{smtpd_max_connections} on a session idle outside a mail
transaction may stay so for C{smtpd_stress_timeout} only, and a new
connection first closes such sessions (those past that time, else the one
idle longest) before anyone is refused: 500 idle connections cannot lock
everybody else out.
"""

from __future__ import annotations

from collections import Counter
from typing import Protocol

from twisted.internet.interfaces import IReactorTime

from mailserver.ratelog import RateLimitedLog

#: Share of smtpd_max_connections from which the server is under stress.
STRESS_RATIO = 0.8
#: A session idle for less than this is never evicted (a client between two commands).
MIN_IDLE = 1.0


class Slotted(Protocol):
    """What the slots need of a session."""

    last_active: float

    def idle_outside_transaction(self) -> bool:
        """No mail transaction or command under way: the session may be evicted."""

    def evict(self, reason: str) -> None:
        """Answer 421 with C{reason} and close."""


class ConnectionSlots:
    """The connections of one SMTP listener, counted in all and per client address."""

    def __init__(
        self,
        clock: IReactorTime,
        max_connections: int,
        per_client_limit: int,
        stress_timeout: float,
    ) -> None:
        self.clock = clock
        self.max_connections = max_connections
        self.per_client_limit = per_client_limit
        self.stress_timeout = stress_timeout
        self.stress_level = max(1, int(max_connections * STRESS_RATIO))
        self.sessions: dict[Slotted, str] = {}  # session -> client address, oldest first
        self.per_client: Counter[str] = Counter()
        self.notices = RateLimitedLog(clock, namespace="mailserver.smtp")

    def under_stress(self) -> bool:
        return len(self.sessions) >= self.stress_level

    def admit(self, session: Slotted, ip: str) -> str | None:
        """Give C{session} a slot; the refusal text if it gets none."""
        refusal = None
        if self.per_client_limit and self.per_client[ip] >= self.per_client_limit:
            refusal = f"Error: too many connections from {ip}"
        else:
            if self.under_stress():
                self._make_room()
            if len(self.sessions) >= self.max_connections:
                refusal = "Error: too many connections"
        if refusal is not None:
            self.notices.warn(
                ("refused", ip), "connection refused: rip={rip} reason={reason} connections={count}",
                rip=ip, reason=refusal.removeprefix("Error: "), count=len(self.sessions), refused="smtp",
            )
            return refusal
        self.sessions[session] = ip
        self.per_client[ip] += 1
        return None

    def release(self, session: Slotted) -> None:
        ip = self.sessions.pop(session, None)
        if ip is None:
            return
        self.per_client[ip] -= 1
        if self.per_client[ip] <= 0:
            del self.per_client[ip]

    def _make_room(self) -> None:
        """Close sessions idle past the stress timeout, or else the one idle longest."""
        now = self.clock.seconds()
        idle = [s for s in self.sessions if s.idle_outside_transaction() and now - s.last_active >= MIN_IDLE]
        expired = [s for s in idle if now - s.last_active >= self.stress_timeout]
        if not expired and idle:
            expired = [min(idle, key=lambda s: s.last_active)]
        for session in expired:
            ip = self.sessions.get(session, "")
            idle_for = now - session.last_active
            self.release(session)
            self.notices.warn(
                ("evicted", ip), "idle session closed under stress: rip={rip} idle={idle}s connections={count}",
                rip=ip, idle=int(idle_for), count=len(self.sessions),
            )
            session.evict("Error: too many connections, closing idle session")
