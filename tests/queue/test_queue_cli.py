"""mailserver queue list|flush|delete and mailq."""

from __future__ import annotations

import argparse
import io
import os
import sys
from types import SimpleNamespace

from twisted.trial.unittest import SynchronousTestCase

from mailserver.cli import queue as queue_cli
from mailserver.queue.envelope import BOUNCED, DELIVERED
from mailserver.queue.spool import SpoolDirectory

MESSAGE = b"Subject: x\n\n" + b"y" * 1500 + b"\n"


class QueueCommandTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.data = os.path.abspath(self.mktemp())
        os.mkdir(self.data)
        self.config = SimpleNamespace(data_directory=self.data)
        self.spool = SpoolDirectory(os.path.join(self.data, "queue"))
        self.out = io.StringIO()
        self.err = io.StringIO()
        self.patch(sys, "stdout", self.out)
        self.patch(sys, "stderr", self.err)

    def queue_message(self, sender="alice@example.com", recipients=("bob@example.org",)) -> str:
        return self.spool.store(sender, list(recipients), MESSAGE, 1_700_000_000.0)

    def test_empty(self) -> None:
        self.assertEqual(queue_cli.run_list(None, self.config), 0)
        self.assertEqual(self.out.getvalue(), "Mail queue is empty\n")

    def test_listing_like_mailq(self) -> None:
        first = self.queue_message()
        second = self.queue_message("", ("carol@example.org", "dan@example.org", "erin@example.org"))
        envelope, _ = self.spool.activate(second)
        envelope.recipients[0].last_error = "host mx.example.org[192.0.2.1] said: 450 4.2.0 Greylisted"
        envelope.recipients[1].status = DELIVERED
        envelope.recipients[2].status = BOUNCED
        envelope.recipients[2].last_error = "550 5.1.1 unknown"
        self.spool.save(envelope)
        self.assertEqual(queue_cli.run_list(None, self.config), 0)
        text = self.out.getvalue()
        lines = text.splitlines()
        self.assertTrue(lines[0].startswith("-Queue ID-"))
        self.assertIn(f"{second}*", text)  # active
        self.assertIn("MAILER-DAEMON", text)  # the null sender
        self.assertIn("(host mx.example.org[192.0.2.1] said: 450 4.2.0 Greylisted)", text)
        self.assertIn("(bounced: 550 5.1.1 unknown)", text)
        self.assertNotIn("dan@example.org", text)  # delivered recipients are not listed
        self.assertIn(first, text)
        self.assertTrue(lines[-1].startswith("-- 3 Kbytes in 2 Requests."))

    def test_flush_leaves_trigger(self) -> None:
        self.assertEqual(queue_cli.run_flush(None, self.config), 0)
        self.assertTrue(self.spool.take_flush_request())

    def test_delete_one(self) -> None:
        keep, drop = self.queue_message(), self.queue_message()
        self.assertEqual(queue_cli.run_delete(SimpleNamespace(queue_ids=[drop.lower()]), self.config), 0)
        self.assertEqual([e.queue_id for e in self.spool.entries()], [keep])
        self.assertIn(f"{drop}: removed", self.out.getvalue())

    def test_delete_all(self) -> None:
        self.queue_message()
        self.queue_message()
        self.assertEqual(queue_cli.run_delete(SimpleNamespace(queue_ids=["ALL"]), self.config), 0)
        self.assertEqual(self.spool.entries(), [])
        self.assertIn("Deleted: 2 messages", self.out.getvalue())

    def test_delete_unknown_and_invalid(self) -> None:
        self.spool.ensure()
        self.assertEqual(queue_cli.run_delete(SimpleNamespace(queue_ids=["ABCDEF0123456"]), self.config), 1)
        self.assertEqual(queue_cli.run_delete(SimpleNamespace(queue_ids=["../../etc/passwd"]), self.config), 64)

    def test_delete_ids_from_stdin(self) -> None:
        queue_id = self.queue_message()
        self.patch(sys, "stdin", io.StringIO(f"{queue_id}\n"))
        self.assertEqual(queue_cli.run_delete(SimpleNamespace(queue_ids=["-"]), self.config), 0)
        self.assertEqual(self.spool.entries(), [])

    def test_register(self) -> None:
        parser = argparse.ArgumentParser()
        queue_cli.register(parser.add_subparsers())
        self.assertIs(parser.parse_args(["queue", "list"]).func, queue_cli.run_list)
        self.assertIs(parser.parse_args(["queue", "flush"]).func, queue_cli.run_flush)
        args = parser.parse_args(["queue", "delete", "ALL"])
        self.assertEqual((args.func, args.queue_ids), (queue_cli.run_delete, ["ALL"]))

    def test_mailq_main(self) -> None:
        main_cf = os.path.join(self.data, "main.cf")
        with open(main_cf, "w") as f:
            f.write(f"myhostname = mx.example.com\ndata_directory = {self.data}\n")
        queue_id = self.queue_message()
        self.assertEqual(queue_cli.mailq_main(["-c", main_cf]), 0)
        self.assertIn(queue_id, self.out.getvalue())
        self.assertEqual(queue_cli.mailq_main(["-c", os.path.join(self.data, "nope.cf")]), 78)
