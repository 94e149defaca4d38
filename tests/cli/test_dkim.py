"""C{mailserver dkim keygen} and C{mailserver dkim show}."""

from __future__ import annotations

import io
import os
import stat
from contextlib import redirect_stderr, redirect_stdout

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.trial.unittest import SynchronousTestCase, TestCase

from mailserver.cli.dkim_check import dns_findings
from mailserver.cli.main import main
from mailserver.mailauth.dkim_keys import KeyStore, generate
from mailserver.mailauth.dns import DNSLookup
from tests.dns import DNSTestServer


class DKIMCommandTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.config = os.path.join(self.directory, "main.cf")
        with open(self.config, "w") as handle:
            handle.write(f"myhostname = mx.example.com\nmydestination = example.com\n"
                         f"data_directory = {self.directory}/data\npasswd_file = {self.directory}/passwd\n")

    def run_command(self, *argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            status = main(["-c", self.config, *argv])
        return status, out.getvalue(), err.getvalue()

    def test_keygen_writes_0600_keys_and_prints_records(self) -> None:
        status, out, err = self.run_command("dkim", "keygen", "Example.com")
        self.assertEqual(status, 0, err)
        directory = os.path.join(self.directory, "data", "dkim", "example.com")
        self.assertEqual(sorted(os.listdir(directory)), ["mail.ed25519.key", "mail.rsa.key"])
        for name in os.listdir(directory):
            self.assertEqual(stat.S_IMODE(os.stat(os.path.join(directory, name)).st_mode), 0o600)
        self.assertIn('mail._domainkey.example.com. IN TXT ( "v=DKIM1; k=rsa; p=MIIBIjAN', out)
        self.assertIn('mail-ed25519._domainkey.example.com. IN TXT "v=DKIM1; k=ed25519; p=', out)
        keys = KeyStore(os.path.join(self.directory, "data", "dkim")).load("example.com", "mail")
        for key in keys:
            self.assertIn(key.txt_value, out)
        # Again: refused without --replace, keys unchanged.
        status, _, err = self.run_command("dkim", "keygen", "example.com")
        self.assertEqual(status, 1)
        self.assertIn("--replace", err)
        status, _, _ = self.run_command("dkim", "keygen", "example.com", "--replace", "--algorithm", "ed25519")
        self.assertEqual(status, 0)

    def test_keygen_with_selector_and_unconfigured_domain(self) -> None:
        status, out, err = self.run_command("dkim", "keygen", "other.org", "s2026", "--algorithm", "ed25519")
        self.assertEqual(status, 0)
        self.assertIn("s2026-ed25519._domainkey.other.org.", out)
        self.assertIn("not in dkim_signing_domains", err)

    def test_regression_keygen_refuses_path_names(self) -> None:
        status, _, err = self.run_command("dkim", "keygen", "../../etc", "x")
        self.assertEqual(status, 1)
        self.assertIn("bad domain", err)
        self.assertFalse(os.path.exists(os.path.join(self.directory, "data")))

    def test_show(self) -> None:
        self.assertEqual(self.run_command("dkim", "show")[0], 1)
        self.run_command("dkim", "keygen", "example.com", "--algorithm", "ed25519")
        status, out, _ = self.run_command("dkim", "show")
        self.assertEqual(status, 0)
        self.assertIn("; example.com selector mail ed25519: signing", out)
        self.assertIn("mail-ed25519._domainkey.example.com. IN TXT", out)
        self.assertEqual(self.run_command("dkim", "show", "example.org")[0], 1)


class CheckKeysTests(SynchronousTestCase):
    """C{mailserver check}: a key for each dkim_signing_domains domain, readable, 0600."""

    def setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.config = os.path.join(self.directory, "main.cf")
        with open(self.config, "w") as handle:
            handle.write(f"myhostname = mx.example.com\nmydestination = example.com, localhost\n"
                         f"data_directory = {self.directory}/data\npasswd_file = {self.directory}/passwd\n"
                         f"dkim_signing_domains = example.com, localhost\n")
        open(os.path.join(self.directory, "passwd"), "w").close()
        self.store = KeyStore(os.path.join(self.directory, "data", "dkim"))

    def check(self) -> tuple[int, list[str]]:
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            status = main(["-c", self.config, "check"])
        return status, [line for line in out.getvalue().splitlines() if "DKIM" in line]

    def test_missing_key_is_a_warning_with_the_command(self) -> None:
        status, lines = self.check()
        self.assertEqual(status, 0)
        self.assertEqual(len(lines), 1, lines)  # localhost is not reported
        self.assertIn("warning: no DKIM key for example.com (selector mail)", lines[0])
        self.assertIn("make one with: mailserver dkim keygen example.com", lines[0])

    def test_good_keys_are_clean(self) -> None:
        self.store.save(generate("example.com", "mail", "ed25519"))
        self.assertEqual(self.check(), (0, []))

    def test_loose_mode_and_garbage_are_errors(self) -> None:
        path = self.store.save(generate("example.com", "mail", "ed25519"))
        os.chmod(path, 0o644)
        status, lines = self.check()
        self.assertEqual(status, 1)
        self.assertIn(f"{path}: error: DKIM key of example.com is readable by others: chmod 600 {path}", lines)
        os.chmod(path, 0o600)
        with open(path, "wb") as handle:
            handle.write(b"not a key\n")
        status, lines = self.check()
        self.assertEqual(status, 1)
        self.assertTrue(any("error: DKIM key of example.com:" in line and "not a ed25519 private key" in line
                            for line in lines), lines)


class PublishedKeyTests(TestCase):
    """C{mailserver check --dns}: published key = our key (against a loopback DNS server)."""

    @inlineCallbacks
    def test_published_matches_missing_and_differs(self):
        ours, other, unpublished = (generate("example.com", "mail", "ed25519"), generate("example.com", "mail", "rsa"),
                                    generate("example.org", "mail", "ed25519"))
        wrong = generate("example.com", "x", "rsa")
        dns = DNSTestServer({
            "example.com": {
                ours.dns_name: [("TXT", ours.txt_value)],
                other.dns_name: [("TXT", wrong.txt_value)],
            },
            "example.org": {},
            "example.net": {},
        })
        yield dns.start(self)
        late = generate("example.net", "mail", "ed25519")
        dns.silent.add(late.dns_name)  # never answers: a time-out
        lookup = DNSLookup(dns.resolver, timeout=(0.2,))
        findings = yield Deferred.fromCoroutine(dns_findings([ours, other, unpublished, late], lookup))
        self.assertEqual([(f.name, f.status) for f in findings],
                         [(ours.dns_name, "OK"), (other.dns_name, "FAIL"), (unpublished.dns_name, "WARN"),
                          (late.dns_name, "FAIL")])
        self.assertIn("is not the key on disk", findings[1].message)
        self.assertEqual(findings[1].publish, other.zone_line())
        self.assertIn("no DKIM record", findings[2].message)
        self.assertEqual(findings[2].publish, unpublished.zone_line())
        self.assertIn("DNS look-up timed out", findings[3].message)
