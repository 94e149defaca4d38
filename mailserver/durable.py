"""Blocking durability helpers shared by everything that writes mail to disk (run in threads)."""

from __future__ import annotations

import os

_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_DIRECTORY", 0)


def fsync_directory(path: str) -> None:
    """Make the entries of directory C{path} (creations, renames, unlinks) durable."""
    fd = os.open(path, _DIR_FLAGS)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_and_fsync(fd: int, data: bytes) -> None:
    """Write all of C{data} to C{fd} (C{os.write} may write less) and fsync it."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.fsync(fd)


def unlink_quietly(path: str) -> None:
    """Remove C{path} if it exists (cleaning up after a failed write)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
