"""
MTA-STS (RFC 8461) for outbound delivery: the C{_mta-sts} TXT record and the
policy file (parsing is pure), fetched over HTTPS with twisted.web and
cached in memory until its C{max_age}.

L{MTASTSPolicies.policy_for} gives the relay the policy of a destination
domain (or None).  Under C{mode: enforce} the relay only uses MX hosts the
policy names and requires a valid certificate for them; a failure defers
the mail, never downgrades it.  Failures are logged with the domain's TLS-RPT
(RFC 8460) C{rua} so an operator can report them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, wrapClientTLS
from twisted.internet.error import DNSLookupError
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, ResponseDone
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

from mailserver.mailauth.dns import DNSLookup, DNSTempError

log = Logger(namespace="mailserver.mailauth")

#: RFC 8461 3.2: a policy file bigger than this is refused.
MAX_POLICY_BYTES = 64 * 1024
#: RFC 8461 3.2: max_age is at most a year.
MAX_AGE_LIMIT = 31_557_600
MODES = ("enforce", "testing", "none")
#: Policies kept in memory at most (expired ones go first, then the oldest).
MAX_CACHED_POLICIES = 10_000

_ID = re.compile(r"^[A-Za-z0-9]{1,32}$")


class STSPolicyError(ValueError):
    """A policy file that cannot be used (treated as no policy)."""


@dataclass(frozen=True)
class STSPolicy:
    mode: str
    mx: tuple[str, ...]
    max_age: int

    def matches(self, host: str) -> bool:
        """Does MX host C{host} match a C{mx:} pattern (C{*.} stands for exactly one label)?"""
        host = host.rstrip(".").lower()
        for pattern in self.mx:
            if pattern.startswith("*."):
                suffix = pattern[1:]
                if host.endswith(suffix) and "." not in host[: -len(suffix)] and host[: -len(suffix)]:
                    return True
            elif host == pattern:
                return True
        return False


def parse_record(texts: list[str]) -> str | None:
    """The C{id} of the one C{v=STSv1} TXT record, or None (none, several, or malformed)."""
    found = [text for text in texts if text.strip().startswith("v=STSv1")]
    if len(found) != 1:
        return None
    fields = {}
    for part in found[0].split(";"):
        name, _, value = part.strip().partition("=")
        fields.setdefault(name.strip(), value.strip())
    identifier = fields.get("id", "")
    return identifier if _ID.match(identifier) else None


def parse_policy(text: str) -> STSPolicy:
    """RFC 8461 3.2: C{key: value} lines; version STSv1, mode, max_age and mx (unless mode none)."""
    fields: dict[str, str] = {}
    mx: list[str] = []
    for line in text.replace("\r\n", "\n").split("\n")[:1000]:
        if not line.strip():
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise STSPolicyError(f"bad line {line[:80]!r}")
        name, value = name.strip(), value.strip()
        if name == "mx":
            mx.append(value.lower().rstrip("."))
        else:
            fields.setdefault(name, value)
    if fields.get("version") != "STSv1":
        raise STSPolicyError("version is not STSv1")
    mode = fields.get("mode", "")
    if mode not in MODES:
        raise STSPolicyError(f"bad mode {mode!r}")
    age = fields.get("max_age", "")
    if not age.isdigit() or len(age) > 10:
        raise STSPolicyError(f"bad max_age {age!r}")
    if mode != "none" and not mx:
        raise STSPolicyError("no mx")
    return STSPolicy(mode, tuple(mx), min(int(age), MAX_AGE_LIMIT))


@dataclass
class _Cached:
    identifier: str
    policy: STSPolicy
    expires: float


class MTASTSPolicies:
    """Policy discovery and the in-memory cache (RFC 8461 3.3 and 5.1)."""

    def __init__(self, lookup: DNSLookup, fetch: Callable[[str], Awaitable[bytes]], clock: Any) -> None:
        """
        @param fetch: C{url -> bytes}, failing on any HTTP or TLS problem
            (L{https_fetcher} in the daemon).
        @param clock: C{IReactorTime}, for max_age.
        """
        self.lookup = lookup
        self.fetch = fetch
        self.clock = clock
        self._cache: dict[str, _Cached] = {}

    def _cached(self, domain: str) -> STSPolicy | None:
        entry = self._cache.get(domain)
        if entry is not None and entry.expires > self.clock.seconds():
            return entry.policy
        return None

    async def policy_for(self, domain: str) -> STSPolicy | None:
        domain = domain.rstrip(".").lower()
        try:
            identifier = parse_record(await self.lookup.txt(f"_mta-sts.{domain}"))
        except DNSTempError:
            return self._cached(domain)
        if identifier is None:
            return self._cached(domain)
        entry = self._cache.get(domain)
        if entry is not None and entry.identifier == identifier and entry.expires > self.clock.seconds():
            return entry.policy
        url = f"https://mta-sts.{domain}/.well-known/mta-sts.txt"
        try:
            body = await self.fetch(url)
            policy = parse_policy(body.decode("utf-8"))
        except Exception as error:  # any fetch or parse failure: keep what we had (RFC 8461 5.1)
            log.warn("MTA-STS policy of {domain} not fetched from {url}: {error}", domain=domain, url=url,
                     error=error)
            await self.report(domain, "sts-policy-fetch-error", str(error))
            return self._cached(domain)
        self._store(domain, _Cached(identifier, policy, self.clock.seconds() + policy.max_age))
        return policy

    def _store(self, domain: str, entry: _Cached) -> None:
        self._cache.pop(domain, None)
        self._cache[domain] = entry
        if len(self._cache) > MAX_CACHED_POLICIES:
            now = self.clock.seconds()
            for name in [name for name, cached in self._cache.items() if cached.expires <= now]:
                del self._cache[name]
            while len(self._cache) > MAX_CACHED_POLICIES:
                del self._cache[next(iter(self._cache))]

    async def report(self, domain: str, result_type: str, detail: str) -> None:
        """Log a TLS-RPT failure with the domain's C{rua} (reports themselves are not sent yet)."""
        try:
            texts = await self.lookup.txt(f"_smtp._tls.{domain}")
        except DNSTempError:
            texts = []
        rua = next((t.split("rua=", 1)[1].split(";")[0].strip() for t in texts
                    if t.startswith("v=TLSRPTv1") and "rua=" in t), "")
        log.info("tlsrpt {domain} result-type={result_type} rua={rua}: {detail}", domain=domain,
                 result_type=result_type, rua=rua or "none", detail=detail)


