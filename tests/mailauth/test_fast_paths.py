"""
The synchronous and memoised paths of inbound authentication give what the
general paths give on the same inputs: SPF and DMARC from the answer cache
against the asynchronous evaluation, the header split and From domains
against their line-by-line forms, the memoised Authentication-Results clauses
against the clauses built each time.
"""

from __future__ import annotations

import random
import re

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from mailserver.mailauth import authresults, headers
from mailserver.mailauth.dkim_verify import ARCResult, DKIMResult
from mailserver.mailauth.dmarc import DMARCEvaluator, DMARCResult, parse_record
from mailserver.mailauth.dns import AnswerCache, DNSLookup
from mailserver.mailauth.inbound import Authenticator, InboundPolicy, authentication_header
from mailserver.mailauth.spf import SPFChecker, SPFResult
from tests.dns import DNSTestServer
from tests.mailauth.test_spf import RFC_ZONE

_NAME = re.compile(rb"^([\x21-\x39\x3b-\x7e]+)[ \t]*:")


def split_lines(message: bytes) -> tuple[list[tuple[str, bytes]], int]:
    """split_headers as it was, line by line: the reference."""
    fields: list[tuple[str, bytes]] = []
    position = 0
    limit = min(len(message), headers.MAX_HEADER_BYTES)
    while position < limit:
        end = message.find(b"\n", position)
        end = len(message) if end < 0 else end + 1
        line = message[position:end]
        if line in (b"\n", b"\r\n"):
            return fields, end
        if line[:1] in (b" ", b"\t") and fields:
            name, raw = fields[-1]
            fields[-1] = (name, raw + line)
        else:
            match = _NAME.match(line)
            if match is None:
                return fields, position
            fields.append((match.group(1).decode("ascii"), line))
        position = end
    return fields, position


LINES = [b"From: a@example.com\n", b"To: b@example.org\r\n", b" continued\n", b"\tmore\r\n", b" \n", b"\t\r\n",
         b"\n", b"\r\n", b"\r", b"not a field\n", b"X-Spaced :value\n", b"X-Tab\t: v\n", b":empty name\n",
         b"Subject: no line end", b"From: \"Q, R\" <q@Example.NET>, s@x.example\n", b"From: undisclosed\n",
         b"DKIM-Signature: v=1; d=example.com; s=sel;\n", b"body line\n", b"Y:\n", b"\xc3\xa9: not ascii\n"]


class HeaderSplitTests(SynchronousTestCase):
    def blocks(self, count: int = 3000):
        chooser = random.Random(10)
        for _ in range(count):
            yield b"".join(chooser.choice(LINES) for _ in range(chooser.randrange(0, 9)))

    def test_regression_split_same_as_line_by_line(self) -> None:
        for block in self.blocks():
            self.assertEqual(headers.split_headers(block), split_lines(block), block)

    def test_regression_split_limit_same_as_line_by_line(self) -> None:
        # Lines starting past the limit end the block, wherever the limit falls.
        for limit in range(1, 60):
            self.patch(headers, "MAX_HEADER_BYTES", limit)
            for block in self.blocks(200):
                self.assertEqual(headers.split_headers(block), split_lines(block), (limit, block))

    def test_regression_from_domains_same_as_from_values(self) -> None:
        for block in self.blocks():
            fields, _ = headers.split_headers(block)
            expected = [d for value in headers.values(fields, "From") for d in headers._domains_of(value)]
            self.assertEqual(headers.from_domains(fields), expected, block)


def clauses_built_each_time(authenticator: Authenticator, spf: SPFResult, dkim: list[DKIMResult], arc: ARCResult,
                            dmarc: DMARCResult, mail_from: str, helo: str) -> bytes:
    """Authenticator._header as it was, every clause built each time: the reference."""
    clauses = []
    if spf.scope == "mailfrom":
        clauses.append(authresults.method_result("spf", spf.result, spf.reason, smtp_mailfrom=mail_from))
    else:
        clauses.append(authresults.method_result("spf", spf.result, spf.reason, smtp_helo=helo))
    for r in dkim:
        clauses.append(authresults.method_result(
            "dkim", r.result, r.reason, header_d=r.domain, header_s=r.selector, header_a=r.algorithm,
            header_b=r.header_b,
        ))
    if not dkim:
        clauses.append("dkim=none")
    clauses.append(authresults.method_result("arc", arc.result, arc.reason if arc.result != "pass" else ""))
    comment = f"p={dmarc.policy} dis={dmarc.disposition}" if dmarc.record else dmarc.reason
    clauses.append(authresults.method_result("dmarc", dmarc.result, comment, header_from=dmarc.from_domain))
    return authresults.header(authenticator.policy.authserv_id, clauses)


