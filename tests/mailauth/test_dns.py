"""The loopback DNS server (tests/dns.py) and the asynchronous look-up helpers over it."""

from __future__ import annotations

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.trial.unittest import TestCase

from twisted.internet.task import Clock

from mailserver.mailauth.dns import AnswerCache, DNSLookup, DNSTempError
from tests.dns import DNSTestServer

ZONES = {
    "example.com": {
        "example.com": [("TXT", "v=spf1 -all"), ("MX", (10, "mx.example.com")), ("A", "192.0.2.1")],
        "mx.example.com": [("A", "192.0.2.25"), ("AAAA", "2001:db8::25")],
        "long.example.com": [("TXT", "x" * 600)],
        "alias.example.com": [("CNAME", "mx.example.com")],
        "broken.example.com": [("TXT", "never seen")],
    },
    "2.0.192.in-addr.arpa": {"25.2.0.192.in-addr.arpa": [("PTR", "mx.example.com")]},
}


class LookupTests(TestCase):
    def setUp(self) -> Deferred:
        self.server = DNSTestServer(ZONES)
        return self.server.start(self)

    def lookup(self, **kw) -> DNSLookup:
        return DNSLookup(self.server.resolver, **kw)

    def run_(self, coroutine) -> Deferred:
        return ensureDeferred(coroutine)

    async def _all(self) -> None:
        dns = self.lookup()
        self.assertEqual(await dns.txt("example.com"), ["v=spf1 -all"])
        self.assertEqual(await dns.txt("Long.Example.COM."), ["x" * 600])
        self.assertEqual(await dns.mx("example.com"), [(10, "mx.example.com")])
        self.assertEqual(await dns.a("mx.example.com"), ["192.0.2.25"])
        self.assertEqual(await dns.aaaa("mx.example.com"), ["2001:db8::25"])
        self.assertEqual(await dns.a("alias.example.com"), ["192.0.2.25"])
        self.assertEqual(await dns.ptr("192.0.2.25"), ["mx.example.com"])
        # NODATA: the name exists, no such type.
        self.assertEqual(await dns.txt("mx.example.com"), [])
        # NXDOMAIN, inside and outside the zones.
        self.assertEqual(await dns.txt("nothing.example.com"), [])
        self.assertEqual(await dns.txt("example.org"), [])

    def test_answers_nodata_and_nxdomain(self) -> Deferred:
        return self.run_(self._all())

    async def _servfail(self) -> None:
        self.server.servfail.add("broken.example.com")
        with self.assertRaises(DNSTempError):
            await self.lookup().txt("broken.example.com")

    def test_servfail_is_temperror(self) -> Deferred:
        return self.run_(self._servfail())

    async def _timeout(self) -> None:
        self.server.silent.add("broken.example.com")
        with self.assertRaises(DNSTempError):
            await self.lookup(timeout=(1,)).txt("broken.example.com")
        self.assertEqual(self.server.unanswered, ["broken.example.com"])

    def test_timeout_is_temperror(self) -> Deferred:
        return self.run_(self._timeout())

    async def _impossible(self) -> None:
        dns = self.lookup()
        self.assertEqual(await dns.txt("a..b"), [])
        self.assertEqual(await dns.txt("x" * 70 + ".example.com"), [])
        self.assertEqual(self.server.queries, [])

    def test_impossible_names_are_not_queried(self) -> Deferred:
        return self.run_(self._impossible())


class AnswerCacheTests(TestCase):
    """Records of a busy sender domain are fetched once per TTL (the default test TTL is 60 s)."""

    def setUp(self) -> Deferred:
        self.server = DNSTestServer(ZONES)
        self.clock = Clock()
        self.cache = AnswerCache(self.clock.seconds, max_entries=2)
        return self.server.start(self)

    async def _cached(self) -> None:
        dns = DNSLookup(self.server.resolver, cache=self.cache)
        for _ in range(3):
            self.assertEqual(await dns.txt("example.com"), ["v=spf1 -all"])
        self.assertEqual(self.server.queries.count(("example.com", 16)), 1)
        self.server.set("example.com", [("TXT", "v=spf1 +all")])
        self.clock.advance(59)
        self.assertEqual(await dns.txt("example.com"), ["v=spf1 -all"])
        self.clock.advance(1)  # the TTL is over: asked again
        self.assertEqual(await dns.txt("example.com"), ["v=spf1 +all"])
        # An NXDOMAIN without a SOA (outside every zone) is not kept; the cache stays within max_entries.
        self.assertEqual(await dns.txt("example.org"), [])
        self.assertEqual(await dns.txt("example.org"), [])
        self.assertEqual(self.server.queries.count(("example.org", 16)), 2)
        await dns.a("mx.example.com")
        await dns.aaaa("mx.example.com")
        self.assertEqual(len(self.cache._entries), 2)

    def test_answers_kept_for_their_ttl(self) -> Deferred:
        return ensureDeferred(self._cached())

    async def _negative(self) -> None:
        dns = DNSLookup(self.server.resolver, cache=AnswerCache(self.clock.seconds))
        for _ in range(3):
            self.assertEqual(await dns.txt("nothing.example.com"), [])  # NXDOMAIN
            self.assertEqual(await dns.txt("mx.example.com"), [])  # NODATA
            self.assertEqual(dns.cached_txt_bytes("nothing.example.com"), [])
        self.assertEqual(self.server.queries.count(("nothing.example.com", 16)), 1)
        self.assertEqual(self.server.queries.count(("mx.example.com", 16)), 1)
        self.server.set("nothing.example.com", [("TXT", "v=DMARC1; p=reject")])
        self.clock.advance(60)  # the SOA's negative TTL (min(TTL, MINIMUM) = 60 s) is over: asked again
        self.assertIsNone(dns.cached_txt_bytes("nothing.example.com"))
        self.assertEqual(await dns.txt("nothing.example.com"), ["v=DMARC1; p=reject"])
        self.assertEqual(self.server.queries.count(("nothing.example.com", 16)), 2)

    def test_regression_negative_answers_kept_for_the_soa_negative_ttl(self) -> Deferred:
        """NXDOMAIN and NODATA (a subdomain's _dmarc, a domain without SPF) are asked once per negative TTL."""
        return ensureDeferred(self._negative())

    async def _failure(self) -> None:
        self.server.servfail.add("broken.example.com")
        dns = DNSLookup(self.server.resolver, cache=self.cache)
        for _ in range(2):
            with self.assertRaises(DNSTempError):
                await dns.txt("broken.example.com")
        self.assertEqual(self.cache._entries, {})

    def test_failures_not_kept(self) -> Deferred:
        return ensureDeferred(self._failure())
