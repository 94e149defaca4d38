"""
Asynchronous DNS look-ups for mail authentication, over an injected
twisted.names resolver (C{IResolver}): never a blocking resolver.

Each look-up returns the answers of the asked type (an empty list when the
name does not exist or has no such records: "none" for SPF/DKIM/DMARC),
or raises L{DNSTempError} (time-out, SERVFAIL, refused, any other failure:
"temperror").  NXDOMAIN and an empty answer are both "nothing there" for
SPF (void look-ups), DKIM and DMARC, so they are not told apart.

With an L{AnswerCache}, a cached answer is given without a query, and
L{DNSLookup.cached} reads the cache without a Deferred at all.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Callable, Hashable, Sequence, TypeVar

from twisted.internet import defer
from twisted.names import dns, error

from mailserver.mailauth import memo

T = TypeVar("T")
#: C{fetch(kind, name)}: what C{await getattr(lookup, kind)(name)} gives (see L{from_cache}).
Fetch = Callable[[str, str], list[Any]]

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

    def expires(self, key: tuple[str, str]) -> float | None:
        """When the entry for C{key} expires (the clock's time), None if there is none."""
        entry = self._entries.get(key)
        if entry is None or entry[0] <= self.clock():
            return None
        return entry[0]

    def put(self, key: tuple[str, str], payloads: list[Any], ttl: int) -> None:
        """Keep C{payloads} for C{ttl} seconds; an empty list is a negative answer."""
        ttl = min(ttl, self.max_ttl if payloads else self.max_negative_ttl)
        if ttl <= 0:
            return
        self._entries.pop(key, None)
        while len(self._entries) >= self.max_entries:
            del self._entries[next(iter(self._entries))]  # dicts keep insertion order: the oldest
        self._entries[key] = (self.clock() + ttl, payloads)


def _normal_name(name: str) -> str | None:
    """C{name} lower-cased without its final dot; None for an impossible name (it does not exist)."""
    name = name.rstrip(".").lower()
    if not name or len(name) > 253 or any(not 0 < len(label) < 64 for label in name.split(".")):
        return None
    return name


class DNSLookup:
    """TXT, A, AAAA, MX and PTR look-ups returning plain Python values."""

    def __init__(self, resolver: Any, timeout: Sequence[int] = DEFAULT_TIMEOUT,
                 cache: AnswerCache | None = None) -> None:
        self.resolver = resolver
        self.timeout = tuple(timeout)
        self.cache = cache
        self.results = Results()  # what L{from_cache} evaluated with a key, and the cache entries it read

    _normal = staticmethod(memo.by_text(_normal_name, maxsize=4096, longest=255))

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

    def cached(self, kind: str, name: str, read: list[tuple[tuple[str, str], list[Any]]] | None = None,
               ) -> list[Any] | None:
        """
        C{await getattr(self, kind)(name)} from the cache alone: None when it
        would need a query.  C{read}: where to note the cache entry used
        (its key and records), if any.
        """
        key = self._cache_key(kind, name)
        if key is None:
            return []
        records = self.cache.get(key) if self.cache is not None else None
        if records is None:
            return None
        if read is not None:
            read.append((key, records))
        return _KINDS[kind][2](records)

    def expires(self, kind: str, name: str) -> float | None:
        """When the cached answer L{cached} gives for C{(kind, name)} expires; None if it is not cached."""
        key = self._cache_key(kind, name)
        if key is None or self.cache is None:
            return None
        return self.cache.expires(key)

    def _cache_key(self, kind: str, name: str) -> tuple[str, str] | None:
        """The answer cache's key for C{(kind, name)}; None for an impossible name (it does not exist)."""
        method, _rtype, _convert, name_of = _KINDS[kind]
        normal = self._normal(name_of(name) if name_of is not None else name)
        return None if normal is None else (method, normal)

    def cached_txt_bytes(self, name: str) -> list[bytes] | None:
        """L{txt_bytes} from the cache alone: None when it would need a query."""
        return self.cached("txt_bytes", name)

    async def _answer(self, kind: str, name: str) -> list[Any]:
        method, rtype, convert, name_of = _KINDS[kind]
        return convert(await self._query(method, name_of(name) if name_of is not None else name, rtype))

    async def txt(self, name: str) -> list[str]:
        """Each TXT record of C{name}, its character-strings joined (RFC 7208 3.3)."""
        return await self._answer("txt", name)

    async def txt_bytes(self, name: str) -> list[bytes]:
        """Each TXT record of C{name} as bytes (DKIM keys)."""
        return await self._answer("txt_bytes", name)

    async def a(self, name: str) -> list[str]:
        return await self._answer("a", name)

    async def aaaa(self, name: str) -> list[str]:
        return await self._answer("aaaa", name)

    async def addresses(self, name: str, version: int) -> list[str]:
        """A (C{version} 4) or AAAA (6) records."""
        return await (self.a(name) if version == 4 else self.aaaa(name))

    async def mx(self, name: str) -> list[tuple[int, str]]:
        """(preference, exchange) pairs, sorted."""
        return await self._answer("mx", name)

    async def ptr(self, ip: str) -> list[str]:
        """The names of C{ip}'s reverse pointer."""
        return await self._answer("ptr", ip)


#: Each kind of look-up: (resolver method, record type, the values of its answer's payloads,
#: the name asked for the argument given when it is not that name).
_KINDS: dict[str, tuple[str, int, Callable[[list[Any]], list[Any]], Callable[[str], str] | None]] = {
    "txt": ("lookupText", dns.TXT, lambda records: [b"".join(r.data).decode("utf-8", "replace") for r in records],
            None),
    "txt_bytes": ("lookupText", dns.TXT, lambda records: [b"".join(r.data) for r in records], None),
    "a": ("lookupAddress", dns.A, lambda records: [r.dottedQuad() for r in records], None),
    "aaaa": ("lookupIPV6Address", dns.AAAA, lambda records: [str(ipaddress.IPv6Address(r.address)) for r in records],
             None),
    "mx": ("lookupMailExchange", dns.MX,
           lambda records: sorted((r.preference, r.name.name.decode("ascii", "replace")) for r in records), None),
    "ptr": ("lookupPointer", dns.PTR, lambda records: [r.name.name.decode("ascii", "replace") for r in records],
            lambda ip: ipaddress.ip_address(ip).reverse_pointer),
}


class NotCached(Exception):
    """The answer to C{(kind, name)} is not at hand (L{from_cache}, L{resolved})."""

    def __init__(self, kind: str, name: str) -> None:
        super().__init__(kind, name)
        self.key = (kind, name)


def fetcher(cached: Callable[[str, str, Any], Any], known: dict[tuple[str, str], Any],
            read: list[tuple[tuple[str, str], list[Any]]] | None = None) -> Fetch:
    """
    C{fetch} answering from C{known} (answers and failures fetched
    already), then from C{cached(kind, name, read)} (None: not at hand;
    L{DNSLookup.cached}, which notes the cache entries used in C{read}),
    else raising L{NotCached}.
    """

    def fetch(kind: str, name: str) -> list[Any]:
        found = known.get((kind, name))
        if found is None:
            found = cached(kind, name, read)
            if found is None:
                raise NotCached(kind, name)
        elif isinstance(found, Exception):
            raise found  # where the look-up was asked for, as if it had been awaited there
        return found

    return fetch


class Results:
    """
    Results of L{from_cache} kept by the caller's key (its evaluation's
    arguments) with the answer cache entries the evaluation read: given
    again, without evaluating, while each of those entries is still the one
    in the cache (the same records, not expired), so they are the results
    an evaluation would give.  Bounded: past C{max_entries} the oldest goes.
    """

    def __init__(self, max_entries: int = 4096) -> None:
        self.max_entries = max_entries
        self._kept: dict[Hashable, tuple[Any, list[tuple[tuple[str, str], list[Any]]]]] = {}

    def get(self, cache: AnswerCache, key: Hashable) -> Any:
        """The result kept for C{key} if the entries it was evaluated from are all still in C{cache}, else None."""
        kept = self._kept.get(key)
        if kept is None:
            return None
        for entry, records in kept[1]:
            if cache.get(entry) is not records:
                del self._kept[key]
                return None
        return kept[0]

    def put(self, key: Hashable, result: Any, read: list[tuple[tuple[str, str], list[Any]]]) -> None:
        kept = self._kept
        kept.pop(key, None)
        while len(kept) >= self.max_entries:
            del kept[next(iter(kept))]  # the oldest
        kept[key] = (result, read)


def from_cache(lookup: DNSLookup, evaluate: Callable[[Fetch], T], key: Hashable | None = None,
               keep: Callable[[T], bool] | None = None) -> T | None:
    """
    C{evaluate(fetch)} when every answer it asks C{fetch} for is in the
    answer cache, else None: no query, no coroutine, no Deferred.
    C{evaluate}: synchronous, its result a function of the answers alone.
    With C{key} (hashable: what the result depends on besides the answers)
    the result is kept (L{Results}, if C{keep(result)}) and given again
    while the answers it was evaluated from are still cached.
    """
    cache = lookup.cache
    if key is None or cache is None:
        try:
            return evaluate(fetcher(lookup.cached, {}))
        except NotCached:
            return None
    known = lookup.results.get(cache, key)
    if known is not None:
        return known
    read: list[tuple[tuple[str, str], list[Any]]] = []
    try:
        result = evaluate(fetcher(lookup.cached, {}, read))
    except NotCached:
        return None
    if keep is None or keep(result):
        lookup.results.put(key, result, read)
    return result


async def resolved(lookup: DNSLookup, evaluate: Callable[[Fetch], T]) -> T:
    """
    C{evaluate(fetch)} with every answer it needs: run again each time it
    asks for one not at hand, once that one is fetched (each at most once
    per call, a failure included), in the order it asks for them.  The
    same evaluation as L{from_cache}'s, so both give the same result.
    """
    known: dict[tuple[str, str], Any] = {}
    fetch = fetcher(lookup.cached, known)
    while True:
        try:
            return evaluate(fetch)
        except NotCached as missing:
            kind, name = missing.key
            try:
                known[missing.key] = await getattr(lookup, kind)(name)
            except Exception as failure:
                known[missing.key] = failure