class ResultsHeaderTests(SynchronousTestCase):
    def test_regression_memoised_clauses_same_as_built_each_time(self) -> None:
        authenticator = Authenticator(None, Clock(), InboundPolicy("mx.example.net"))
        long = "x" * 3000  # past the memo's bound: built each time
        record = parse_record("v=DMARC1; p=reject")
        spfs = [SPFResult("pass", "example.com", "mailfrom", "example.com: matched ip4"),
                SPFResult("none", "h.example", "helo", "no SPF record at h.example"),
                SPFResult("permerror", "example.com", "mailfrom", f"bad (nested) \\ \"{long}\"")]
        dkims = [[], [DKIMResult("pass", "example.com", "sel", "rsa-sha256", "ab/+cd==")],
                 [DKIMResult("fail", "example.com", "s", "ed25519-sha256", "", "signature did not verify"),
                  DKIMResult("permerror", "", "", "", "", "unparsable signature"),
                  DKIMResult("pass", 'we"ird d', "s p", "a", "x" * 8, long)]]
        arcs = [ARCResult("none"), ARCResult("pass", 2, "ignored"), ARCResult("fail", 1, "broken\x01(set)")]
        dmarcs = [DMARCResult("pass", "example.com", "reject", "none", record, ("dkim:example.com",)),
                  DMARCResult("none", "example.org", reason="no DMARC record"),
                  DMARCResult("permerror", reason="2 From domains")]
        senders = [("bounce@example.com", "client.example"), ("", "h.example"), ("a b@c", long)]
        for _ in range(2):  # the second time from the memo
            for spf in spfs:
                for dkim in dkims:
                    for arc in arcs:
                        for dmarc in dmarcs:
                            for mail_from, helo in senders:
                                arguments = (spf, dkim, arc, dmarc, mail_from, helo)
                                self.assertEqual(authentication_header(authenticator.policy, *arguments),
                                                 clauses_built_each_time(authenticator, *arguments))


SPF_CASES: list[tuple[dict, dict]] = [
    # (records of limits.test names, check arguments)
    ({"limits.test": "v=spf1 ip4:192.0.2.0/24 -all"}, {}),
    ({"limits.test": "v=spf1 ip4:192.0.2.0/24 -all"}, {"ip": "198.51.100.1"}),
    ({"limits.test": "v=spf1 ~all"}, {}),
    ({"limits.test": "v=spf1 ip4:203.0.113.0/24"}, {}),
    ({"limits.test": "not spf"}, {}),
    ({}, {"mail_from": "u@localhost"}),
    ({"limits.test": [("TXT", "v=spf1 -all"), ("TXT", "v=spf1 +all")]}, {}),
    ({"limits.test": "v=spf1 include:inc.limits.test -all", "inc.limits.test": "v=spf1 ip4:192.0.2.0/24 -all"}, {}),
    ({"limits.test": "v=spf1 include:inc.limits.test ~all", "inc.limits.test": "v=spf1 -all"}, {}),
    ({"limits.test": "v=spf1 include:none.limits.test -all"}, {}),
    ({"limits.test": "v=spf1 redirect=inc.limits.test", "inc.limits.test": "v=spf1 -all"}, {}),
    ({"limits.test": "v=spf1 redirect=none.limits.test"}, {}),
    ({"limits.test": "v=spf1 include:limits.test -all"}, {}),
    (dict({f"l{i}.limits.test": f"v=spf1 include:l{i + 1}.limits.test" for i in range(12)},
          **{"limits.test": "v=spf1 include:l0.limits.test -all"}), {}),
    ({"limits.test": "v=spf1 a:n1.limits.test a:n2.limits.test -all"}, {}),  # two void look-ups: allowed
    ({"limits.test": "v=spf1 a:n1.limits.test a:n2.limits.test a:n3.limits.test -all"}, {}),  # three: permerror
    ({"limits.test": "v=spf1 mx:many.limits.test -all",
      "many.limits.test": [("MX", (i, f"m{i}.limits.test")) for i in range(11)]}, {}),
    ({"limits.test": "v=spf1 mx:example.org -all"}, {"ip": "192.0.2.140"}),
    ({"limits.test": "v=spf1 a:example.com/30 -all"}, {"ip": "192.0.2.9"}),
    ({"limits.test": "v=spf1 exists:%{ir}.%{l}.limits.test -all", "1.2.0.192.u.limits.test": [("A", "127.0.0.2")]}, {}),
    ({"limits.test": "v=spf1 ptr:example.com -all"}, {"ip": "192.0.2.65"}),
    ({"limits.test": "v=spf1 ptr -all"}, {"ip": "10.0.0.10"}),
    ({"h.limits.test": "v=spf1 ip4:192.0.2.1 -all"}, {"mail_from": "", "helo": "h.limits.test"}),
    ({"limits.test": "v=spf1 ip6:2001:db8::/32 -all"}, {"ip": "2001:db8::1"}),
    ({"limits.test": "v=spf1 ip4:192.0.2.1 -all"}, {"ip": "::ffff:192.0.2.1"}),
    ({"limits.test": "v=spf1 a:%{z} -all"}, {}),  # a macro the parser refuses
]


