"""
Per-client connection and message rate limits, as Postfix's anvil counts
them: C{smtpd_client_connection_rate_limit} connections and
C{smtpd_client_message_rate_limit} messages per client address within any
C{anvil_rate_time_unit} (a sliding window), clients in
C{smtpd_client_event_limit_exceptions} exempt.

Memory is bounded: a client keeps at most C{limit} time stamps, clients
idle for a whole time unit are dropped by L{RateLimiter.prune}, and at most
C{max_clients} are tracked (the least recently active go first).  Pure:
time is an argument.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any, Iterable

from mailserver.errors import MailError

MAX_CLIENTS = 100_000


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    count: int  # events in the window, this one included (as Postfix logs it)


class SlidingCounter:
    """Events per key within the last C{unit} seconds, refusing beyond C{limit} (0: no limit)."""

    def __init__(self, limit: int, unit: float, max_keys: int = MAX_CLIENTS) -> None:
        self.limit = limit
        self.unit = unit
        self.max_keys = max_keys
        self._events: OrderedDict[str, deque[float]] = OrderedDict()

    def hit(self, key: str, now: float) -> RateDecision:
        """Count an event for C{key} unless it would exceed the limit."""
        if self.limit <= 0:
            return RateDecision(True, 0)
        events = self._events.get(key)
        if events is None:
            events = deque(maxlen=self.limit)
            self._events[key] = events
            while len(self._events) > self.max_keys:  # bounded: one eviction per new key
                self._events.popitem(last=False)
        else:
            self._events.move_to_end(key)
        while events and events[0] <= now - self.unit:  # bounded by maxlen
            events.popleft()
        if len(events) >= self.limit:
            return RateDecision(False, len(events) + 1)
        events.append(now)
        return RateDecision(True, len(events))

    def count(self, key: str, now: float) -> int:
        events = self._events.get(key, ())
        return sum(1 for t in events if t > now - self.unit)

    def prune(self, now: float) -> int:
        """Drop keys with no event in the last unit; returns how many."""
        idle = [k for k, events in self._events.items() if not events or events[-1] <= now - self.unit]
        for key in idle:
            del self._events[key]
        return len(idle)

    def __len__(self) -> int:
        return len(self._events)


def _networks(items: Iterable[Any]) -> tuple[Any, ...]:
    return tuple(ipaddress.ip_network(n, strict=False) if isinstance(n, str) else n for n in items)


class RateLimiter:
    """The two anvil rates of the SMTP server, per client address."""

    def __init__(
        self, connection_limit: int, message_limit: int, unit: float,
        exceptions: Iterable[Any] = (), max_clients: int = MAX_CLIENTS,
    ) -> None:  # fmt: skip
        self.connections = SlidingCounter(connection_limit, unit, max_clients)
        self.messages = SlidingCounter(message_limit, unit, max_clients)
        self.exceptions = _networks(exceptions)

    @classmethod
    def from_config(cls, config: Any) -> "RateLimiter":
        return cls(
            config.smtpd_client_connection_rate_limit, config.smtpd_client_message_rate_limit,
            float(config.anvil_rate_time_unit), config.smtpd_client_event_limit_exceptions,
        )  # fmt: skip

    def _exempt(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.exceptions)

    def connection(self, address: str, now: float) -> RateDecision:
        """At connect: may this client open one more connection?"""
        if self._exempt(address):
            return RateDecision(True, 0)
        return self.connections.hit(address, now)

    def message(self, address: str, now: float) -> RateDecision:
        """At MAIL FROM: may this client send one more message?"""
        if self._exempt(address):
            return RateDecision(True, 0)
        return self.messages.hit(address, now)

    def prune(self, now: float) -> int:
        return self.connections.prune(now) + self.messages.prune(now)


def connection_error(client: str, address: str) -> MailError:
    """Postfix's reply when the connection rate is exceeded (the session then closes)."""
    return MailError(421, "4.7.0", f"{client}[{address}] Error: too many connections from {address}")


def message_error(client: str, address: str) -> MailError:
    """Postfix's reply when the message rate is exceeded."""
    return MailError(421, "4.7.0", f"{client}[{address}] Error: too much mail from {address}")


def warning_line(kind: str, count: int, client: str, address: str, service: str = "smtp") -> str:
    """Postfix's log line: C{warning: Connection rate limit exceeded: 31 from host[addr] for service smtp}."""
    return f"warning: {kind} rate limit exceeded: {count} from {client}[{address}] for service {service}"
