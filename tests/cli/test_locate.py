"""Every entry point finds the configuration the same way (mailserver.locate)."""

from __future__ import annotations

import io
import json
import os
import signal
import sys

from twisted.trial.unittest import TestCase

from mailserver import locate
from mailserver.cli.main import main
from mailserver.cli.queue import mailq_main
from tests.auth.test_schemes import FAST
from tests.harness import capture, write_config




class ConfigPathTests(TestCase):
    def test_option_wins_over_environment(self) -> None:
        self.assertEqual(locate.config_path("a.cf", {"MAILSERVER_CONFIG": "b.cf"}), "a.cf")

    def test_environment_then_embedded(self) -> None:
        self.assertEqual(locate.config_path(None, {"MAILSERVER_CONFIG": "b.cf"}), "b.cf")
        self.assertIsNone(locate.config_path(None, {}))
        self.assertIsNone(locate.config_path(None, {"MAILSERVER_CONFIG": ""}))


class EmbeddedBaseTests(TestCase):
    def setUp(self) -> None:
        self.state = os.path.abspath(self.mktemp())
        self.environ = {"XDG_STATE_HOME": self.state}
        self.daemon_directory = os.path.abspath(self.mktemp())
        os.mkdir(self.daemon_directory)

    def test_no_daemon_resolves_against_the_current_directory(self) -> None:
        self.assertEqual(locate.embedded_base(self.environ, cwd="/somewhere"), "/somewhere")

    def test_regression_status_from_another_directory(self) -> None:
        """The embedded default finds the running daemon's ./mailserver-data from anywhere."""
        record = locate.EmbeddedRecord(self.daemon_directory, self.environ)
        record.startService()
        self.assertEqual(locate.embedded_base(self.environ, cwd="/elsewhere"), self.daemon_directory)
        config, _ = locate.find_config(None, self.environ)
        self.assertEqual(config.data_directory, os.path.join(self.daemon_directory, "mailserver-data"))
        record.stopService()
        self.assertFalse(os.path.exists(locate.embedded_record(self.environ)))
        self.assertEqual(locate.embedded_base(self.environ, cwd="/elsewhere"), "/elsewhere")

    def test_dead_daemon_record_is_ignored(self) -> None:
        path = locate.embedded_record(self.environ)
        os.makedirs(os.path.dirname(path))
        with open(path, "w") as handle:
            json.dump({"pid": 2**22 + 12345, "directory": self.daemon_directory}, handle)
        self.assertEqual(locate.embedded_base(self.environ, cwd="/elsewhere"), "/elsewhere")


class EntryPointTests(TestCase):
    def setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())
        self.path = write_config(self.directory)
        self.patch(os, "environ", {**os.environ, "MAILSERVER_CONFIG": self.path})

    def test_regression_mailq_honours_MAILSERVER_CONFIG(self) -> None:
        """mailq read the embedded default's queue while sendmail used $MAILSERVER_CONFIG."""
        os.makedirs(os.path.join(self.directory, "data", "queue"))
        seen = []
        from mailserver.cli import queue as queue_cli

        self.patch(queue_cli, "list_queue", lambda config, *a: seen.append(config.path) or 0)
        self.assertEqual(capture(mailq_main)[0], 0)
        self.assertEqual(seen, [self.path])

    def test_mailserver_command_honours_MAILSERVER_CONFIG(self) -> None:
        status, out, _ = capture(main, "status")
        self.assertEqual(status, 3)
        self.assertIn(os.path.join(self.directory, "data", "status.json"), out)

    def test_regression_user_add_signals_running_daemon(self) -> None:
        """A user just added was refused with 550 until the daemon's next poll of passwd_file."""
        from mailserver.auth import schemes

        self.patch(schemes, "DEFAULT_PARAMETERS", FAST)
        received: list[int] = []
        previous = signal.signal(signal.SIGHUP, lambda *a: received.append(a[0]))
        self.addCleanup(signal.signal, signal.SIGHUP, previous)
        os.makedirs(os.path.join(self.directory, "data"))
        with open(os.path.join(self.directory, "data", "status.json"), "w") as handle:
            json.dump({"pid": os.getpid(), "listeners": {}}, handle)
        self.patch(sys, "stdin", io.StringIO("a password\n"))
        status, _, err = capture(main, "user", "add", "carol@mx.example.com")
        self.assertEqual((status, err), (0, ""))
        self.assertEqual(received, [signal.SIGHUP])
