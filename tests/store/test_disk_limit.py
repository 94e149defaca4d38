"""Tests for bench/disk_limit.py, the raw Maildir disk benchmark."""

from __future__ import annotations

import os
from types import ModuleType

from twisted.trial.unittest import SynchronousTestCase

from tests.bench_loader import load_bench


def load_disk_limit() -> ModuleType:
    """Import bench/disk_limit.py by path, as the SMTP benchmark does."""
    return load_bench("disk_limit")


class MeasureRawDiskTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = self.mktemp()
        os.makedirs(self.directory)
        self.disk_limit = load_disk_limit()

    def test_rate_and_scratch_removed(self) -> None:
        """A positive rate comes back and the scratch Maildir is gone."""
        writes: list[int] = []
        real_write = os.write

        def write(fd: int, data: bytes) -> int:
            writes.append(len(data))
            return real_write(fd, data)

        self.patch(os, "write", write)
        rate = self.disk_limit.measure_raw_disk(self.directory, 6, 1024, concurrency=2)
        self.assertGreater(rate, 0)
        self.assertEqual(writes, [1024] * 6)
        self.assertEqual(os.listdir(self.directory), [])

    def test_bounds(self) -> None:
        measure = self.disk_limit.measure_raw_disk
        self.assertRaises(ValueError, measure, self.directory, 0, 1024)
        self.assertRaises(ValueError, measure, self.directory, 10**9, 1024)
        self.assertRaises(ValueError, measure, self.directory, 5, -1)
        self.assertRaises(ValueError, measure, self.directory, 5, 10, concurrency=0)
        self.assertEqual(os.listdir(self.directory), [])

    def test_disk_error_raised(self) -> None:
        """An OSError in a writer thread reaches the caller; nothing is left."""
        def broken(fd: int) -> None:
            raise OSError(5, "Input/output error")

        self.patch(os, "fsync", broken)
        self.assertRaises(
            OSError, self.disk_limit.measure_raw_disk, self.directory, 2, 10, 2
        )
        self.assertEqual(os.listdir(self.directory), [])
