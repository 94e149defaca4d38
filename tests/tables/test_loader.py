"""WatchedFile: reload on change, keep the old value on a parse error, count the swaps."""

from __future__ import annotations

import os

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from mailserver.tables.loader import WatchedFile


def parse(path: str) -> list[str]:
    with open(path) as handle:
        lines = handle.read().split()
    if "broken" in lines:
        raise ValueError("broken line")
    return lines


class WatchedFileTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.path = os.path.abspath(self.mktemp())
        self.write("a")
        self.watched = WatchedFile(self.path, parse, Clock())

    def write(self, text: str) -> None:
        with open(self.path, "w") as handle:
            handle.write(text)

    def test_generation_counts_swaps(self) -> None:
        self.assertEqual((self.watched.value, self.watched.generation), (["a"], 0))
        self.assertFalse(self.successResultOf(self.watched.reload()))  # unchanged: no swap
        self.assertEqual(self.watched.generation, 0)
        self.write("a b")
        self.assertTrue(self.successResultOf(self.watched.reload(force=True)))
        self.assertEqual((self.watched.value, self.watched.generation), (["a", "b"], 1))

    def test_parse_error_keeps_value_and_generation(self) -> None:
        self.write("broken")
        self.assertFalse(self.successResultOf(self.watched.reload(force=True)))
        self.assertEqual((self.watched.value, self.watched.generation), (["a"], 0))
        self.flushLoggedErrors()
