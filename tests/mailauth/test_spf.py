"""SPF (RFC 7208): the pure parser and macros, and check_host() over the loopback DNS server with the RFC's zone."""

from __future__ import annotations

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.trial.unittest import SynchronousTestCase, TestCase

from mailserver.mailauth.spf import SPFChecker
from mailserver.mailauth.spf_record import MacroContext, SPFPermError, expand, parse_record, select_record
from tests.dns import DNSTestServer

# RFC 7208 Appendix A.
RFC_ZONE = {
    "example.com": {
        "example.com": [("MX", (10, "mail-a.example.com")), ("MX", (20, "mail-b.example.com")),
                        ("A", "192.0.2.10"), ("A", "192.0.2.11")],
        "amy.example.com": [("A", "192.0.2.65")],
        "bob.example.com": [("A", "192.0.2.66")],
        "mail-a.example.com": [("A", "192.0.2.129")],
        "mail-b.example.com": [("A", "192.0.2.130")],
        "www.example.com": [("CNAME", "example.com")],
    },
    "example.org": {
        "example.org": [("MX", (10, "mail-c.example.org"))],
        "mail-c.example.org": [("A", "192.0.2.140")],
    },
    "2.0.192.in-addr.arpa": {
        f"{last}.2.0.192.in-addr.arpa": [("PTR", name)]
        for last, name in [(10, "example.com"), (11, "example.com"), (65, "amy.example.com"),
                           (66, "bob.example.com"), (129, "mail-a.example.com"),
                           (130, "mail-b.example.com"), (140, "mail-c.example.org")]
    },
    "0.0.10.in-addr.arpa": {"10.0.0.10.in-addr.arpa": [("PTR", "bob.example.com")]},
    "limits.test": {},
}  # fmt: skip

ALL_IPS = ["192.0.2.10", "192.0.2.11", "192.0.2.65", "192.0.2.66", "192.0.2.129", "192.0.2.130",
           "192.0.2.131", "192.0.2.140", "192.0.2.141", "10.0.0.10", "192.0.2.200"]

# RFC 7208 Appendix A.1: record -> the addresses that pass (every other one fails).
A1 = [
    ("v=spf1 +all", ALL_IPS),
    ("v=spf1 a -all", ["192.0.2.10", "192.0.2.11"]),
    ("v=spf1 a:example.org -all", []),
    ("v=spf1 mx -all", ["192.0.2.129", "192.0.2.130"]),
    ("v=spf1 mx:example.org -all", ["192.0.2.140"]),
    ("v=spf1 mx mx:example.org -all", ["192.0.2.129", "192.0.2.130", "192.0.2.140"]),
    ("v=spf1 mx/30 mx:example.org/30 -all", ["192.0.2.129", "192.0.2.130", "192.0.2.131", "192.0.2.140", "192.0.2.141"]),
    # 10.0.0.10's PTR names bob.example.com, whose A is not 10.0.0.10: not validated, fails.
    ("v=spf1 ptr -all", ["192.0.2.10", "192.0.2.11", "192.0.2.65", "192.0.2.66", "192.0.2.129", "192.0.2.130"]),
    ("v=spf1 ip4:192.0.2.128/28 -all", ["192.0.2.129", "192.0.2.130", "192.0.2.131", "192.0.2.140", "192.0.2.141"]),
]


