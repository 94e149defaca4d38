"""MTA-STS (RFC 8461): policy parsing, discovery and cache, HTTPS fetch over loopback, and the relay enforcing it."""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.endpoints import SSL4ServerEndpoint, TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.static import Data

from mailserver.mailauth.dns import DNSLookup
from mailserver.mailauth.mta_sts import MTASTSPolicies, STSPolicy, STSPolicyError, https_fetcher, parse_policy, parse_record
from mailserver.queue.relay import DEFERRED, DELIVERED, Relay
from tests.dns import DNSTestServer
from tests.mailauth.certs import certificate
from tests.queue.remote import FakeResolver, ScriptedESMTPFactory

POLICY = b"version: STSv1\r\nmode: enforce\r\nmx: mx.remote.example\r\nmx: *.backup.remote.example\r\nmax_age: 86400\r\n"
MESSAGE = b"From: alice@example.com\nTo: carol@remote.example\nSubject: hi\n\nbody\n"


class ParsingTests(SynchronousTestCase):
    def test_policy(self) -> None:
        policy = parse_policy(POLICY.decode())
        self.assertEqual(policy, STSPolicy("enforce", ("mx.remote.example", "*.backup.remote.example"), 86400))
        self.assertTrue(policy.matches("MX.remote.example."))
        self.assertTrue(policy.matches("a.backup.remote.example"))
        self.assertFalse(policy.matches("a.b.backup.remote.example"))  # * is one label
        self.assertFalse(policy.matches("backup.remote.example"))
        self.assertFalse(policy.matches("evil-mx.remote.example"))

    def test_bad_policies(self) -> None:
        for text in ["", "version: STSv2\nmode: enforce\nmx: a\nmax_age: 1", "version: STSv1\nmode: x\nmx: a\nmax_age: 1",
                     "version: STSv1\nmode: enforce\nmax_age: 1", "version: STSv1\nmode: enforce\nmx: a\nmax_age: -1",
                     "garbage"]:
            self.assertRaises(STSPolicyError, parse_policy, text)
        self.assertEqual(parse_policy("version: STSv1\nmode: none\nmax_age: 99999999").max_age, 31557600)

    def test_record(self) -> None:
        self.assertEqual(parse_record(["v=STSv1; id=20261204T1;"]), "20261204T1")
        self.assertIsNone(parse_record(["v=STSv1; id=a", "v=STSv1; id=b"]))
        self.assertIsNone(parse_record(["v=STSv1; id=bad-id"]))
        self.assertIsNone(parse_record(["other"]))


class CacheTests(TestCase):
    def setUp(self) -> Deferred:
        self.dns = DNSTestServer({"remote.example": {"_mta-sts.remote.example": [("TXT", "v=STSv1; id=1")],
                                                     "_smtp._tls.remote.example": [("TXT", "v=TLSRPTv1; rua=mailto:r@remote.example")]}})
        self.fetched: list[str] = []
        self.body = POLICY
        self.clock = Clock()
        return self.dns.start(self)

    def fetch(self, url: str) -> Deferred:
        self.fetched.append(url)
        return fail(STSPolicyError("down")) if self.body is None else succeed(self.body)

    async def test_cached_until_id_changes_or_expiry_and_kept_on_failure(self) -> None:
        policies = MTASTSPolicies(DNSLookup(self.dns.resolver), self.fetch, self.clock)
        policy = await policies.policy_for("remote.example")
        self.assertEqual(policy.mode, "enforce")
        self.assertEqual(self.fetched, ["https://mta-sts.remote.example/.well-known/mta-sts.txt"])
        await policies.policy_for("remote.example")
        self.assertEqual(len(self.fetched), 1)  # same id: cached
        self.dns.set("_mta-sts.remote.example", [("TXT", "v=STSv1; id=2")])
        self.body = None  # the new policy cannot be fetched: the cached one stays (RFC 8461 5.1)
        self.assertEqual(await policies.policy_for("remote.example"), policy)
        self.assertEqual(len(self.fetched), 2)
        self.dns.set("_mta-sts.remote.example", [])  # record removed: cached policy until max_age
        self.assertEqual(await policies.policy_for("remote.example"), policy)
        self.clock.advance(86401)
        self.assertIsNone(await policies.policy_for("remote.example"))
        self.assertIsNone(await policies.policy_for("nothing.example"))
        self.flushLoggedErrors()


class CacheBoundTests(SynchronousTestCase):
    def test_regression_cache_is_bounded(self) -> None:
        from mailserver.mailauth import mta_sts
        from mailserver.mailauth.mta_sts import _Cached

        self.patch(mta_sts, "MAX_CACHED_POLICIES", 3)
        clock = Clock()
        policies = MTASTSPolicies(None, None, clock)
        policy = parse_policy(POLICY.decode())
        policies._store("expired.example", _Cached("1", policy, 0))
        for index in range(5):
            policies._store(f"d{index}.example", _Cached("1", policy, 100))
        self.assertEqual(list(policies._cache), ["d2.example", "d3.example", "d4.example"])


