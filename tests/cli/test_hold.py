"""C{mailserver hold list|release|delete}."""

from __future__ import annotations

import argparse
import io
import os
from contextlib import redirect_stderr, redirect_stdout
from types import SimpleNamespace

from twisted.trial.unittest import SynchronousTestCase

from mailserver.cli import hold as hold_cli
from mailserver.store.hold import HoldArea

ENVELOPE = {
    "sender": "alice@example.org",
    "recipients": ["bob@example.net"],
    "client_ip": "127.0.0.1",
    "time": 1700000000.0,
    "reason": "header_checks /etc/mailserver/header_checks:3: HOLD bulk mailer",
}


class HoldCommandTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.config = SimpleNamespace(data_directory=os.path.abspath(self.mktemp()))
        self.area = HoldArea(os.path.join(self.config.data_directory, "hold"))
        parser = argparse.ArgumentParser(prog="mailserver")
        hold_cli.register(parser.add_subparsers(dest="command", required=True))
        self.parser = parser

    def run_command(self, *argv: str) -> tuple[int, str, str]:
        args = self.parser.parse_args(list(argv))
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            status = args.func(args, self.config)
        return status, out.getvalue(), err.getvalue()

    def test_hold_directory(self) -> None:
        self.assertEqual(hold_cli.hold_directory(self.config), os.path.join(self.config.data_directory, "hold"))

    def test_list_empty(self) -> None:
        self.assertEqual(self.run_command("hold", "list"), (0, "", "Hold area is empty\n"))

    def test_list_shows_id_sender_recipients_and_reason(self) -> None:
        message_id = self.area.hold(ENVELOPE, b"Subject: x\n\nbody\n")
        status, out, err = self.run_command("hold", "list")
        self.assertEqual(status, 0)
        self.assertIn(message_id, out)
        self.assertIn("alice@example.org", out)
        self.assertIn("bob@example.net", out)
        self.assertIn("client [127.0.0.1]; reason: header_checks /etc/mailserver/header_checks:3: HOLD bulk mailer", out)
        self.assertIn("1 held message", err)

    def test_release_then_the_daemon_finds_it(self) -> None:
        message_id = self.area.hold(ENVELOPE, b"Subject: x\n\nbody\n")
        status, out, err = self.run_command("hold", "release", message_id.lower())
        self.assertEqual((status, out, err), (0, f"{message_id}: released\n", ""))
        self.assertEqual(self.area.list(), [])
        self.assertEqual([entry[0] for entry in self.area.take_released()], [message_id])

    def test_delete(self) -> None:
        first = self.area.hold(ENVELOPE, b"one")
        second = self.area.hold(ENVELOPE, b"two")
        status, out, err = self.run_command("hold", "delete", first, second)
        self.assertEqual((status, err), (0, ""))
        self.assertEqual(self.area.list(), [])

    def test_unknown_and_hostile_ids_fail_cleanly(self) -> None:
        message_id = self.area.hold(ENVELOPE, b"one")
        status, out, err = self.run_command("hold", "delete", "NOSUCHID", "../../etc", message_id)
        self.assertEqual(status, 1)
        self.assertIn("NOSUCHID: no such held message", err)
        self.assertIn("../../etc: no such held message", err)
        self.assertEqual(out, f"{message_id}: deleted\n")

    def test_subcommand_required(self) -> None:
        with redirect_stderr(io.StringIO()):
            self.assertRaises(SystemExit, self.parser.parse_args, ["hold"])
