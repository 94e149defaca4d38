"""The inbound authentication step end to end over the loopback DNS server."""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.trial.unittest import SynchronousTestCase, TestCase

from mailserver.address import parse_mailbox
from mailserver.delivery.authentication import InboundAuthentication, SenderSPF
from mailserver.envelope import Client, Envelope
from mailserver.errors import MailError
from mailserver.mailauth.dkim_sign import sign_with
from mailserver.mailauth.inbound import Authenticator, InboundPolicy
from mailserver.mailauth.spf import SPFResult
from mailserver.spooled import SpooledMessage
from tests.dns import DNSTestServer
from tests.mailauth.support import MESSAGE, key_records, keys, sender_zones

SENDER_IP = "192.0.2.10"


def message_from(address: bytes) -> bytes:
    return MESSAGE.replace(b"alice@example.com", address)


class AuthenticateTests(TestCase):
    def setUp(self) -> Deferred:
        self.rsa, self.ed = keys()
        self.dns = DNSTestServer(sender_zones(self.rsa))
        return self.dns.start(self)

    def authenticate(self, message: bytes, mail_from: str = "bounce@example.com", ip: str = SENDER_IP,
                     **policy) -> Deferred:
        policy.setdefault("own_domains", frozenset({"mydomain.test"}))
        authenticator = Authenticator(self.dns.resolver, reactor, InboundPolicy("mx.mydomain.test", **policy))
        return authenticator.authenticate(ip, "client.example.com", mail_from, message)

    def test_results_coroutine_same_as_authenticate(self) -> Deferred:
        """The coroutine the mailauth filter awaits gives what L{Authenticator.authenticate} fires with."""
        return ensureDeferred(self._compare_results())

    async def _compare_results(self) -> None:
        authenticator = Authenticator(self.dns.resolver, reactor, InboundPolicy("mx.mydomain.test"))
        for message, mail_from in ((sign_with(MESSAGE, [self.rsa, self.ed]) + MESSAGE, "bounce@example.com"),
                                   (message_from(b"a@example.org"), "x@example.net")):
            spf = await authenticator.check_spf(SENDER_IP, "client.example.com", mail_from)
            for known in (None, spf):
                old = await authenticator.authenticate(SENDER_IP, "client.example.com", mail_from, message, spf=known)
                new = await authenticator.results(SENDER_IP, "client.example.com", mail_from, message, known)
                self.assertEqual((new.header, new.disposition, new.reasons, new.dmarc, new.dkim),
                                 (old.header, old.disposition, old.reasons, old.dmarc, old.dkim))

    def test_signed_and_spf_pass(self) -> Deferred:
        signed = sign_with(MESSAGE, [self.rsa]) + MESSAGE
        d = self.authenticate(b"Authentication-Results: mx.mydomain.test; dmarc=pass\n" + signed)

        def check(results) -> None:
            self.assertEqual((results.spf.result, [r.result for r in results.dkim], results.dmarc.result),
                             ("pass", ["pass"], "pass"))
            self.assertEqual((results.disposition, results.error), ("accept", None))
            header = results.header.decode()
            self.assertTrue(header.startswith("Authentication-Results: mx.mydomain.test;\n\tspf=pass"), header)
            self.assertIn("smtp.mailfrom=bounce@example.com", header)
            self.assertIn("dkim=pass header.d=example.com header.s=mail header.a=rsa-sha256 header.b=", header)
            self.assertIn("arc=none", header)
            self.assertIn("dmarc=pass (p=reject dis=none) header.from=example.com", header)
            final = results.apply(b"Authentication-Results: mx.mydomain.test; dmarc=pass\n" + signed)
            self.assertEqual(final, results.header + signed)

        return d.addCallback(check)

    def test_dmarc_reject_is_550_5_7_1(self) -> Deferred:
        d = self.authenticate(MESSAGE, mail_from="x@example.net")

        def check(results) -> None:
            self.assertEqual((results.dmarc.result, results.dmarc.disposition), ("fail", "reject"))
            self.assertEqual(results.disposition, "reject")
            self.assertEqual((results.error.code, results.error.enhanced), (550, "5.7.1"))
            self.assertIn("DMARC policy of example.com is reject", results.error.text)

        return d.addCallback(check)

    def test_dmarc_reject_configurable(self) -> Deferred:
        d = self.authenticate(MESSAGE, mail_from="x@example.net", dmarc_reject_action="quarantine")
        d.addCallback(lambda r: self.assertEqual((r.disposition, r.error), ("quarantine", None)))
        d.addCallback(lambda _: self.authenticate(MESSAGE, mail_from="x@example.net", dmarc_reject_action="header"))
        d.addCallback(lambda r: self.assertEqual((r.disposition, r.dmarc.result), ("accept", "fail")))
        return d

    def test_dmarc_quarantine(self) -> Deferred:
        d = self.authenticate(message_from(b"a@example.org"), mail_from="x@example.net")
        d.addCallback(lambda r: self.assertEqual(r.disposition, "quarantine"))
        return d

    def test_spf_fail_action(self) -> Deferred:
        unknown_from = message_from(b"a@example.net")
        d = self.authenticate(unknown_from, mail_from="x@example.org")
        d.addCallback(lambda r: self.assertEqual((r.spf.result, r.disposition), ("fail", "accept")))
        d.addCallback(lambda _: self.authenticate(unknown_from, mail_from="x@example.org", spf_fail_action="reject"))
        d.addCallback(lambda r: self.assertEqual((r.error.code, r.error.enhanced), (550, "5.7.1")))
        return d

    def test_regression_own_domain_without_dmarc_record_never_reaches_inbox(self) -> Deferred:
        # mydomain.test publishes nothing at all; a From: claiming it still fails.
        d = self.authenticate(message_from(b"ceo@mydomain.test"), mail_from="x@example.net")

        def check(results) -> None:
            self.assertEqual(results.dmarc.result, "none")
            self.assertEqual(results.disposition, "reject")
            self.assertIn("mydomain.test is ours", results.error.text)

        d.addCallback(check)
        d.addCallback(lambda _: self.authenticate(message_from(b"ceo@sub.mydomain.test"), mail_from="x@example.net",
                                                  own_domain_fail_action="quarantine"))
        d.addCallback(lambda r: self.assertEqual(r.disposition, "quarantine"))
        return d

    def test_spf_checked_at_mail_from_is_reused(self) -> Deferred:
        authenticator = Authenticator(self.dns.resolver, reactor, InboundPolicy("mx.mydomain.test"))

        async def run() -> None:
            spf = await authenticator.check_spf(SENDER_IP, "client.example.com", "bounce@example.com")
            self.assertEqual(spf.result, "pass")
            before = len(self.dns.queries)
            results = await authenticator.authenticate(SENDER_IP, "client.example.com", "bounce@example.com",
                                                       MESSAGE, spf=spf)
            self.assertIs(results.spf, spf)
            self.assertNotIn(("example.com", 16), self.dns.queries[before:])
            self.assertEqual(results.dmarc.result, "pass")

        return ensureDeferred(run())

    def test_temperror_is_reported_not_raised(self) -> Deferred:
        self.dns.servfail.update({"example.com", "_dmarc.example.com", self.rsa.dns_name})
        signed = sign_with(MESSAGE, [self.rsa]) + MESSAGE
        d = self.authenticate(signed)

        def check(results) -> None:
            self.assertEqual((results.spf.result, results.dkim[0].result, results.dmarc.result),
                             ("temperror", "temperror", "temperror"))
            self.assertEqual(results.disposition, "accept")

        return d.addCallback(check)

    def test_regression_garbage_message_gives_results(self) -> Deferred:
        garbage = b"\x00\xff: x\nFrom: <<<@@@>>>\nDKIM-Signature: \xff\xfe\n\n" + bytes(range(256))
        d = self.authenticate(garbage, mail_from="", ip="2001:db8::1")
        d.addCallback(lambda r: self.assertIn(r.dmarc.result, ("permerror", "none")))
        return d


