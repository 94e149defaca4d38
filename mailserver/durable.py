"""Blocking durability helpers shared by everything that writes mail to disk (run in threads)."""

from __future__ import annotations

import os
import secrets
from typing import Any, Callable

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
    write_all(fd, data)
    os.fsync(fd)


def unlink_quietly(path: str) -> None:
    """Remove C{path} if it exists (cleaning up after a failed write)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)


def write_all(fd: int, data: bytes) -> None:
    """C{os.write} until every byte of C{data} is written."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def write_new_file(path: str, content: Any, mode: int, write: Callable[[int, Any], None] = write_all) -> None:
    """
    Create C{path} (never an existing file or a symlink), write C{content}
    with C{write(fd, content)} (bytes by default) and fsync it; on failure
    nothing is left behind.

    @raise FileExistsError: C{path} exists (the caller draws another name).
    """
    fd = os.open(path, _NEW_FILE_FLAGS, mode)
    try:
        write(fd, content)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(path)
        raise
    os.close(fd)


def replace_atomically(
    path: str,
    data: bytes,
    mode: int = 0o600,
    owner: tuple[int, int] | None = None,
    tmp_dir: str | None = None,
    sync: bool = True,
) -> None:
    """
    Replace C{path} with C{data} all at once: write a temporary file in the
    same directory, set C{mode} (and C{owner}, a C{(uid, gid)}), fsync it,
    rename it over C{path}, fsync the directory.  Readers see the old or the
    new content, never a half-written file; on failure nothing is left behind.
    A symlink at C{path} is replaced, never followed.

    @param tmp_dir: where to write the temporary file (same filesystem as
        C{path}), when a reader of C{path}'s directory must not see it: a
        Maildir's ``tmp/`` (Maildir++ ``maildirsize``).
    @param sync: False for a cache that is rebuilt when lost (IMAP summaries):
        still all-or-nothing for readers, but neither file nor directory is
        fsynced.
    """
    directory = os.path.dirname(os.path.abspath(path))
    # A fresh name, created exclusively and never through a symlink planted in the directory.
    tmp = os.path.join(tmp_dir or directory, f".{os.path.basename(path)}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, _NEW_FILE_FLAGS, mode)
    try:
        os.fchmod(fd, mode)  # the umask may have narrowed it
        if owner is not None:
            os.fchown(fd, *owner)
        (write_and_fsync if sync else write_all)(fd, data)
    except BaseException:
        os.close(fd)
        unlink_quietly(tmp)
        raise
    os.close(fd)
    try:
        os.replace(tmp, path)
    except BaseException:
        unlink_quietly(tmp)
        raise
    if sync:
        fsync_directory(directory)
