"""DMARC (RFC 7489) records, alignment and policy; Authentication-Results (RFC 8601) building and forgery removal."""

from __future__ import annotations

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.trial.unittest import SynchronousTestCase, TestCase

from mailserver.mailauth import authresults
from mailserver.mailauth.dmarc import DMARCEvaluator, DMARCRecordError, aligned, organizational_domain, parse_record
from mailserver.mailauth.dns import DNSLookup
from tests.dns import DNSTestServer


class RecordTests(SynchronousTestCase):
    def test_parse(self) -> None:
        record = parse_record("v=DMARC1; p=Reject; sp=none; adkim=s; aspf=r; pct=50; rua=mailto:a@x.org, mailto:b@x.org; x=y")
        self.assertEqual((record.p, record.sp, record.adkim, record.aspf, record.pct), ("reject", "none", "s", "r", 50))
        self.assertEqual(record.rua, ("mailto:a@x.org", "mailto:b@x.org"))
        self.assertEqual(record.policy_for(subdomain=True), "none")
        self.assertEqual(parse_record("v=DMARC1; p=quarantine").policy_for(subdomain=True), "quarantine")

    def test_bad_records(self) -> None:
        for text in ["p=reject; v=DMARC1", "v=DMARC2; p=reject", "v=DMARC1; p=bogus", "v=DMARC1", "v=DMARC1; p"]:
            self.assertRaises(DMARCRecordError, parse_record, text)
        # A bad p= with a rua= is p=none (RFC 7489 6.6.3).
        self.assertEqual(parse_record("v=DMARC1; p=bogus; rua=mailto:a@x.org").p, "none")
        self.assertEqual(parse_record("v=DMARC1; p=reject; pct=500; adkim=x").pct, 100)

    def test_organizational_domain(self) -> None:
        self.assertEqual(organizational_domain("a.b.example.co.uk"), "example.co.uk")
        self.assertEqual(organizational_domain("mail.example.com."), "example.com")
        self.assertEqual(organizational_domain("co.uk"), "co.uk")

    def test_alignment(self) -> None:
        self.assertTrue(aligned("mail.example.com", "example.com", "r"))
        self.assertFalse(aligned("mail.example.com", "example.com", "s"))
        self.assertTrue(aligned("Example.COM.", "example.com", "s"))
        self.assertFalse(aligned("example.co.uk", "other.co.uk", "r"))
        self.assertFalse(aligned("", "example.com", "r"))


class EvaluateTests(TestCase):
    def setUp(self) -> Deferred:
        self.dns = DNSTestServer({
            "example.com": {"_dmarc.example.com": [("TXT", "v=DMARC1; p=reject; sp=quarantine")]},
            "example.org": {"_dmarc.example.org": [("TXT", "v=DMARC1; p=quarantine; pct=50; adkim=s")]},
            "example.net": {"_dmarc.example.net": [("TXT", "v=DMARC1; p=reject"), ("TXT", "v=DMARC1; p=none")]},
        })
        return self.dns.start(self)

    def evaluate(self, from_domains, spf=("none", ""), dkim=(), sample=0.0) -> Deferred:
        evaluator = DMARCEvaluator(DNSLookup(self.dns.resolver), sample=lambda: sample)
        return ensureDeferred(evaluator.evaluate(from_domains, spf, list(dkim)))

    def expect(self, expected, *args, **kw) -> Deferred:
        d = self.evaluate(*args, **kw)
        d.addCallback(lambda r: self.assertEqual((r.result, r.policy, r.disposition), expected, r))
        return d

    def test_dkim_aligned_pass(self) -> Deferred:
        return self.expect(("pass", "reject", "none"), ["example.com"], dkim=[("pass", "mail.example.com")])

    def test_spf_aligned_pass(self) -> Deferred:
        return self.expect(("pass", "reject", "none"), ["example.com"], spf=("pass", "bounces.example.com"))

    def test_unaligned_passes_fail(self) -> Deferred:
        return self.expect(("fail", "reject", "reject"), ["example.com"], spf=("pass", "example.org"),
                           dkim=[("pass", "example.org"), ("fail", "example.com")])

    def test_subdomain_uses_sp(self) -> Deferred:
        return self.expect(("fail", "quarantine", "quarantine"), ["news.example.com"])

    def test_strict_dkim_and_pct(self) -> Deferred:
        d = self.expect(("fail", "quarantine", "quarantine"), ["example.org"], dkim=[("pass", "a.example.org")])
        # Outside the 50% sample: one step softer.
        d.addCallback(lambda _: self.expect(("fail", "quarantine", "none"), ["example.org"], sample=0.9))
        return d

    def test_none_and_errors(self) -> Deferred:
        d = self.expect(("none", "none", "none"), ["nothing.example"])
        d.addCallback(lambda _: self.expect(("none", "none", "none"), ["example.net"]))  # two records: none
        d.addCallback(lambda _: self.expect(("permerror", "none", "none"), ["a.com", "b.com"]))
        d.addCallback(lambda _: self.expect(("permerror", "none", "none"), []))
        return d

    def test_servfail_is_temperror(self) -> Deferred:
        self.dns.servfail.add("_dmarc.example.com")
        return self.expect(("temperror", "none", "none"), ["example.com"])


class AuthResultsTests(SynchronousTestCase):
    MESSAGE = (
        b"Authentication-Results: MX.example.com; dkim=pass header.d=paypal.com\n"
        b"Authentication-Results: (comment) mx.example.com (x) 1;\n spf=pass\n"
        b"Authentication-Results: other.example.net; spf=fail\n"
        b"From: a@example.org\n\nAuthentication-Results: mx.example.com; in the body\n"
    )

    def test_header(self) -> None:
        field = authresults.header("mx.example.com", [
            authresults.method_result("spf", "pass", "matched ip4", smtp_mailfrom="a@example.org"),
            authresults.method_result("dkim", "fail", "bad (sig)", header_d="example.org", header_b="ab/+cd=="),
            authresults.method_result("dmarc", "none", "", header_from='we"ird x'),
        ])
        self.assertEqual(field, (
            b"Authentication-Results: mx.example.com;\n\tspf=pass (matched ip4) smtp.mailfrom=a@example.org;\n"
            b"\tdkim=fail (bad sig) header.d=example.org header.b=ab/+cd==;\n"
            b'\tdmarc=none header.from="we\\"ird x"\n'
        ))
        self.assertEqual(authresults.header("mx", []), b"Authentication-Results: mx; none\n")

    def test_regression_forged_results_for_our_id_removed(self) -> None:
        cleaned, removed = authresults.remove_forged(self.MESSAGE, "mx.example.com")
        self.assertEqual(removed, 2)
        self.assertEqual(cleaned, (
            b"Authentication-Results: other.example.net; spf=fail\n"
            b"From: a@example.org\n\nAuthentication-Results: mx.example.com; in the body\n"
        ))
        self.assertEqual(authresults.remove_forged(cleaned, "mx.example.com"), (cleaned, 0))