class ParserTests(SynchronousTestCase):
    def test_terms(self) -> None:
        record = parse_record("v=spf1 a/24//64 mx:example.org/30 -ip4:192.0.2.0/24 ~ip6:2001:db8::/32 ?ptr "
                              "include:_spf.example.net exists:%{i}.x.example redirect=_spf.example.com foo=bar")
        kinds = [(d.qualifier, d.mechanism) for d in record.directives]
        self.assertEqual(kinds, [("pass", "a"), ("pass", "mx"), ("fail", "ip4"), ("softfail", "ip6"),
                                 ("neutral", "ptr"), ("pass", "include"), ("pass", "exists")])
        self.assertEqual((record.directives[0].cidr4, record.directives[0].cidr6), (24, 64))
        self.assertEqual((record.directives[1].domain_spec, record.directives[1].cidr4), ("example.org", 30))
        self.assertEqual(record.redirect, "_spf.example.com")
        self.assertEqual(record.lookups, 6)

    def test_permerrors(self) -> None:
        for text in ["v=spf1 foo", "v=spf1 ip4:300.1.1.1", "v=spf1 ip4:192.0.2.0/33", "v=spf1 a/", "v=spf1 include",
                     "v=spf1 redirect=a.com redirect=b.com", "v=spf1 all:x", "v=spf1 ip6:192.0.2.1",
                     "v=spf1 exists:%{x}", "v=spf1 a:%", "v=spf1 ip4:1.2.3.4/024"]:
            self.assertRaises(SPFPermError, parse_record, text)

    def test_select(self) -> None:
        self.assertEqual(select_record(["hello", "v=spf1 -all", "v=spf10"]), "v=spf1 -all")
        self.assertIsNone(select_record(["v=spf2.0/pra", "x"]))
        self.assertRaises(SPFPermError, select_record, ["v=spf1 -all", "V=SPF1 +all"])

    def test_rfc_macro_examples(self) -> None:
        context = MacroContext(sender="strong-bad@email.example.com", domain="email.example.com",
                               ip="192.0.2.3", helo="mx.example.org")
        cases = {
            "%{s}": "strong-bad@email.example.com", "%{o}": "email.example.com", "%{d}": "email.example.com",
            "%{d4}": "email.example.com", "%{d3}": "email.example.com", "%{d2}": "example.com",
            "%{d1}": "com", "%{dr}": "com.example.email", "%{d2r}": "example.email", "%{l}": "strong-bad",
            "%{l-}": "strong.bad", "%{lr}": "strong-bad", "%{lr-}": "bad.strong", "%{l1r-}": "strong",
            "%{ir}.%{v}._spf.%{d2}": "3.2.0.192.in-addr._spf.example.com",
            "%{lr-}.lp._spf.%{d2}": "bad.strong.lp._spf.example.com",
            "%{lr-}.lp.%{ir}.%{v}._spf.%{d2}": "bad.strong.lp.3.2.0.192.in-addr._spf.example.com",
            "%{ir}.%{v}.%{l1r-}.lp._spf.%{d2}": "3.2.0.192.in-addr.strong.lp._spf.example.com",
            "%{d2}.trusted-domains.example.net": "example.com.trusted-domains.example.net",
        }  # fmt: skip
        for spec, expected in cases.items():
            self.assertEqual(expand(spec, context), expected, spec)
        six = MacroContext(sender="strong-bad@email.example.com", domain="email.example.com",
                           ip="2001:db8::cb01", helo="x")
        self.assertEqual(expand("%{ir}.%{v}._spf.%{d2}", six),
                         "1.0.b.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6._spf.example.com")
        self.assertEqual(expand("%%%_%-%{L}", context, explanation=True), "% %20strong-bad")
        self.assertRaises(SPFPermError, expand, "%{c}.example.com", context)

    def test_regression_long_expansion_truncated_from_the_left(self) -> None:
        context = MacroContext(sender=("a." * 150) + "x@example.com", domain="example.com", ip="192.0.2.1", helo="h")
        result = expand("%{l}.example.com", context)
        self.assertLessEqual(len(result), 253)
        self.assertTrue(result.endswith(".x.example.com"))


