"""
C{mailserver check --dns}: each record's OK, WARN and FAIL paths, driven
through the command's own argument parser against zones served by the
loopback twisted.names server of L{tests.dns}; the exit status through the
real command in a child process.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from twisted.internet import reactor
from twisted.internet.endpoints import SSL4ServerEndpoint
from twisted.internet.utils import getProcessOutputAndValue
from twisted.internet.interfaces import IResolver
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.static import Data

from mailserver.cli.dns_check import check_published, mail_domains, make_resolver, server_address
from mailserver.cli.dns_records import Finding
from mailserver.cli.main import build_parser
from mailserver.config.parameters import load_config
from mailserver.mailauth.dkim_keys import KeyStore, generate
from mailserver.mailauth.mta_sts import https_fetcher
from tests.dns import DNSTestServer
from tests.harness import write_config
from tests.mailauth.certs import certificate

ADDRESS = "192.0.2.25"
REVERSE = "25.2.0.192.in-addr.arpa"
POLICY = b"version: STSv1\nmode: enforce\nmx: mx.example.com\nmax_age: 86400\n"


def good_zones() -> dict[str, dict[str, list[tuple[str, Any]]]]:
    """Every record published as docs/internet.rst says."""
    return {
        "example.com": {
            "example.com": [("MX", (10, "mx.example.com")), ("TXT", "v=spf1 mx -all")],
            "mx.example.com": [("A", ADDRESS), ("TXT", "v=spf1 a -all")],
            "_dmarc.example.com": [("TXT", "v=DMARC1; p=reject; rua=mailto:dmarc@example.com")],
            "_mta-sts.example.com": [("TXT", "v=STSv1; id=20261204")],
            "mta-sts.example.com": [("A", "127.0.0.1")],
            "_smtp._tls.example.com": [("TXT", "v=TLSRPTv1; rua=mailto:tls@example.com")],
        },
        "2.0.192.in-addr.arpa": {REVERSE: [("PTR", "mx.example.com")]},
    }


class DNSCheckTestCase(TestCase):
    """A config for mx.example.com receiving example.com, and the good zones on a loopback server."""

    extra = "dkim_signing_domains =\n"

    async def setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())
        self.path = write_config(self.directory, extra=self.extra)
        self.dns = DNSTestServer(good_zones())
        await self.dns.start(self)
        self.make_fetch = None

    def set(self, name: str, *records: tuple[str, Any]) -> None:
        self.dns.set(name, list(records))

    async def findings(self, *argv: str) -> list[Finding]:
        args = build_parser().parse_args(["-c", self.path, "check", "--dns", "--dns-server",
                                          f"127.0.0.1:{self.dns.port}", "--dns-timeout", "0.2", *argv])
        config, _ = load_config(self.path)
        return await check_published(args, config, reactor, self.make_fetch)

    async def finding(self, kind: str, name: str, *argv: str) -> Finding:
        """The one finding of C{kind} about C{name}."""
        found = [f for f in await self.findings(*argv) if (f.kind, f.name) == (kind, name)]
        self.assertEqual(len(found), 1, found)
        return found[0]

    async def assertFinding(self, status: str, kind: str, name: str, *argv: str, says: str = "",
                            publish: str | None = None) -> Finding:
        finding = await self.finding(kind, name, *argv)
        self.assertEqual(finding.status, status, str(finding))
        self.assertIn(says, finding.message)
        if publish is not None:
            self.assertEqual(finding.publish, publish)
        self.assertTrue(str(finding).startswith(f"{status:<4} {kind} {name}: "), str(finding))
        return finding


class WholeReportTests(DNSCheckTestCase):
    async def test_good_zones_are_all_ok(self) -> None:
        findings = await self.findings("--address", ADDRESS)
        self.assertEqual([(f.status, f.kind, f.name) for f in findings], [
            ("OK", "HOST", "mx.example.com"), ("OK", "PTR", REVERSE), ("OK", "SPF", "mx.example.com"),
            ("OK", "MX", "example.com"), ("OK", "SPF", "example.com"), ("OK", "DMARC", "_dmarc.example.com"),
            ("OK", "MTA-STS", "_mta-sts.example.com"), ("OK", "TLS-RPT", "_smtp._tls.example.com"),
        ])
        self.assertEqual(str(findings[3]), "OK   MX example.com: 10 mx.example.com (192.0.2.25)")
        self.assertEqual(str(findings[4]), 'OK   SPF example.com: "v=spf1 mx -all": pass for 192.0.2.25')

    async def test_dns_timeout_is_a_fail_that_says_so(self) -> None:
        self.dns.silent.add("_dmarc.example.com")
        finding = await self.assertFinding("FAIL", "DMARC", "_dmarc.example.com", says="DNS look-up timed out")
        self.assertIn("_dmarc.example.com: TimeoutError", finding.message)

    async def test_servfail_is_a_fail(self) -> None:
        self.dns.servfail.add("example.com")
        await self.assertFinding("FAIL", "MX", "example.com", says="DNS look-up failed")

    async def test_domain_option_replaces_the_configured_domains(self) -> None:
        findings = await self.findings("--domain", "example.org")
        self.assertEqual({f.name for f in findings if f.kind == "MX"}, {"example.org"})


class MXTests(DNSCheckTestCase):
    async def test_mx_ok_lists_hosts_and_addresses(self) -> None:
        self.set("example.com", ("MX", (10, "mx.example.com")), ("MX", (20, "backup.example.com")),
                 ("TXT", "v=spf1 mx -all"))
        self.set("backup.example.com", ("AAAA", "2001:db8::26"))
        await self.assertFinding("OK", "MX", "example.com",
                                 says="10 mx.example.com (192.0.2.25); 20 backup.example.com (2001:db8::26)")

    async def test_mx_missing_fails_with_the_record_to_publish(self) -> None:
        self.set("example.com", ("TXT", "v=spf1 mx -all"))
        await self.assertFinding("FAIL", "MX", "example.com", says="no MX record",
                                 publish="example.com. IN MX 10 mx.example.com.")

    async def test_mx_host_without_address_fails(self) -> None:
        self.set("example.com", ("MX", (10, "mx.example.com")), ("MX", (20, "gone.example.com")))
        await self.assertFinding("FAIL", "MX", "example.com", "--address", ADDRESS,
                                 says="gone.example.com has no A or AAAA record",
                                 publish=f"gone.example.com. IN A {ADDRESS}")

    async def test_null_mx_fails(self) -> None:
        self.set("example.com", ("MX", (0, "")))
        await self.assertFinding("FAIL", "MX", "example.com", says="null MX (RFC 7505)")

    async def test_mx_not_myhostname_warns(self) -> None:
        self.set("example.com", ("MX", (10, "other.example.com")))
        self.set("other.example.com", ("A", "192.0.2.99"))
        await self.assertFinding("WARN", "MX", "example.com", says="none is myhostname (mx.example.com)",
                                 publish="example.com. IN MX 10 mx.example.com.")


class SPFTests(DNSCheckTestCase):
    async def test_spf_ok_syntax_only_without_address(self) -> None:
        await self.assertFinding("OK", "SPF", "example.com", says="syntax only (--address IP")

    async def test_spf_missing_fails(self) -> None:
        self.set("example.com", ("MX", (10, "mx.example.com")), ("TXT", "some-verification=1"))
        await self.assertFinding("FAIL", "SPF", "example.com", says="no v=spf1 record",
                                 publish='example.com. IN TXT "v=spf1 mx -all"')

    async def test_spf_two_records_fail(self) -> None:
        self.set("example.com", ("MX", (10, "mx.example.com")), ("TXT", "v=spf1 mx -all"), ("TXT", "v=spf1 -all"))
        await self.assertFinding("FAIL", "SPF", "example.com", says="more than one v=spf1 record")

    async def test_spf_unparsable_fails(self) -> None:
        self.set("example.com", ("MX", (10, "mx.example.com")), ("TXT", "v=spf1 mx ip4:300.1.1.1 -all"))
        await self.assertFinding("FAIL", "SPF", "example.com", says="bad address in 'ip4:300.1.1.1'",
                                 publish='example.com. IN TXT "v=spf1 mx -all"')

    async def test_spf_plus_all_warns(self) -> None:
        self.set("example.com", ("MX", (10, "mx.example.com")), ("TXT", "v=spf1 mx +all"))
        await self.assertFinding("WARN", "SPF", "example.com", "--address", ADDRESS, says="+all: anyone may send",
                                 publish='example.com. IN TXT "v=spf1 mx -all"')

    async def test_spf_question_all_warns(self) -> None:
        self.set("example.com", ("MX", (10, "mx.example.com")), ("TXT", "v=spf1 mx ?all"))
        await self.assertFinding("WARN", "SPF", "example.com", says="?all",
                                 publish='example.com. IN TXT "v=spf1 mx -all"')

    async def test_spf_without_all_warns(self) -> None:
        self.set("example.com", ("MX", (10, "mx.example.com")), ("TXT", "v=spf1 mx"))
        await self.assertFinding("WARN", "SPF", "example.com", says="no all",
                                 publish='example.com. IN TXT "v=spf1 mx -all"')

    async def test_spf_softfail_all_is_ok(self) -> None:
        self.set("example.com", ("MX", (10, "mx.example.com")), ("TXT", "v=spf1 mx ~all"))
        await self.assertFinding("OK", "SPF", "example.com", "--address", ADDRESS, says="pass for 192.0.2.25")

    async def test_spf_not_passing_for_the_address_fails(self) -> None:
        self.set("example.com", ("MX", (10, "mx.example.com")), ("TXT", "v=spf1 ip4:198.51.100.0/24 ~all"))
        await self.assertFinding("FAIL", "SPF", "example.com", "--address", ADDRESS,
                                 says="softfail for 192.0.2.25",
                                 publish=f'example.com. IN TXT "v=spf1 ip4:{ADDRESS} ip4:198.51.100.0/24 ~all"')

    async def test_spf_permerror_when_evaluated_fails(self) -> None:
        self.set("example.com", ("MX", (10, "mx.example.com")), ("TXT", "v=spf1 include:gone.example.com -all"))
        await self.assertFinding("FAIL", "SPF", "example.com", "--address", ADDRESS,
                                 says="permerror for 192.0.2.25 (include:gone.example.com gave none)",
                                 publish='example.com. IN TXT "v=spf1 mx -all"')

    async def test_helo_spf_missing_only_warns(self) -> None:
        self.set("mx.example.com", ("A", ADDRESS))
        await self.assertFinding("WARN", "SPF", "mx.example.com", says="no v=spf1 record",
                                 publish='mx.example.com. IN TXT "v=spf1 a -all"')


class DMARCTests(DNSCheckTestCase):
    async def test_dmarc_ok_prints_the_policy(self) -> None:
        await self.assertFinding("OK", "DMARC", "_dmarc.example.com",
                                 says="p=reject, reports to mailto:dmarc@example.com")

    async def test_dmarc_p_none_warns_and_suggests_quarantine(self) -> None:
        self.set("_dmarc.example.com", ("TXT", "v=DMARC1; sp=none; p=none; rua=mailto:d@example.com"))
        await self.assertFinding(
            "WARN", "DMARC", "_dmarc.example.com", says="policy none",
            publish='_dmarc.example.com. IN TXT "v=DMARC1; sp=none; p=quarantine; rua=mailto:d@example.com"')

    async def test_dmarc_missing_fails(self) -> None:
        self.set("_dmarc.example.com")
        await self.assertFinding(
            "FAIL", "DMARC", "_dmarc.example.com", says="no v=DMARC1 record",
            publish='_dmarc.example.com. IN TXT "v=DMARC1; p=none; rua=mailto:postmaster@example.com"')

    async def test_dmarc_unparsable_fails(self) -> None:
        self.set("_dmarc.example.com", ("TXT", "v=DMARC1; p=never"))
        await self.assertFinding("FAIL", "DMARC", "_dmarc.example.com", says="bad or missing p=")

    async def test_dmarc_two_records_fail(self) -> None:
        self.set("_dmarc.example.com", ("TXT", "v=DMARC1; p=reject"), ("TXT", "v=DMARC1; p=none"))
        await self.assertFinding("FAIL", "DMARC", "_dmarc.example.com", says="2 records")

    async def test_dmarc_of_a_subdomain_comes_from_the_organizational_domain(self) -> None:
        self.set("_dmarc.example.com", ("TXT", "v=DMARC1; p=none; sp=reject"))
        await self.assertFinding("OK", "DMARC", "_dmarc.lists.example.com", "--domain", "lists.example.com",
                                 says="from _dmarc.example.com, which covers lists.example.com): p=none, sp=reject, no rua "
                                      "(no reports); policy for lists.example.com: reject")


class MTASTSRecordTests(DNSCheckTestCase):
    async def test_mta_sts_record_ok_without_fetching(self) -> None:
        await self.assertFinding("OK", "MTA-STS", "_mta-sts.example.com", says="policy not fetched")

    async def test_mta_sts_missing_warns(self) -> None:
        self.set("_mta-sts.example.com")
        finding = await self.assertFinding("WARN", "MTA-STS", "_mta-sts.example.com", says="optional")
        self.assertRegex(finding.publish, r'^_mta-sts\.example\.com\. IN TXT "v=STSv1; id=\d{8}"$')

    async def test_mta_sts_bad_id_fails(self) -> None:
        self.set("_mta-sts.example.com", ("TXT", "v=STSv1; id=2026-12-04"))
        await self.assertFinding("FAIL", "MTA-STS", "_mta-sts.example.com", says="no valid id=")


class MTASTSPolicyTests(DNSCheckTestCase):
    """C{--fetch-policy}: the policy over HTTPS (twisted.web, a loopback server with its own trust root)."""

    async def setUp(self) -> None:
        await super().setUp()
        server_cert, trust = certificate("mta-sts.example.com")
        root, well_known = Resource(), Resource()
        root.putChild(b".well-known", well_known)
        self.policy = Data(POLICY, "text/plain")
        well_known.putChild(b"mta-sts.txt", self.policy)
        port = await SSL4ServerEndpoint(reactor, 0, server_cert.options(), interface="127.0.0.1").listen(Site(root))
        self.addCleanup(port.stopListening)
        self.make_fetch = lambda lookup: https_fetcher(reactor, lookup, trust_root=trust, timeout=10,
                                                       port=port.getHost().port)

    async def test_policy_covering_the_mx_hosts_is_ok(self) -> None:
        await self.assertFinding("OK", "MTA-STS", "_mta-sts.example.com", "--fetch-policy",
                                 says="policy mode enforce, mx mx.example.com, covers every MX host")

    async def test_enforced_policy_missing_an_mx_host_fails(self) -> None:
        self.set("example.com", ("MX", (10, "mx.example.com")), ("MX", (20, "mx2.example.net")))
        self.set("mx2.example.net", ("A", "192.0.2.26"))
        await self.assertFinding(
            "FAIL", "MTA-STS", "_mta-sts.example.com", "--fetch-policy", says="MX mx2.example.net not covered",
            publish="serve at https://mta-sts.example.com/.well-known/mta-sts.txt: "
                    "version: STSv1\\nmode: testing\\nmx: mx.example.com\\nmx: mx2.example.net\\nmax_age: 86400")

    async def test_testing_policy_missing_an_mx_host_warns(self) -> None:
        self.policy.data = POLICY.replace(b"enforce", b"testing").replace(b"mx.example.com", b"*.example.org")
        await self.assertFinding("WARN", "MTA-STS", "_mta-sts.example.com", "--fetch-policy",
                                 says="MX mx.example.com not covered")

    async def test_unfetchable_policy_fails(self) -> None:
        self.set("mta-sts.example.com")  # no address for the policy host
        await self.assertFinding("FAIL", "MTA-STS", "_mta-sts.example.com", "--fetch-policy",
                                 says="policy not usable")

    async def test_malformed_policy_fails(self) -> None:
        self.policy.data = b"version: STSv1\nmode: sometimes\n"
        await self.assertFinding("FAIL", "MTA-STS", "_mta-sts.example.com", "--fetch-policy", says="bad mode")


class TLSRPTTests(DNSCheckTestCase):
    async def test_tlsrpt_ok(self) -> None:
        await self.assertFinding("OK", "TLS-RPT", "_smtp._tls.example.com", says="reports to mailto:tls@example.com")

    async def test_tlsrpt_missing_warns(self) -> None:
        self.set("_smtp._tls.example.com")
        await self.assertFinding(
            "WARN", "TLS-RPT", "_smtp._tls.example.com", says="optional",
            publish='_smtp._tls.example.com. IN TXT "v=TLSRPTv1; rua=mailto:postmaster@example.com"')

    async def test_tlsrpt_without_rua_fails(self) -> None:
        self.set("_smtp._tls.example.com", ("TXT", "v=TLSRPTv1; rua=tls@example.com"))
        await self.assertFinding("FAIL", "TLS-RPT", "_smtp._tls.example.com", says="neither mailto: nor https:")


class HostTests(DNSCheckTestCase):
    async def test_host_ok(self) -> None:
        await self.assertFinding("OK", "HOST", "mx.example.com", "--address", ADDRESS, says="resolves to 192.0.2.25")

    async def test_host_without_address_fails(self) -> None:
        self.set("mx.example.com", ("TXT", "v=spf1 a -all"))
        await self.assertFinding("FAIL", "HOST", "mx.example.com", says="no A or AAAA record",
                                 publish="mx.example.com. IN A <this host's public address>")

    async def test_host_resolving_elsewhere_warns(self) -> None:
        await self.assertFinding("WARN", "HOST", "mx.example.com", "--address", "2001:db8::25",
                                 says="not 2001:db8::25", publish="mx.example.com. IN AAAA 2001:db8::25")

    async def test_ptr_ok(self) -> None:
        await self.assertFinding("OK", "PTR", REVERSE, "--address", ADDRESS, says="192.0.2.25 is mx.example.com")

    async def test_ptr_naming_another_host_warns(self) -> None:
        self.set(REVERSE, ("PTR", "host-25.provider.example"))
        await self.assertFinding("WARN", "PTR", REVERSE, "--address", ADDRESS, says="host-25.provider.example",
                                 publish=f"{REVERSE}. IN PTR mx.example.com. (set at your hosting provider)")


class DKIMTests(DNSCheckTestCase):
    """The DKIM line is L{dns_findings}' (tests/cli/test_dkim.py); here: it is part of the report."""

    extra = "dkim_signing_domains = example.com\n"

    async def test_dkim_key_on_disk_is_checked(self) -> None:
        config, _ = load_config(self.path)
        key = generate("example.com", config.dkim_selector, "ed25519")
        KeyStore(config.dkim_key_directory).save(key)
        finding = await self.assertFinding("WARN", "DKIM", key.dns_name, says="no DKIM record",
                                           publish=key.zone_line())
        self.set(key.dns_name, ("TXT", key.txt_value))
        await self.assertFinding("OK", "DKIM", key.dns_name, says="matches")
        self.set(key.dns_name, ("TXT", generate("example.com", "x", "ed25519").txt_value))
        await self.assertFinding("FAIL", "DKIM", key.dns_name, says="not the key on disk")
        self.assertEqual(finding.kind, "DKIM")


