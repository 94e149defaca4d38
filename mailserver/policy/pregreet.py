"""
The pregreet test of Postfix's postscreen: spambots often talk before the
server has greeted them.

L{PregreetFactory} wraps an SMTP server factory.  On connect it sends the
first line of a multi-line greeting (C{220-banner}) and waits
C{postscreen_greet_wait}; only then does the wrapped SMTP session start
(its own C{220 ...} line ends the greeting).  A client that sends anything
during the wait is logged as postscreen does (C{PREGREET 11 after 0.05
from [192.0.2.1]:4567: EHLO x}) and, with C{postscreen_greet_action =
drop}, gets C{521 5.5.1 Protocol error} and is disconnected; with
C{ignore} what it sent is passed on once the session starts.  Clients in
the exempt networks (C{mynetworks}), and clients that passed within
C{postscreen_greet_ttl}, start at once, as with postscreen's cache.  The
clock is injected.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from typing import Any, Iterable

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.internet.protocol import Protocol
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from zope.interface import directlyProvides, providedBy

log = Logger()

DROP_REPLY = b"521 5.5.1 Protocol error\r\n"
#: At most this much early input is kept (for "ignore"); more is a drop anyway.
MAX_EARLY = 4096
#: Clients remembered as having passed (postscreen's cache), at most.
MAX_REMEMBERED = 100_000


class PregreetGuard(ProtocolWrapper):
    """One connection: the partial greeting, the wait, then the wrapped SMTP session."""

    factory: "PregreetFactory"

    def __init__(self, factory: "PregreetFactory", wrapped: Any) -> None:
        super().__init__(factory, wrapped)
        self._early = b""
        self._started_at = 0.0
        self._timer: IDelayedCall | None = None
        self.violation = False

    def makeConnection(self, transport: Any) -> None:
        # As ProtocolWrapper.makeConnection (the wrapper offers what the transport
        # offers, e.g. ITLSTransport for STARTTLS), but the SMTP session starts later.
        directlyProvides(self, providedBy(transport))
        Protocol.makeConnection(self, transport)
        self.factory.registerProtocol(self)
        if self.factory.trusted(getattr(transport.getPeer(), "host", "")):
            self.wrappedProtocol.makeConnection(self)
            return
        self._started_at = self.factory.clock.seconds()
        transport.write(b"220-" + self.factory.banner.encode() + b"\r\n")
        self._timer = self.factory.clock.callLater(self.factory.wait, self._greet)

    def _greet(self) -> None:
        self._timer = None
        if not self.violation:
            self.factory.passed(getattr(self.transport.getPeer(), "host", ""))
        self.wrappedProtocol.makeConnection(self)
        early, self._early = self._early, b""
        if early and self.connected:
            self.wrappedProtocol.dataReceived(early)

    def dataReceived(self, data: bytes) -> None:
        if self._timer is None:
            self.wrappedProtocol.dataReceived(data)
            return
        if not self.violation:
            self.violation = True
            peer = self.transport.getPeer()
            after = self.factory.clock.seconds() - self._started_at
            first = data.split(b"\n", 1)[0].rstrip(b"\r")[:100].decode("ascii", "replace")
            log.info(
                "PREGREET {count} after {after:.2f} from [{host}]:{port}: {line}",
                count=len(data), after=after, host=getattr(peer, "host", "?"),
                port=getattr(peer, "port", 0), line=first,
            )  # fmt: skip
        if self.factory.action == "drop" or len(self._early) + len(data) > MAX_EARLY:
            self._timer.cancel()
            self._timer = None
            self.transport.write(DROP_REPLY)
            self.transport.loseConnection()
            return
        self._early += data

    def connectionLost(self, reason: Any) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self.connected = 0
            self.factory.unregisterProtocol(self)
            return
        super().connectionLost(reason)


class PregreetFactory(WrappingFactory):
    """Wraps an SMTP server factory with the pregreet test."""

    protocol = PregreetGuard  # type: ignore[assignment]

    def __init__(self, wrapped: Any, clock: IReactorTime, banner: str, wait: float,
                 action: str = "ignore", ttl: float = 86400.0, exempt: Iterable[Any] = (),
                 max_remembered: int = MAX_REMEMBERED) -> None:  # fmt: skip
        if action not in ("ignore", "drop"):
            raise ValueError(f"postscreen_greet_action: {action!r} (ignore or drop)")
        super().__init__(wrapped)
        self.clock = clock
        self.banner = banner
        self.wait = wait
        self.action = action
        self.ttl = ttl
        self.exempt = tuple(ipaddress.ip_network(n) if isinstance(n, str) else n for n in exempt)
        self.max_remembered = max_remembered
        self._passed: OrderedDict[str, float] = OrderedDict()

    def trusted(self, host: str) -> bool:
        """Exempt networks (mynetworks), or a client that passed within C{postscreen_greet_ttl}."""
        try:
            if any(ipaddress.ip_address(host) in network for network in self.exempt):
                return True
        except ValueError:
            return False
        when = self._passed.get(host)
        return when is not None and self.clock.seconds() - when < self.ttl

    def passed(self, host: str) -> None:
        """Remember a client that waited (bounded: the oldest are forgotten first)."""
        self._passed.pop(host, None)
        self._passed[host] = self.clock.seconds()
        while len(self._passed) > self.max_remembered:
            self._passed.popitem(last=False)
