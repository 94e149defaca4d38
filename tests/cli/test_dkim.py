"""C{mailserver dkim keygen} and C{mailserver dkim show}."""

from __future__ import annotations

import io
import os
import stat
from contextlib import redirect_stderr, redirect_stdout

from twisted.trial.unittest import SynchronousTestCase

from mailserver.cli.main import main
from mailserver.mailauth.dkim_keys import KeyStore


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
