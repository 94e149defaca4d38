"""C{mailserver postconf}: effective, non-default and default values, as Postfix prints them."""

from __future__ import annotations

import io
import os
from contextlib import redirect_stderr, redirect_stdout

from twisted.trial.unittest import TestCase

from mailserver.cli.main import main
from tests.cli.test_main import run
from mailserver.config.parameters import PARAMETERS
from tests.harness import write_config




class PostconfTests(TestCase):
    def setUp(self) -> None:
        self.path = write_config(self.mktemp(), extra="myorigin = $mydomain\n")

    def test_effective_values_unexpanded_one_per_parameter(self) -> None:
        status, out, err = run("-c", self.path, "postconf")
        self.assertEqual((status, err), (0, ""))
        lines = out.splitlines()
        self.assertEqual(len(lines), len(PARAMETERS))
        self.assertEqual(lines, sorted(lines))
        self.assertIn("myorigin = $mydomain", lines)
        self.assertIn("myhostname = mx.example.com", lines)
        self.assertIn("smtpd_banner = $myhostname ESMTP $mail_name", lines)

    def test_named_parameters_in_the_order_given(self) -> None:
        status, out, _ = run("-c", self.path, "postconf", "myorigin", "mail_name")
        self.assertEqual((status, out), (0, "myorigin = $mydomain\nmail_name = mailserver\n"))

    def test_n_only_those_set_in_the_file(self) -> None:
        status, out, _ = run("-c", self.path, "postconf", "-n")
        self.assertEqual(status, 0)
        self.assertIn("myorigin = $mydomain\n", out)
        self.assertNotIn("mail_name", out)
        self.assertEqual(run("-c", self.path, "postconf", "-n", "mail_name")[1], "")

    def test_d_defaults(self) -> None:
        status, out, _ = run("-c", self.path, "postconf", "-d", "myorigin", "data_directory", "passwd_file")
        directory = os.path.dirname(self.path)
        self.assertEqual(status, 0)
        self.assertEqual(
            out,
            "myorigin = $myhostname\ndata_directory = /var/lib/mailserver\n"
            "passwd_file = $config_directory/passwd\n",
        )
        self.assertIn(f"config_directory = {directory}", run("-c", self.path, "postconf", "-d")[1])

    def test_empty_value_has_no_trailing_space(self) -> None:
        self.assertEqual(run("-c", self.path, "postconf", "relayhost")[1], "relayhost =\n")

    def test_unknown_parameter_warns_and_exits_1(self) -> None:
        status, out, err = run("-c", self.path, "postconf", "nosuch", "mail_name")
        self.assertEqual(status, 1)
        self.assertEqual(err, "postconf: warning: nosuch: unknown parameter\n")
        self.assertEqual(out, "mail_name = mailserver\n")

    def test_n_and_d_exclude_each_other(self) -> None:
        with redirect_stderr(io.StringIO()):
            self.assertRaises(SystemExit, main, ["-c", self.path, "postconf", "-n", "-d"])


class ValuesOnlyAndExpansionTests(TestCase):
    """C{-h} (values only) and C{-x} (C{$name} expanded), as Postfix's postconf."""

    def setUp(self) -> None:
        self.path = write_config(self.mktemp(), extra="myorigin = $mydomain\nmy_domains = $mydomain, example.org\n"
                                                      "virtual_mailbox_domains = ${my_domains}\n")

    def test_h_prints_values_only(self) -> None:
        status, out, err = run("-c", self.path, "postconf", "-h", "myorigin", "relayhost", "mail_name")
        self.assertEqual((status, out, err), (0, "$mydomain\n\nmailserver\n", ""))

    def test_x_expands_references_as_the_daemon_does(self) -> None:
        status, out, _ = run("-c", self.path, "postconf", "-x", "myorigin", "smtpd_banner", "virtual_mailbox_domains")
        self.assertEqual(status, 0)
        self.assertEqual(out, "myorigin = example.com\nsmtpd_banner = mx.example.com ESMTP mailserver\n"
                              "virtual_mailbox_domains = example.com, example.org\n")

    def test_hx_together_and_with_n(self) -> None:
        self.assertEqual(run("-c", self.path, "postconf", "-hx", "myorigin")[1], "example.com\n")
        status, out, _ = run("-c", self.path, "postconf", "-n", "-x")
        self.assertEqual(status, 0)
        self.assertIn("myorigin = example.com\n", out)
        self.assertNotIn("mail_name", out)

    def test_x_with_d_expands_the_defaults(self) -> None:
        status, out, _ = run("-c", self.path, "postconf", "-d", "-hx", "passwd_file", "myorigin", "myhostname")
        passwd_file, myorigin, myhostname = out.splitlines()
        self.assertEqual(status, 0)
        self.assertEqual(passwd_file, os.path.join(os.path.dirname(self.path), "passwd"))
        self.assertEqual(myorigin, myhostname)  # the host's own name, not the file's mx.example.com
        self.assertNotIn("$", myorigin)

    def test_x_every_parameter_matches_the_typed_config(self) -> None:
        status, out, _ = run("-c", self.path, "postconf", "-x")
        self.assertEqual(status, 0)
        self.assertNotIn("$", "".join(line for line in out.splitlines() if not line.startswith(
            ("smtpd_banner", "config_directory"))))

    def test_regression_h_is_postfix_values_only_not_help(self) -> None:
        # argparse's -h would print the usage and exit 0; Postfix users expect the value.
        self.assertEqual(run("-c", self.path, "postconf", "-h", "mail_name"), (0, "mailserver\n", ""))
        out = io.StringIO()
        with redirect_stdout(out), self.assertRaises(SystemExit):
            main(["-c", self.path, "postconf", "--help"])
        self.assertIn("-x", out.getvalue())
