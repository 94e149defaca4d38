"""
A real authoritative DNS server on 127.0.0.1 port 0 (UDP and TCP), serving
zones given as Python data, and a twisted.names resolver pointed at it.

No test uses real DNS: SPF, DKIM, DMARC and MTA-STS tests publish their
records here and hand C{server.resolver} to the code under test::

    server = DNSTestServer({
        "example.com": {
            "example.com": [("TXT", "v=spf1 ip4:192.0.2.0/24 -all"), ("MX", (10, "mx.example.com"))],
            "mx.example.com": [("A", "192.0.2.1")],
            "_dmarc.example.com": [("TXT", "v=DMARC1; p=reject")],
        },
    })
    yield server.start(self)      # stops itself at cleanup
    answers = yield server.resolver.lookupText("example.com")

Names under a zone with no records answer NXDOMAIN with the zone's SOA
(whose TTL and MINIMUM, 60 s, give the negative TTL); names outside every
zone answer NXDOMAIN too, without a SOA (the server is not recursive).  Names listed in
C{server.servfail} answer SERVFAIL; names in C{server.silent} never answer
(the client times out).  Records can be changed between queries with
L{DNSTestServer.set}.
"""

from __future__ import annotations

from typing import Any, Iterable

from twisted.internet import defer, reactor as global_reactor
from twisted.names import authority, client, dns, server

Record = tuple[str, Any]

_DEFAULT_TTL = 60


def _txt_strings(text: str | bytes | Iterable[str | bytes]) -> list[bytes]:
    """A TXT value as character-strings of at most 255 bytes (long values split)."""
    if isinstance(text, (str, bytes)):
        data = text.encode() if isinstance(text, str) else text
        return [data[i : i + 255] for i in range(0, len(data), 255)] or [b""]
    return [part.encode() if isinstance(part, str) else part for part in text]


def make_record(kind: str, value: Any, ttl: int = _DEFAULT_TTL) -> Any:
    """A twisted.names record payload from C{(kind, value)}."""
    kind = kind.upper()
    if kind == "TXT":
        return dns.Record_TXT(*_txt_strings(value), ttl=ttl)
    if kind == "A":
        return dns.Record_A(value, ttl=ttl)
    if kind == "AAAA":
        return dns.Record_AAAA(value, ttl=ttl)
    if kind == "MX":
        preference, name = value
        return dns.Record_MX(preference, name.encode(), ttl=ttl)
    if kind == "CNAME":
        return dns.Record_CNAME(value.encode(), ttl=ttl)
    if kind == "PTR":
        return dns.Record_PTR(value.encode(), ttl=ttl)
    if kind == "NS":
        return dns.Record_NS(value.encode(), ttl=ttl)
    raise ValueError(f"unsupported record type {kind}")


class _Zone(authority.FileAuthority):
    """One zone from Python data; the record dict is shared with L{DNSTestServer}."""

    def __init__(self, apex: str, owner: "DNSTestServer") -> None:
        self._apex = apex.lower().rstrip(".")
        self._owner = owner
        super().__init__(None)

    def loadFile(self, filename: Any) -> None:
        apex = self._apex.encode()
        self.soa = (
            apex,
            dns.Record_SOA(
                mname=b"ns." + apex, rname=b"hostmaster." + apex, serial=1, refresh=60, retry=60,
                expire=60, minimum=60, ttl=_DEFAULT_TTL,
            ),
        )
        self.records = self._owner._records

    def _lookup(self, name: bytes, cls: int, type: int, timeout: Any = None) -> defer.Deferred:
        key = name.decode("ascii", "replace").lower().rstrip(".")
        if key in self._owner.silent and dns._isSubdomainOf(name, self.soa[0]):
            self._owner.unanswered.append(key)
            return defer.Deferred()
        return super()._lookup(name, cls, type, timeout)


class DNSTestServer:
    """The server (L{start}) and C{resolver}, a twisted.names client resolver pointed at it."""

    def __init__(self, zones: dict[str, dict[str, list[Record]]], reactor: Any = None) -> None:
        self.reactor = reactor or global_reactor
        self._records: dict[bytes, list[Any]] = {}
        self.servfail: set[str] = set()
        self.silent: set[str] = set()
        self.unanswered: list[str] = []
        self.queries: list[tuple[str, int]] = []
        self._zones = [_Zone(apex, self) for apex in zones]
        for names in zones.values():
            for name, records in names.items():
                self.set(name, records)
        self.port: int | None = None
        self.resolver: client.Resolver | None = None
        self._listening: list[Any] = []

    def set(self, name: str, records: list[Record]) -> None:
        """Replace every record of C{name} (an empty list removes the name)."""
        key = name.lower().rstrip(".").encode()
        if records:
            self._records[key] = [make_record(kind, value) for kind, value in records]
        else:
            self._records.pop(key, None)

    def _soa_of(self, name: bytes) -> tuple[bytes, Any] | None:
        """The (apex, SOA record) of the zone holding C{name}, if any."""
        for zone in self._zones:
            if dns._isSubdomainOf(name, zone.soa[0]):
                return zone.soa
        return None

    def start(self, testcase: Any = None) -> defer.Deferred:
        """Listen on UDP and TCP (same port); fire with the resolver.  Cleans up with C{testcase}."""
        owner = self

        class _Factory(server.DNSServerFactory):
            def handleQuery(self, message, protocol, address):
                names = [query.name.name.decode("ascii", "replace").lower() for query in message.queries]
                owner.queries.extend(zip(names, [query.type for query in message.queries]))
                if owner.servfail.intersection(names):
                    response = self._responseFromMessage(message=message, rCode=dns.ESERVER)
                    return self.sendReply(protocol, response, address)
                return super().handleQuery(message, protocol, address)

            def gotResolverError(self, failure, protocol, message, address):
                """NXDOMAIN with the zone's SOA in the authority section (RFC 2308 3), as real servers answer."""
                soa = owner._soa_of(message.queries[0].name.name) if message.queries else None
                if soa is None or not failure.check(dns.DomainError, dns.AuthoritativeDomainError):
                    return super().gotResolverError(failure, protocol, message, address)
                name, record = soa
                response = self._responseFromMessage(
                    message=message, rCode=dns.ENAME,
                    authority=[dns.RRHeader(name, dns.SOA, dns.IN, record.ttl, record, auth=True)],
                )
                self.sendReply(protocol, response, address)

        factory = _Factory(authorities=self._zones)
        factory.noisy = False
        # Same number on UDP and TCP, as a resolver retries over TCP on truncation.
        for _ in range(20):
            protocol = dns.DNSDatagramProtocol(controller=factory)
            protocol.noisy = False
            udp = self.reactor.listenUDP(0, protocol, interface="127.0.0.1")
            port = udp.getHost().port
            try:
                tcp = self.reactor.listenTCP(port, factory, interface="127.0.0.1")
            except Exception:
                udp.stopListening()
                continue
            break
        else:  # pragma: no cover - loopback exhausted
            raise RuntimeError("no free UDP+TCP port pair on 127.0.0.1")
        self._listening = [udp, tcp]
        self.port = port
        self.resolver = client.Resolver(servers=[("127.0.0.1", port)], reactor=self.reactor)
        if testcase is not None:
            testcase.addCleanup(self.stop)
        return defer.succeed(self.resolver)

    def stop(self) -> defer.Deferred:
        listening, self._listening = self._listening, []
        return defer.gatherResults([defer.maybeDeferred(p.stopListening) for p in listening])
