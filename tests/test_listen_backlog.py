"""The listen backlog of every listener (issue 18: Twisted's 50 dropped bursts)."""

from __future__ import annotations

import os

from twisted.trial.unittest import TestCase

from mailserver.service import listen_backlog
from tests.harness import LISTENERS, RunningServer


class ListenBacklogTests(TestCase):
    def write(self, text: str) -> str:
        path = self.mktemp()
        with open(path, "w") as handle:
            handle.write(text)
        return path

    def test_somaxconn_capped(self) -> None:
        self.assertEqual(listen_backlog(0, self.write("4096\n")), 4096)
        self.assertEqual(listen_backlog(0, self.write("65535\n")), 4096)
        self.assertEqual(listen_backlog(0, self.write("128\n")), 128)

    def test_fallback_is_postfix_100(self) -> None:
        self.assertEqual(listen_backlog(0, os.path.join(self.mktemp(), "missing")), 100)
        self.assertEqual(listen_backlog(0, self.write("garbage")), 100)

    def test_configured_value_wins(self) -> None:
        self.assertEqual(listen_backlog(1000, self.write("128")), 1000)

    def test_regression_every_listener_gets_the_backlog(self) -> None:
        server = RunningServer(self, extra="listen_backlog = 777\n", listeners=LISTENERS)
        endpoints = [s.endpoint for s in server.service if hasattr(s, "endpoint")]
        self.assertEqual(len(endpoints), len(LISTENERS))
        for endpoint in endpoints:
            self.assertEqual(endpoint._backlog, 777)
