"""C{mailserver postconf}: effective, non-default and default values, as Postfix prints them."""

from __future__ import annotations

import io
import os
from contextlib import redirect_stderr

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