class ServiceAuthenticatorTests(TestCase):
    """The Authenticator service.py builds from main.cf, over the resolver the server is given."""

    timeout = 30

    def setUp(self) -> Deferred:
        self.dns = DNSTestServer({"example.com": {}, "example.net": {"example.net": [("TXT", "v=spf1 -all")]}})
        return self.dns.start(self)

    def test_default_settings_refuse_unauthenticated_mail_from_our_domain(self) -> Deferred:
        from tests.harness import RunningServer

        server = RunningServer(self, resolver=self.dns.resolver).service.server
        d = server.authenticator.authenticate("198.51.100.7", "evil.example.net", "x@example.net", MESSAGE)

        def check(results) -> None:
            self.assertEqual(results.authserv_id, "mx.example.com")
            self.assertEqual(results.disposition, "reject")
            self.assertEqual((results.error.code, results.error.enhanced), (550, "5.7.1"))
            self.assertTrue(results.header.startswith(b"Authentication-Results: mx.example.com;\n\tspf=fail"))

        return d.addCallback(check)


class SharedWorkTests(TestCase):
    """Work done once per message, or once per sender domain, not once per check."""

    setUp = AuthenticateTests.setUp
    authenticate = AuthenticateTests.authenticate

    def test_regression_headers_split_once_for_all_checks(self) -> Deferred:
        """One split of the header block serves DKIM (both threads' sides), DMARC and the A-R edit."""
        from mailserver.mailauth import authresults, dkim_verify, headers, inbound

        calls: list[int] = []

        def counting(message: bytes):
            calls.append(len(message))
            return headers.split_headers(message)

        for module in (inbound, dkim_verify, authresults):
            self.patch(module, "split_headers", counting)
        signed = sign_with(MESSAGE, [self.rsa]) + MESSAGE

        def check(results) -> None:
            self.assertEqual(results.dkim[0].result, "pass")
            self.assertTrue(results.apply(signed).startswith(b"Authentication-Results: mx.mydomain.test;"))
            self.assertEqual(len(calls), 1)

        return self.authenticate(signed).addCallback(check)

    async def _second(self) -> None:
        subdomain = sign_with(message_from(b"alice@news.example.com"), [self.rsa]) + message_from(b"alice@news.example.com")
        authenticator = Authenticator(self.dns.resolver, reactor, InboundPolicy("mx.mydomain.test"))
        first = await authenticator.authenticate(SENDER_IP, "client.example.com", "bounce@example.com", subdomain)
        asked = list(self.dns.queries)
        self.assertIn(("_dmarc.news.example.com", 16), asked)  # NXDOMAIN, then the organizational domain's
        lookups: list[str] = []
        resolver = self.dns.resolver
        self.patch(resolver, "lookupText", lambda name, timeout=None: lookups.append(name))
        second = await authenticator.authenticate(SENDER_IP, "client.example.com", "bounce@example.com", subdomain)
        self.assertEqual((lookups, self.dns.queries), ([], asked))
        self.assertEqual(second.header, first.header)
        self.assertEqual((second.dkim[0].result, second.dmarc.result), ("pass", "pass"))

    def test_regression_second_message_from_a_domain_makes_no_dns_query(self) -> Deferred:
        """SPF, DKIM key, the subdomain's absent _dmarc (negative cache) and the org domain's: all cached."""
        return ensureDeferred(self._second())

    def test_regression_records_parsed_once(self) -> Deferred:
        """The SPF and DMARC record texts of a sender domain are parsed once, not per message."""
        from mailserver.mailauth import dmarc, spf

        for module in (spf, dmarc):
            module.parse_cached.cache_clear()  # type: ignore[attr-defined]
        signed = sign_with(MESSAGE, [self.rsa]) + MESSAGE

        async def run() -> None:
            authenticator = Authenticator(self.dns.resolver, reactor, InboundPolicy("mx.mydomain.test"))
            for _ in range(3):
                await authenticator.authenticate(SENDER_IP, "client.example.com", "bounce@example.com", signed)
            for module in (spf, dmarc):
                info = module.parse_cached.cache_info()  # type: ignore[attr-defined]
                # Parsed once; the third message's results were kept (dns.Results): not even looked up.
                self.assertEqual((info.misses, info.hits), (1, 1), module.__name__)

        return ensureDeferred(run())


