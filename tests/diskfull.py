"""Simulated ENOSPC: os.write/os.fsync fail for files whose path contains a marker."""

from __future__ import annotations

import errno
import os
from typing import Any


class DiskFull:
    """
    While C{full}, C{os.write} and C{os.fsync} raise ENOSPC on descriptors
    whose path (from /proc/self/fd) contains one of C{markers} (all files
    when empty).  Install with C{testcase.patch} via L{install}.
    """

    def __init__(self, *markers: str) -> None:
        self.markers = markers
        self.full = True
        self.failures = 0
        self._write = os.write
        self._fsync = os.fsync

    def install(self, testcase: Any) -> "DiskFull":
        testcase.patch(os, "write", self.write)
        testcase.patch(os, "fsync", self.fsync)
        return self

    def _hit(self, fd: int) -> bool:
        if not self.full:
            return False
        try:
            path = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            path = ""
        if self.markers and not any(m in path for m in self.markers):
            return False
        self.failures += 1
        return True

    def write(self, fd: int, data: Any) -> int:
        if self._hit(fd):
            raise OSError(errno.ENOSPC, "No space left on device")
        return self._write(fd, data)

    def fsync(self, fd: int) -> None:
        if self._hit(fd):
            raise OSError(errno.ENOSPC, "No space left on device")
        self._fsync(fd)