@implementer(IStreamClientEndpoint)
class _ResolvingEndpoint:
    """TCP to a host name resolved through twisted.names (A, then AAAA), never the system resolver."""

    def __init__(self, reactor: Any, lookup: DNSLookup, host: str, port: int, timeout: float) -> None:
        self.reactor, self.lookup, self.host, self.port, self.timeout = reactor, lookup, host, port, timeout

    def connect(self, factory: Any) -> Deferred:
        return Deferred.fromCoroutine(self._connect(factory))

    async def _connect(self, factory: Any) -> Any:
        try:
            addresses = await self.lookup.a(self.host) or await self.lookup.aaaa(self.host)
        except DNSTempError as error:
            raise DNSLookupError(str(error)) from None
        if not addresses:
            raise DNSLookupError(f"{self.host}: no address")
        endpoint_type = TCP6ClientEndpoint if ":" in addresses[0] else TCP4ClientEndpoint
        return await endpoint_type(self.reactor, addresses[0], self.port, timeout=self.timeout).connect(factory)


@implementer(IAgentEndpointFactory)
class _EndpointFactory:
    def __init__(self, reactor: Any, lookup: DNSLookup, policy: Any, port: int | None, timeout: float) -> None:
        self.reactor, self.lookup, self.policy, self.port, self.timeout = reactor, lookup, policy, port, timeout

    def endpointForURI(self, uri: Any) -> Any:
        creator = self.policy.creatorForNetloc(uri.host, uri.port)
        tcp = _ResolvingEndpoint(self.reactor, self.lookup, uri.host.decode("ascii"), self.port or uri.port,
                                 self.timeout)
        return wrapClientTLS(creator, tcp)


def https_fetcher(reactor: Any, lookup: DNSLookup, trust_root: Any = None, timeout: float = 60.0,
                  port: int | None = None) -> Callable[[str], Deferred]:
    """
    C{url -> Deferred[bytes]} over twisted.web: the host resolved through
    C{lookup}, its certificate checked against its name (C{trust_root}: the
    platform's by default), no redirects, status 200 only, at most
    L{MAX_POLICY_BYTES}.  C{port} replaces 443 (tests).
    """
    policy = BrowserLikePolicyForHTTPS(trustRoot=trust_root)
    agent = Agent.usingEndpointFactory(reactor, _EndpointFactory(reactor, lookup, policy, port, timeout))

    class _Body(Protocol):
        def __init__(self, done: Deferred) -> None:
            self.done, self.chunks, self.size = done, [], 0

        def dataReceived(self, data: bytes) -> None:
            self.size += len(data)
            if self.size > MAX_POLICY_BYTES:
                self.transport.stopProducing()
                if not self.done.called:
                    self.done.errback(STSPolicyError("policy larger than 64 KiB"))
                return
            self.chunks.append(data)

        def connectionLost(self, reason: Any) -> None:
            if self.done.called:
                return
            if reason.check(ResponseDone):
                self.done.callback(b"".join(self.chunks))
            else:
                self.done.errback(reason)

    async def fetch(url: str) -> bytes:
        response = await agent.request(b"GET", url.encode("ascii"))
        if response.code != 200:
            response.deliverBody(Protocol())
            raise STSPolicyError(f"HTTP status {response.code}")
        body = _Body(Deferred(lambda _: body.transport.stopProducing()))
        response.deliverBody(body)
        return await body.done

    # addTimeout cancels the request or the body read, whichever is under way.
    return lambda url: Deferred.fromCoroutine(fetch(url)).addTimeout(timeout, reactor)