class CommandTests(DNSCheckTestCase):
    """The console command in a child process: its lines and its exit status."""

    async def run_command(self, *argv: str) -> tuple[int, str, str]:
        code = "import sys; from mailserver.cli.main import main; sys.exit(main(sys.argv[1:]))"
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        out, err, status = await getProcessOutputAndValue(
            sys.executable, ["-c", code, "-c", self.path, "check", "--dns", "--dns-server",
                             f"127.0.0.1:{self.dns.port}", *argv], env=dict(os.environ), path=root)
        return status, out.decode(), err.decode()

    async def test_exit_status_0_when_every_record_is_ok(self) -> None:
        os.makedirs(os.path.join(self.directory, "data"))
        with open(os.path.join(self.directory, "passwd"), "w") as handle:
            handle.write("")
        os.chmod(os.path.join(self.directory, "passwd"), 0o600)
        status, out, err = await self.run_command("--address", ADDRESS)
        self.assertEqual(status, 0, out + err)
        self.assertIn("OK   MX example.com: 10 mx.example.com (192.0.2.25)\n", out)
        self.assertIn("DNS: 8 OK, 0 WARN, 0 FAIL", err)

    async def test_exit_status_1_on_a_fail(self) -> None:
        self.set("_dmarc.example.com")
        status, out, err = await self.run_command()
        self.assertEqual(status, 1, out + err)
        self.assertIn('FAIL DMARC _dmarc.example.com: no v=DMARC1 record; publish: _dmarc.example.com. IN TXT '
                      '"v=DMARC1; p=none; rua=mailto:postmaster@example.com"\n', out)
        self.assertIn("1 FAIL", err)


