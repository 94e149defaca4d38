"""
Asynchronous DNS look-ups for mail authentication, over an injected
twisted.names resolver (C{IResolver}): never a blocking resolver.

Each look-up returns the answers of the asked type (an empty list when the
name does not exist or has no such records: "none" for SPF/DKIM/DMARC),
or raises L{DNSTempError} (time-out, SERVFAIL, refused, any other failure:
"temperror").  NXDOMAIN and an empty answer are both "nothing there" for
SPF (void look-ups), DKIM and DMARC, so they are not told apart.

With an L{AnswerCache}, a cached answer is given without a query, and
L{DNSLookup.cached_txt_bytes} reads the cache without a Deferred at all.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Callable, Sequence

from twisted.internet import defer
from twisted.names import dns, error

#: Seconds to wait for each try (twisted.names retries with the next value).
DEFAULT_TIMEOUT: tuple[int, ...] = (2, 4)


class DNSTempError(Exception):
    """The look-up failed in a way that may pass later (temperror)."""


class AnswerCache:
    """
    Positive answers kept for their TTL (at most C{max_ttl}), so the SPF,
    DKIM-key and DMARC records of a busy sender domain are not fetched and
    parsed for every message.  Negative answers (NXDOMAIN, NODATA: the
    C{_dmarc} name of a subdomain, a domain without SPF) are kept for the
    negative TTL of the SOA that came with them (RFC 2308 5: the smaller of
    its TTL and its MINIMUM), at most C{max_negative_ttl}; without a SOA
    they are not kept.  Bounded: past C{max_entries} the oldest entry goes.
    Failures are never kept.
    """

    def __init__(self, clock: Callable[[], float], max_entries: int = 4096, max_ttl: int = 3600,
                 max_negative_ttl: int = 900) -> None:
        self.clock = clock
        self.max_entries = max_entries
        self.max_ttl = max_ttl
        self.max_negative_ttl = max_negative_ttl
        self._entries: dict[tuple[str, str], tuple[float, list[Any]]] = {}

    def get(self, key: tuple[str, str]) -> list[Any] | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= self.clock():
            del self._entries[key]
            return None
        return entry[1]

    def put(self, key: tuple[str, str], payloads: list[Any], ttl: int) -> None:
        """Keep C{payloads} for C{ttl} seconds; an empty list is a negative answer."""
        ttl = min(ttl, self.max_ttl if payloads else self.max_negative_ttl)
        if ttl <= 0:
            return
        self._entries.pop(key, None)
        while len(self._entries) >= self.max_entries:
            del self._entries[next(iter(self._entries))]  # dicts keep insertion order: the oldest
        self._entries[key] = (self.clock() + ttl, payloads)


class DNSLookup:
    """TXT, A, AAAA, MX and PTR look-ups returning plain Python values."""

    def __init__(self, resolver: Any, timeout: Sequence[int] = DEFAULT_TIMEOUT,
                 cache: AnswerCache | None = None) -> None:
        self.resolver = resolver
        self.timeout = tuple(timeout)
        self.cache = cache

    @staticmethod
    def _normal(name: str) -> str | None:
        """C{name} lower-cased without its final dot; None for an impossible name (it does not exist)."""
        name = name.rstrip(".").lower()
        if not name or len(name) > 253 or any(not 0 < len(label) < 64 for label in name.split(".")):
            return None
        return name

    def cached_txt_bytes(self, name: str) -> list[bytes] | None:
        """L{txt_bytes} from the cache alone: None when it would need a query."""
        normal = self._normal(name)
        if normal is None:
            return []
        records = self.cache.get(("lookupText", normal)) if self.cache is not None else None
        return None if records is None else [b"".join(record.data) for record in records]

    def _keep_negative(self, key: tuple[str, str], authority: Sequence[Any]) -> None:
        """RFC 2308 5: a negative answer lives as long as its SOA says (no SOA: not kept)."""
        if self.cache is None:
            return
        for record in authority:
            if record.type == dns.SOA:
                self.cache.put(key, [], min(record.ttl, record.payload.minimum))
                return

    async def _query(self, method: str, name: str, rtype: int) -> list[Any]:
        normal = self._normal(name)
        if normal is None:  # an impossible name does not exist; no query goes out
            return []
        name = normal
        cache = self.cache
        if cache is not None:
            cached = cache.get((method, name))
            if cached is not None:
                return cached
        try:
            answers, authority, _additional = await getattr(self.resolver, method)(name, self.timeout)
        except error.DNSNameError as failure:
            message = failure.args[0] if failure.args else None
            self._keep_negative((method, name), getattr(message, "authority", ()))
            return []
        except (error.DomainError, defer.TimeoutError, error.DNSQueryTimeoutError) as failure:
            raise DNSTempError(f"{name}: {type(failure).__name__}") from None
        except Exception as failure:  # a broken resolver answer is a temporary error, not a traceback
            raise DNSTempError(f"{name}: {failure!r}") from None
        matching = [answer for answer in answers if answer.type == rtype]
        payloads = [answer.payload for answer in matching]
        if cache is not None and matching:
            cache.put((method, name), payloads, min(answer.ttl for answer in matching))
        elif not matching and not any(answer.type == dns.CNAME for answer in answers):
            self._keep_negative((method, name), authority)  # NODATA
        return payloads

    async def txt(self, name: str) -> list[str]:
        """Each TXT record of C{name}, its character-strings joined (RFC 7208 3.3)."""
        records = await self._query("lookupText", name, dns.TXT)
        return [b"".join(record.data).decode("utf-8", "replace") for record in records]

    async def txt_bytes(self, name: str) -> list[bytes]:
        """Each TXT record of C{name} as bytes (DKIM keys)."""
        records = await self._query("lookupText", name, dns.TXT)
        return [b"".join(record.data) for record in records]

    async def a(self, name: str) -> list[str]:
        return [record.dottedQuad() for record in await self._query("lookupAddress", name, dns.A)]

    async def aaaa(self, name: str) -> list[str]:
        return [
            str(ipaddress.IPv6Address(record.address))
            for record in await self._query("lookupIPV6Address", name, dns.AAAA)
        ]

    async def addresses(self, name: str, version: int) -> list[str]:
        """A (C{version} 4) or AAAA (6) records."""
        return await (self.a(name) if version == 4 else self.aaaa(name))

    async def mx(self, name: str) -> list[tuple[int, str]]:
        records = await self._query("lookupMailExchange", name, dns.MX)
        return sorted((record.preference, record.name.name.decode("ascii", "replace")) for record in records)

    async def ptr(self, ip: str) -> list[str]:
        reverse = ipaddress.ip_address(ip).reverse_pointer
        records = await self._query("lookupPointer", reverse, dns.PTR)
        return [record.name.name.decode("ascii", "replace") for record in records]
