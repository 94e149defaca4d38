"""The administration command: check and status; the twistd plugin."""

from __future__ import annotations

import json
import os

from twisted.application.service import IServiceMaker
from twisted.plugin import getPlugins
from twisted.trial.unittest import TestCase

from mailserver import tap
from mailserver.cli.main import main
from tests.harness import capture, write_config


def run(*argv: str) -> tuple[int, str, str]:
    return capture(main, *argv)


class CheckTests(TestCase):
    def test_clean_config_exits_zero(self):
        path = write_config(self.mktemp(), extra="dkim_signing_domains =\n")  # no keys: see tests/cli/test_dkim.py
        passwd = os.path.join(os.path.dirname(path), "passwd")
        open(passwd, "w").close()
        os.chmod(passwd, 0o600)  # a world-readable one is a warning: see tests/cli/test_checks.py
        status, out, err = run("-c", path, "check")
        self.assertEqual((status, out), (0, ""))
        self.assertIn("0 error(s)", err)

    def test_malformed_value_points_at_file_and_line(self):
        path = write_config(self.mktemp(), extra="message_size_limit = lots\n")
        status, out, err = run("-c", path, "check")
        self.assertEqual(status, 1)
        line = len(open(path).read().splitlines())
        self.assertIn(f"{path}:{line}:", err)
        self.assertIn("message_size_limit", err)

    def test_unknown_parameter_is_a_warning_with_location(self):
        path = write_config(self.mktemp(), extra="smtpd_bannr = hi\n")
        open(os.path.join(os.path.dirname(path), "passwd"), "w").close()
        status, out, err = run("-c", path, "check")
        self.assertEqual(status, 0)
        self.assertRegex(out, rf"{path}:\d+: warning: .*smtpd_bannr")

    def test_files_named_by_the_config_are_checked(self):
        directory = os.path.abspath(self.mktemp())
        path = write_config(directory, extra=f"header_checks = regexp:{directory}/missing_checks\n")
        with open(os.path.join(directory, "passwd"), "w") as handle:
            handle.write("alice@example.com:{PLAIN}x::::::\nbroken line without fields\n")
        status, out, err = run("-c", path, "check")
        self.assertEqual(status, 1)
        self.assertIn(f"{directory}/passwd:2:", out)
        self.assertIn(f"{directory}/passwd:1: warning:", out)  # {PLAIN} is warned about
        self.assertIn(f"{directory}/missing_checks: error: file does not exist", out)


class StatusTests(TestCase):
    def test_not_running(self):
        path = write_config(self.mktemp())
        status, out, _ = run("-c", path, "status")
        self.assertEqual(status, 3)
        self.assertIn("not running", out)

    def test_running_lists_listeners(self):
        directory = os.path.abspath(self.mktemp())
        path = write_config(directory)
        os.makedirs(os.path.join(directory, "data"))
        with open(os.path.join(directory, "data", "status.json"), "w") as handle:
            json.dump({"pid": os.getpid(), "listeners": {"smtpd_listen": ["tcp:25"]}}, handle)
        status, out, _ = run("-c", path, "status")
        self.assertEqual(status, 0)
        self.assertIn(f"pid {os.getpid()}", out)
        self.assertIn("smtpd_listen: tcp:25", out)


class PluginTests(TestCase):
    def test_plugin_is_discoverable(self):
        import twisted.plugins

        names = [p.tapname for p in getPlugins(IServiceMaker, twisted.plugins)]
        self.assertIn("mailserver", names)

    def test_make_service_from_config(self):
        path = write_config(self.mktemp(), listeners=("smtpd_listen", "submission_listen"))
        options = tap.Options()
        options.parseOptions(["--config", path])
        service = tap.makeService(options)
        names = sorted(s.name for s in service if hasattr(s, "listening"))
        self.assertEqual(names, ["smtpd_listen tcp:0:interface=127.0.0.1", "submission_listen tcp:0:interface=127.0.0.1"])

    def test_bad_config_refuses_to_start(self):
        path = write_config(self.mktemp(), extra="smtpd_timeout = soon\n")
        options = tap.Options()
        options.parseOptions(["--config", path])
        with self.assertRaises(SystemExit) as raised:
            tap.makeService(options)
        self.assertIn(f"{path}:", str(raised.exception))


class ReloadTests(TestCase):
    def test_reload_sends_sighup_to_the_daemon(self):
        import signal

        received = []
        previous = signal.signal(signal.SIGHUP, lambda *a: received.append(a[0]))
        self.addCleanup(signal.signal, signal.SIGHUP, previous)
        directory = os.path.abspath(self.mktemp())
        path = write_config(directory)
        os.makedirs(os.path.join(directory, "data"))
        with open(os.path.join(directory, "data", "status.json"), "w") as handle:
            json.dump({"pid": os.getpid(), "listeners": {}}, handle)
        status, out, _ = run("-c", path, "reload")
        self.assertEqual(status, 0)
        self.assertEqual(received, [signal.SIGHUP])

    def test_reload_without_daemon_fails(self):
        status, _, err = run("-c", write_config(self.mktemp()), "reload")
        self.assertEqual(status, 1)
        self.assertIn("not running", err)