class OptionTests(SynchronousTestCase):
    def test_regression_system_resolver_is_built(self) -> None:
        # createResolver() takes no reactor argument: without --dns-server every look-up failed.
        system = make_resolver(None, reactor)
        self.assertTrue(IResolver.providedBy(system))
        for resolver in system.resolvers:  # the client re-reads resolv.conf every minute: stop that
            parse_call = getattr(resolver, "_parseCall", None)
            if parse_call is not None and parse_call.active():
                parse_call.cancel()
        self.assertTrue(IResolver.providedBy(make_resolver(("127.0.0.1", 53), reactor)))

    def test_dns_server_address_forms(self) -> None:
        self.assertEqual(server_address("127.0.0.1:5353"), ("127.0.0.1", 5353))
        self.assertEqual(server_address("192.0.2.53"), ("192.0.2.53", 53))
        self.assertEqual(server_address("[::1]:5353"), ("::1", 5353))
        self.assertEqual(server_address("::1"), ("::1", 53))
        with self.assertRaises(Exception):
            server_address("127.0.0.1:port")

    def test_mail_domains_leave_out_localhost_and_myhostname(self) -> None:
        path = write_config(self.mktemp(), extra="virtual_mailbox_domains = example.org, Example.com.\n"
                                                 "dkim_signing_domains = $mydestination, example.net\n")
        config, _ = load_config(path)
        self.assertEqual(mail_domains(config), ["example.com", "example.org", "example.net"])