class FetchTests(TestCase):
    async def test_https_fetch_over_loopback_checks_the_certificate(self) -> None:
        server_cert, trust = certificate("mta-sts.remote.example")
        root = Resource()
        well_known = Resource()
        root.putChild(b".well-known", well_known)
        well_known.putChild(b"mta-sts.txt", Data(POLICY, "text/plain"))
        port = await SSL4ServerEndpoint(reactor, 0, server_cert.options(), interface="127.0.0.1").listen(Site(root))
        self.addCleanup(port.stopListening)
        dns = DNSTestServer({"remote.example": {"mta-sts.remote.example": [("A", "127.0.0.1")],
                                                "other.remote.example": [("A", "127.0.0.1")]}})
        await dns.start(self)
        lookup = DNSLookup(dns.resolver)
        fetch = https_fetcher(reactor, lookup, trust_root=trust, timeout=10, port=port.getHost().port)
        body = await fetch("https://mta-sts.remote.example/.well-known/mta-sts.txt")
        self.assertEqual(body, POLICY)
        # A name the certificate does not cover is refused.
        with self.assertRaises(Exception):
            await fetch("https://other.remote.example/.well-known/mta-sts.txt")
        # A missing file is an error, not a policy.
        with self.assertRaises(STSPolicyError):
            await fetch("https://mta-sts.remote.example/nothing")


class StaticPolicies:
    def __init__(self, policy) -> None:
        self.policy = policy
        self.reports: list[tuple[str, str]] = []

    async def policy_for(self, domain):
        return self.policy

    async def report(self, domain, result_type, detail):
        self.reports.append((domain, result_type))


class PortMapRelay(Relay):
    ports: dict = {}

    def endpoint_for(self, name, address, port):
        return TCP4ClientEndpoint(reactor, address, self.ports.get(name, port), timeout=5)


class EnforceTests(TestCase):
    timeout = 30

    async def setUp(self) -> None:
        self.cert, self.trust = certificate("mx.remote.example")
        self.server = ScriptedESMTPFactory(tls_options=self.cert.options())
        self.port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(self.server)
        self.addCleanup(self.port.stopListening)
        self.addCleanup(lambda: self.server.wait_closed())

    def relay(self, policy, mx="mx.remote.example") -> tuple[Relay, StaticPolicies]:
        resolver = FakeResolver(mx={"remote.example": [(10, mx)]}, a={mx: ["127.0.0.1"]})
        policies = StaticPolicies(policy)
        relay = PortMapRelay(reactor, resolver, helo_name="mx.example.com", port=self.port.getHost().port,
                             tls_security_level="may", mta_sts=policies, trust_root=self.trust, connect_timeout=5,
                             reply_timeout=10)
        return relay, policies

    async def test_enforce_delivers_over_verified_tls(self) -> None:
        relay, _ = self.relay(parse_policy(POLICY.decode()))
        [result] = await relay.deliver("alice@example.com", ["carol@remote.example"], MESSAGE)
        self.assertEqual(result.status, DELIVERED, result)
        self.assertIn(b"STARTTLS", self.server.commands)

    async def test_regression_enforce_refuses_mx_outside_policy(self) -> None:
        relay, policies = self.relay(parse_policy(POLICY.decode()), mx="evil.example.net")
        [result] = await relay.deliver("alice@example.com", ["carol@remote.example"], MESSAGE)
        self.assertEqual((result.status, result.enhanced), (DEFERRED, "4.7.5"))
        self.assertEqual(self.server.connections, 0)
        self.assertEqual(policies.reports, [("remote.example", "validation-failure")])

    async def test_regression_enforce_never_downgrades_to_plain_text(self) -> None:
        self.server.tls_options = None  # no STARTTLS offered
        relay, policies = self.relay(parse_policy(POLICY.decode()))
        [result] = await relay.deliver("alice@example.com", ["carol@remote.example"], MESSAGE)
        self.assertEqual(result.status, DEFERRED, result)
        self.assertEqual(self.server.delivered, [])

    async def test_regression_enforce_refuses_an_untrusted_certificate(self) -> None:
        other, _ = certificate("mx.remote.example", "other")
        self.server.tls_options = other.options()
        relay, policies = self.relay(parse_policy(POLICY.decode()))
        [result] = await relay.deliver("alice@example.com", ["carol@remote.example"], MESSAGE)
        self.assertEqual(result.status, DEFERRED, result)
        self.assertEqual(self.server.delivered, [])
        self.assertEqual(policies.reports[0][1], "certificate-or-starttls-failure")

    async def test_testing_mode_does_not_enforce(self) -> None:
        self.server.tls_options = None
        relay, _ = self.relay(parse_policy(POLICY.decode().replace("enforce", "testing")))
        [result] = await relay.deliver("alice@example.com", ["carol@remote.example"], MESSAGE)
        self.assertEqual(result.status, DELIVERED, result)