class CachedEvaluationTests(TestCase):
    """Each case: the asynchronous evaluation (filling the cache), then the one from the cache."""

    def setUp(self) -> Deferred:
        self.dns = DNSTestServer(RFC_ZONE)
        self.clock = Clock()
        return self.dns.start(self)

    def lookup(self) -> DNSLookup:
        return DNSLookup(self.dns.resolver, cache=AnswerCache(self.clock.seconds))

    async def _spf(self) -> None:
        results = set()
        for records, arguments in SPF_CASES:
            for name, value in records.items():
                self.dns.set(name, [("TXT", value)] if isinstance(value, str) else value)
            ip, helo, mail_from = (arguments.get("ip", "192.0.2.1"), arguments.get("helo", "h.test"),
                                   arguments.get("mail_from", "u@limits.test"))
            checker = SPFChecker(self.lookup())
            cold = checker.check_cached(ip, helo, mail_from)  # nothing cached yet: None, unless no answer is needed
            general = await checker.check(ip, helo, mail_from)
            self.assertIn(cold, (None, general))
            asked = list(self.dns.queries)
            self.assertEqual(checker.check_cached(ip, helo, mail_from), general, (records, arguments))
            self.assertEqual(checker.check_cached(ip, helo, mail_from), general)  # the result kept, given again
            self.assertEqual(self.dns.queries, asked)
            results.add(general.result)
            for name in records:
                self.dns.set(name, [])
        self.assertEqual(results, {"pass", "fail", "softfail", "neutral", "none", "permerror"})

    def test_regression_spf_from_cache_same_as_evaluated(self) -> Deferred:
        return ensureDeferred(self._spf())

    async def _temperror(self) -> None:
        self.dns.servfail.add("inc.limits.test")
        self.dns.set("limits.test", [("TXT", "v=spf1 include:inc.limits.test -all")])
        checker = SPFChecker(self.lookup())
        self.assertEqual((await checker.check("192.0.2.1", "h.test", "u@limits.test")).result, "temperror")
        # A failure is not kept: the cached path cannot answer, the general one asks again.
        self.assertIsNone(checker.check_cached("192.0.2.1", "h.test", "u@limits.test"))
        asked = self.dns.queries.count(("inc.limits.test", 16))
        self.assertEqual((await checker.check("192.0.2.1", "h.test", "u@limits.test")).result, "temperror")
        self.assertEqual(self.dns.queries.count(("inc.limits.test", 16)), asked + 1)

    def test_regression_spf_temperror_never_from_cache(self) -> Deferred:
        return ensureDeferred(self._temperror())

    async def _dmarc(self) -> None:
        self.dns.set("_dmarc.example.com", [("TXT", "v=DMARC1; p=reject; pct=50")])
        self.dns.set("_dmarc.example.org", [("TXT", "v=DMARC1; p=quarantine; sp=none; adkim=s")])
        cases = [
            (["example.com"], ("pass", "mail.example.com"), []),
            (["news.example.com"], ("fail", "example.com"), [("pass", "other.example")]),
            (["example.com"], ("fail", "example.com"), []),
            (["a.example.org"], ("pass", "example.org"), [("pass", "a.example.org")]),
            (["a.example.org"], ("pass", "example.org"), [("pass", "example.org")]),
            (["nothing.example.org"], ("none", ""), []),
            (["example.com", "example.org"], ("pass", "example.com"), []),
            ([""], ("pass", "example.com"), []),
        ]
        for from_domains, spf, dkim in cases:
            for sample in (0.1, 0.9):
                evaluator = DMARCEvaluator(self.lookup(), sample=lambda sample=sample: sample)
                general = await evaluator.evaluate(from_domains, spf, dkim)
                asked = list(self.dns.queries)
                self.assertEqual(evaluator.evaluate_cached(from_domains, spf, dkim), general, from_domains)
                self.assertEqual(evaluator.evaluate_cached(from_domains, spf, dkim), general)  # kept, or sampled
                self.assertEqual(self.dns.queries, asked)

    def test_regression_dmarc_from_cache_same_as_evaluated(self) -> Deferred:
        return ensureDeferred(self._dmarc())


class _Failing(DNSLookup):
    """A look-up whose TXT answer is an unexpected exception (not a DNS failure)."""

    async def txt(self, name: str) -> list[str]:
        raise ValueError(f"broken answer for {name}")


