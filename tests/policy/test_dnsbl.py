"""DNSBL/DNSWL entries (pure) and scoring against a real twisted.names server on loopback."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from mailserver.policy.dnsbl import DnsblScorer, blocked, rbl_client
from mailserver.policy.logline import reject_line
from mailserver.policy.dnsbl_sites import parse_site, parse_sites, query_name, score
from tests.dns import DNSTestServer


class SiteTests(SynchronousTestCase):
    def test_entries(self) -> None:
        """domain[=filter][*weight] with numbers, [a..b] ranges and [a;b] lists."""
        site = parse_site("zen.spamhaus.org=127.0.0.[2..11]*3")
        self.assertEqual((site.domain, site.weight), ("zen.spamhaus.org", 3))
        self.assertTrue(site.matches(["127.0.0.4"]))
        self.assertFalse(site.matches(["127.0.0.12", "127.0.1.2"]))
        allow = parse_site("list.dnswl.org=127.0.[0..255].[1;3]*-2")
        self.assertEqual(allow.weight, -2)
        self.assertTrue(allow.matches(["127.0.15.3"]))
        self.assertFalse(allow.matches(["127.0.15.2"]))
        plain = parse_site("bl.example.")
        self.assertEqual((plain.domain, plain.filter, plain.weight), ("bl.example", None, 1))
        self.assertTrue(plain.matches(["127.0.0.2"]))
        self.assertFalse(plain.matches([]))
        self.assertEqual(len(parse_sites("a.example*2, b.example=127.0.0.2  c.example")), 3)

    def test_bad_entries(self) -> None:
        for bad in ("", "a..example", "bl.example=127.0.0", "bl.example=127.0.0.[5..2]",
                    "bl.example=127.0.0.256", "bl.example*x", "bl.example=127.0.0.[2;x]",
                    "bl.example=127.0.0.2*"):  # fmt: skip
            self.assertRaises(ValueError, parse_site, bad)
        self.assertRaises(ValueError, parse_site, "bl.example*2", weighted=False)

    def test_query_names(self) -> None:
        self.assertEqual(query_name("192.0.2.99", "zen.example"), "99.2.0.192.zen.example")
        self.assertEqual(query_name("::ffff:192.0.2.99", "zen.example"), "99.2.0.192.zen.example")
        self.assertEqual(
            query_name("2001:db8::1", "bl.example"),
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl.example",
        )

    def test_score(self) -> None:
        """Each matching entry adds its weight once; thresholds as in postscreen."""
        sites = parse_sites("bl.example=127.0.0.[2..11]*3 bl.example=127.0.0.2*1 wl.example*-5")
        result = score(sites, {"bl.example": ["127.0.0.2", "127.0.0.3"]})
        self.assertEqual(result.total, 4)
        self.assertTrue(result.listed(1))
        self.assertFalse(result.listed(5))
        allowed = score(sites, {"wl.example": ["127.0.10.2"]})
        self.assertEqual(allowed.total, -5)
        self.assertTrue(allowed.allowlisted(-1))
        self.assertFalse(allowed.allowlisted(0))

    def test_log_line(self) -> None:
        self.assertEqual(
            reject_line(blocked("192.0.2.99", "zen.example"), client="unknown", address="192.0.2.99",
                        sender="a@b.example", recipient="c@d.example", helo="x"),
            "NOQUEUE: reject: RCPT from unknown[192.0.2.99]: 554 5.7.1 Service unavailable;"
            " Client host [192.0.2.99] blocked using zen.example; from=<a@b.example>"
            " to=<c@d.example> proto=ESMTP helo=<x>",
        )


ZONES = {
    "bl.example": {
        "99.2.0.192.bl.example": [("A", "127.0.0.2"), ("A", "127.0.0.10")],
        "98.2.0.192.bl.example": [("A", "127.0.0.12")],
        "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl.example": [("A", "127.0.0.4")],
    },
    "wl.example": {"10.2.0.192.wl.example": [("A", "127.0.5.2")]},
    "broken.example": {},
}


class ScorerTests(TestCase):
    @defer.inlineCallbacks
    def setUp(self) -> Any:
        self.dns = DNSTestServer(ZONES)
        yield self.dns.start(self)

    def scorer(self, text: str, timeout: float = 2.0) -> DnsblScorer:
        return DnsblScorer(parse_sites(text), self.dns.resolver, reactor, timeout)

    @defer.inlineCallbacks
    def test_listed_and_weighted(self) -> Any:
        scorer = self.scorer("bl.example=127.0.0.[2..11]*3, wl.example*-2")
        result = yield defer.Deferred.fromCoroutine(scorer.score("192.0.2.99"))
        self.assertEqual(result.score.total, 3)
        self.assertEqual(result.answers, {"bl.example": ("127.0.0.2", "127.0.0.10")})
        self.assertEqual([s.domain for s in result.score.matched], ["bl.example"])

    @defer.inlineCallbacks
    def test_filter_excludes(self) -> Any:
        """An answer outside the reply filter does not count."""
        result = yield defer.Deferred.fromCoroutine(
            self.scorer("bl.example=127.0.0.[2..11]*3").score("192.0.2.98")
        )
        self.assertEqual(result.score.total, 0)

    @defer.inlineCallbacks
    def test_not_listed_and_allowlisted(self) -> Any:
        scorer = self.scorer("bl.example*3, wl.example=127.0.[0..255].2*-2")
        clean = yield defer.Deferred.fromCoroutine(scorer.score("192.0.2.1"))
        self.assertEqual((clean.score.total, clean.failed), (0, ()))
        allowed = yield defer.Deferred.fromCoroutine(scorer.score("192.0.2.10"))
        self.assertEqual(allowed.score.total, -2)

    @defer.inlineCallbacks
    def test_ipv6(self) -> Any:
        result = yield defer.Deferred.fromCoroutine(self.scorer("bl.example*2").score("2001:db8::1"))
        self.assertEqual(result.score.total, 2)

    @defer.inlineCallbacks
    def test_servfail_counts_as_not_listed(self) -> Any:
        name = "99.2.0.192.bl.example"
        self.dns.servfail.add(name)
        result = yield defer.Deferred.fromCoroutine(self.scorer("bl.example*3").score("192.0.2.99"))
        self.assertEqual((result.score.total, result.failed), (0, ("bl.example",)))

    @defer.inlineCallbacks
    def test_reject_rbl_client(self) -> Any:
        found = yield defer.Deferred.fromCoroutine(
            rbl_client(self.dns.resolver, reactor, "bl.example=127.0.0.10", "192.0.2.99")
        )
        self.assertEqual(found, ("127.0.0.10",))
        found = yield defer.Deferred.fromCoroutine(
            rbl_client(self.dns.resolver, reactor, "bl.example", "192.0.2.1")
        )
        self.assertEqual(found, ())


class TimeoutTests(SynchronousTestCase):
    def test_silent_list_times_out(self) -> None:
        """A list that never answers is given up after the timeout (injected clock)."""

        class Silent:
            def lookupAddress(self, name: str, timeout: Any = None) -> defer.Deferred[Any]:
                return defer.Deferred()

        clock = Clock()
        scorer = DnsblScorer(parse_sites("bl.example*3"), Silent(), clock, timeout=10)
        d = defer.Deferred.fromCoroutine(scorer.score("192.0.2.99"))
        clock.advance(9)
        self.assertNoResult(d)
        clock.advance(1)
        result = self.successResultOf(d)
        self.assertEqual((result.score.total, result.failed), (0, ("bl.example",)))