class SenderSPFTests(SynchronousTestCase):
    """SPF at MAIL FROM waits only when its result can refuse the sender."""

    class _Authenticator:
        def __init__(self) -> None:
            self.started: list[Deferred] = []
            self.given: list[object] = []

        def check_spf(self, ip: str, helo: str, mail_from: str) -> Deferred:
            self.started.append(Deferred())
            return self.started[-1]

        def verdict_now(self, ip, helo, mail_from, message, spf=None, load=None) -> object:
            self.given.append(spf)
            return Deferred()

    def envelope(self) -> Envelope:
        return Envelope(client=Client("192.0.2.10", "client.example.com"), sender=parse_mailbox("a@example.com"))

    def test_regression_spf_at_mail_from_not_awaited_serially(self) -> None:
        """With spf_fail_action other than reject, MAIL FROM answers before the SPF look-ups end."""
        authenticator = self._Authenticator()
        envelope = self.envelope()
        checked = Deferred.fromCoroutine(SenderSPF(authenticator, lambda client: False, False).check(envelope))
        self.successResultOf(checked)  # not waiting for DNS
        self.assertIsNone(envelope.spf)
        # End of DATA takes the result evaluated meanwhile (no second evaluation).
        filtered = InboundAuthentication(authenticator, lambda client: False, reactor).filter(
            envelope, SpooledMessage(MESSAGE))
        self.assertNoResult(filtered)
        result = SPFResult("pass", "example.com", "mailfrom")
        authenticator.started[0].callback(result)
        self.assertEqual((len(authenticator.started), authenticator.given, envelope.spf), (1, [result], result))

    def test_spf_at_mail_from_awaited_when_it_can_refuse(self) -> None:
        authenticator = self._Authenticator()
        envelope = self.envelope()
        checked = Deferred.fromCoroutine(SenderSPF(authenticator, lambda client: False, True).check(envelope))
        self.assertNoResult(checked)
        authenticator.started[0].callback(SPFResult("fail", "example.com", "mailfrom"))
        self.assertEqual(self.failureResultOf(checked, MailError).value.enhanced, "5.7.23")

    def test_spf_failure_at_mail_from_evaluated_again_at_end_of_data(self) -> None:
        authenticator = self._Authenticator()
        envelope = self.envelope()
        self.successResultOf(Deferred.fromCoroutine(SenderSPF(authenticator, lambda client: False, False).check(envelope)))
        authenticator.started[0].errback(RuntimeError("unexpected"))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        InboundAuthentication(authenticator, lambda client: False, reactor).filter(envelope, SpooledMessage(MESSAGE))
        self.assertEqual(authenticator.given, [None])