class FailureInsideEvaluationTests(SynchronousTestCase):
    def test_regression_unexpected_lookup_error_raised_inside_the_evaluation(self) -> None:
        """As when the look-up was awaited inside it: SPF makes a permerror of it, DMARC lets it through."""
        lookup = _Failing(None)
        result = self.successResultOf(ensureDeferred(SPFChecker(lookup).check("192.0.2.1", "h.test", "u@example.com")))
        self.assertEqual((result.result, result.reason), ("permerror", "ValueError: broken answer for example.com"))
        evaluated = ensureDeferred(DMARCEvaluator(lookup).evaluate(["example.com"], ("pass", ""), []))
        failure = self.failureResultOf(evaluated)
        self.assertEqual(str(failure.value), "broken answer for _dmarc.example.com")


class KeptResultsTests(SynchronousTestCase):
    """
    SPF and DMARC results kept by their arguments (L{dns.Results}) are given
    again only while the answers they were evaluated from are the ones in
    the cache: they equal an evaluation from the cache at every step.
    """

    def setUp(self) -> None:
        from tests.delivery.test_filtered_commit import Later, ZoneResolver

        self.clock = Clock()
        self.zone = {"x.test": "v=spf1 ip4:192.0.2.1 -all", "_dmarc.x.test": "v=DMARC1; p=reject"}
        self.cache = AnswerCache(self.clock.seconds)
        self.lookup = DNSLookup(ZoneResolver(self.zone, Later(), frozenset()), cache=self.cache)

    def spf(self, checker: SPFChecker) -> SPFResult | None:
        """check_cached, checked against an evaluation from the cache that keeps nothing."""
        from mailserver.mailauth.dns import from_cache

        kept = checker.check_cached("192.0.2.1", "h.test", "u@x.test")
        fresh = from_cache(checker.lookup, checker._evaluation("192.0.2.1", "x.test", "u@x.test", "h.test", "mailfrom"))
        self.assertEqual(kept, fresh)
        return kept

    def test_spf_kept_while_its_answers_are_cached(self) -> None:
        checker = SPFChecker(self.lookup)
        self.assertIsNone(self.spf(checker))  # nothing cached
        first = self.successResultOf(ensureDeferred(checker.check("192.0.2.1", "h.test", "u@x.test")))
        self.assertEqual(first.result, "pass")
        kept = self.spf(checker)
        self.assertEqual(kept, first)
        self.assertIs(self.spf(checker), kept)  # kept: not evaluated again
        self.zone["x.test"] = "v=spf1 -all"  # published, but the cached answer still holds
        self.assertIs(self.spf(checker), kept)
        self.clock.advance(3601)  # the answer expired: nothing kept is given
        self.assertIsNone(self.spf(checker))
        self.assertEqual(self.successResultOf(ensureDeferred(checker.check("192.0.2.1", "h.test", "u@x.test"))).result,
                         "fail")
        self.assertEqual(self.spf(checker).result, "fail")
        self.zone["x.test"] = "v=spf1 ip4:192.0.2.1 -all"
        self.cache.put(("lookupText", "x.test"), [], 60)  # another answer in the cache (negative, here)
        self.assertEqual(self.spf(checker).result, "none")

    def test_dmarc_kept_unless_sampled(self) -> None:
        drawn: list[float] = []

        def sample() -> float:
            drawn.append(0.9)
            return 0.9

        evaluator = DMARCEvaluator(self.lookup, sample=sample)
        arguments = (["x.test"], ("fail", "x.test"), [("fail", "x.test")])
        self.assertIsNone(evaluator.evaluate_cached(*arguments))
        first = self.successResultOf(ensureDeferred(evaluator.evaluate(*arguments)))
        kept = evaluator.evaluate_cached(*arguments)
        self.assertEqual(kept, first)
        self.assertIs(evaluator.evaluate_cached(*arguments), kept)
        self.assertEqual(drawn, [])
        self.zone["_dmarc.x.test"] = "v=DMARC1; p=reject; pct=50"
        self.clock.advance(3601)
        self.successResultOf(ensureDeferred(evaluator.evaluate(*arguments)))
        for _ in range(3):  # a result that drew the sample is not kept: drawn for every message
            self.assertEqual(evaluator.evaluate_cached(*arguments).disposition, "quarantine")
        self.assertEqual(len(drawn), 4)

    def test_bounded(self) -> None:
        from mailserver.mailauth.dns import Results

        results = Results(max_entries=2)
        for key in "abc":
            results.put(key, key.upper(), [])
        self.assertEqual([results.get(self.cache, key) for key in "abc"], [None, "B", "C"])
