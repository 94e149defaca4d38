"""Tests for the pure parts of the benchmark scripts in bench/ (no server is started)."""

from __future__ import annotations

import email
import io
import os
import sys
from contextlib import redirect_stdout

from twisted.trial.unittest import SynchronousTestCase

from tests.bench_loader import REPO_ROOT, load_bench


class ScratchServerTests(SynchronousTestCase):
    def test_regression_scratch_server_runs_this_checkout(self) -> None:
        """
        The server child imports this checkout's mailserver and twistd
        plugin, not a copy installed in the environment (which the
        benchmarks silently measured, or failed with "Unknown command").
        """
        self.patch(os, "environ", {**os.environ, "PYTHONPATH": "/elsewhere"})
        env = load_bench("smtp_delivery").server_environment()
        paths = env["PYTHONPATH"].split(os.pathsep)
        self.assertEqual(paths, [REPO_ROOT, "/elsewhere"])
        self.assertTrue(os.path.exists(os.path.join(paths[0], "twisted", "plugins", "mailserver_plugin.py")))


class AbuseTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.abuse = load_bench("abuse")

    def test_list_names_every_scenario(self) -> None:
        """--list prints one line per scenario, with its parameters, and starts nothing."""
        out = io.StringIO()
        with redirect_stdout(out):
            self.abuse.main(["--list", "--quick"])
        names = [line.split()[0] for line in out.getvalue().splitlines()]
        self.assertEqual(names, list(self.abuse.SCENARIOS))
        self.assertIn("idle-smtp", names)
        self.assertIn("deep-mime-5000", names)

    def test_deep_mime_message_nests_to_the_exe(self) -> None:
        """The deep MIME message is well formed: C{depth} multiparts, then the .exe part."""
        data = self.abuse.deep_mime_message(5)
        self.assertTrue(data.endswith(b"\r\n.\r\n"))
        part = email.message_from_bytes(data[:-3])
        for depth in range(5):
            self.assertEqual(part.get_content_type(), "multipart/mixed", depth)
            (part,) = part.get_payload()
        self.assertEqual(part.get_filename(), "invoice.exe")

    def test_summaries(self) -> None:
        """Tallies count by outcome, most frequent first; cut-off summaries name first and last."""
        clients = load_bench("abuse_clients")
        self.assertEqual(clients.tally(["220", "421", "220"]), "2 220, 1 421")
        self.assertEqual(self.abuse.cut_summary([(None, b""), (None, b"")], 60),
                         "none of 2 cut within 60 s (bench limit)")
        self.assertEqual(self.abuse.cut_summary([(300.2, b"421 4.4.2 timeout"), (None, b""), (310.0, b"")], 600),
                         "2/3 cut, first after 300 s, last after 310 s (421 4.4.2 timeout)")
        self.assertEqual(self.abuse.cut_summary([(None, b""), (-1.0, b"banner: 421")], 60),
                         "none of 1 cut within 60 s (bench limit); 1 did not start (banner: 421)")
        self.assertEqual(clients.verdict(b"550 5.7.1 Attachment refused"), "refused 550 5.7.1")
        self.assertEqual(clients.verdict(b""), "connection closed")

    def test_bench_directory_left_off_sys_path(self) -> None:
        """Loading a benchmark does not leave bench/ on sys.path for the rest of the suite."""
        self.assertNotIn(os.path.join(REPO_ROOT, "bench"), sys.path)