class CheckHostTests(TestCase):
    def setUp(self) -> Deferred:
        self.dns = DNSTestServer(RFC_ZONE)
        return self.dns.start(self)

    def checker(self) -> SPFChecker:
        return SPFChecker(self.dns.resolver)

    def test_rfc_appendix_a1(self) -> Deferred:
        async def run() -> None:
            checker = self.checker()
            for record, passing in A1:
                self.dns.set("example.com", RFC_ZONE["example.com"]["example.com"] + [("TXT", record)])
                for ip in ALL_IPS:
                    result = await checker.check_host(ip, "example.com", "user@example.com", "h")
                    self.assertEqual(result.result, "pass" if ip in passing else "fail", (record, ip, result))

        return ensureDeferred(run())

    def result(self, records: dict, ip: str = "192.0.2.1", mail_from: str = "u@limits.test", helo: str = "h.test"):
        for name, text in records.items():
            self.dns.set(name, [("TXT", text)] if isinstance(text, str) else text)
        return ensureDeferred(self.checker().check(ip, helo, mail_from))

    def expect(self, expected: str, records: dict, **kw) -> Deferred:
        d = self.result(records, **kw)
        d.addCallback(lambda r: self.assertEqual(r.result, expected, r))
        return d

    def test_none_without_record(self) -> Deferred:
        return self.expect("none", {"limits.test": "not spf"})

    def test_none_for_a_non_domain(self) -> Deferred:
        return self.expect("none", {}, mail_from="u@localhost")

    def test_multiple_records_permerror(self) -> Deferred:
        return self.expect("permerror", {"limits.test": [("TXT", "v=spf1 -all"), ("TXT", "v=spf1 +all")]})

    def test_softfail_neutral_default(self) -> Deferred:
        d = self.expect("softfail", {"limits.test": "v=spf1 ~all"})
        d.addCallback(lambda _: self.expect("neutral", {"limits.test": "v=spf1 ip4:203.0.113.0/24"}))
        return d

    def test_include_and_redirect(self) -> Deferred:
        d = self.expect("pass", {"limits.test": "v=spf1 include:inc.limits.test -all",
                                 "inc.limits.test": "v=spf1 ip4:192.0.2.0/24 -all"})
        # A fail inside an include is "no match": the outer -all decides.
        d.addCallback(lambda _: self.expect("softfail", {"limits.test": "v=spf1 include:inc.limits.test ~all"},
                                            ip="198.51.100.1"))
        d.addCallback(lambda _: self.expect("permerror", {"limits.test": "v=spf1 include:none.limits.test -all"}))
        d.addCallback(lambda _: self.expect("fail", {"limits.test": "v=spf1 redirect=inc.limits.test"}, ip="198.51.100.1"))
        d.addCallback(lambda _: self.expect("permerror", {"limits.test": "v=spf1 redirect=none.limits.test"}))
        return d

    def test_regression_lookup_limit_is_ten(self) -> Deferred:
        chain = {f"l{i}.limits.test": f"v=spf1 include:l{i + 1}.limits.test" for i in range(12)}
        chain["limits.test"] = "v=spf1 include:l0.limits.test -all"
        d = self.expect("permerror", chain)
        # Exactly ten look-up terms is allowed.
        nine = {f"l{i}.limits.test": f"v=spf1 include:l{i + 1}.limits.test" for i in range(9)}
        nine["l9.limits.test"] = "v=spf1 ip4:192.0.2.1"
        d.addCallback(lambda _: self.expect("pass", dict(nine, **{"limits.test": "v=spf1 include:l0.limits.test -all"})))
        return d

    def test_regression_include_loop_stops(self) -> Deferred:
        return self.expect("permerror", {"limits.test": "v=spf1 include:limits.test -all"})

    def test_regression_void_lookup_limit_is_two(self) -> Deferred:
        d = self.expect("permerror", {"limits.test": "v=spf1 a:n1.limits.test a:n2.limits.test a:n3.limits.test -all"})
        d.addCallback(lambda _: self.expect("fail", {"limits.test": "v=spf1 a:n1.limits.test a:n2.limits.test -all"}))
        return d

    def test_regression_mx_name_limit(self) -> Deferred:
        self.dns.set("many.limits.test", [("MX", (i, f"m{i}.limits.test")) for i in range(11)])
        return self.expect("permerror", {"limits.test": "v=spf1 mx:many.limits.test -all"})

    def test_exists_with_macros(self) -> Deferred:
        self.dns.set("1.2.0.192.u.limits.test", [("A", "127.0.0.2")])
        return self.expect("pass", {"limits.test": "v=spf1 exists:%{ir}.%{l}.limits.test -all"})

    def test_servfail_is_temperror(self) -> Deferred:
        self.dns.servfail.add("limits.test")
        return self.expect("temperror", {})

    def test_servfail_in_include_is_temperror(self) -> Deferred:
        self.dns.servfail.add("inc.limits.test")
        return self.expect("temperror", {"limits.test": "v=spf1 include:inc.limits.test -all"})

    def test_helo_identity_for_null_sender(self) -> Deferred:
        d = self.result({"h.limits.test": "v=spf1 ip4:192.0.2.1 -all"}, mail_from="", helo="h.limits.test")
        d.addCallback(lambda r: self.assertEqual((r.result, r.scope, r.domain), ("pass", "helo", "h.limits.test")))
        return d

    def test_ipv6_and_mapped_ipv4(self) -> Deferred:
        d = self.expect("pass", {"limits.test": "v=spf1 ip6:2001:db8::/32 -all"}, ip="2001:db8::1")
        d.addCallback(lambda _: self.expect("pass", {"limits.test": "v=spf1 ip4:192.0.2.1 -all"}, ip="::ffff:192.0.2.1"))
        return d
