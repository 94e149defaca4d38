"""
The read side of one Maildir INBOX for a session that lists it once (POP3).

L{MaildirReader} provides L{mailserver.interfaces.IMailboxReader}: list the
messages of ``new/`` and ``cur/`` in delivery order, open one, mark it seen,
delete some.  Every method blocks (directory listings, renames, fsync): call
them from a thread.  Another program (an IMAP session, a second server) may
rename or remove a file at any time: a file is found again by its unique
name, and a file that is gone is simply gone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import IO, Iterable

from zope.interface import implementer

from mailserver.durable import fsync_directory
from mailserver.interfaces import IMailboxReader
from mailserver.store.maildir import ensure_maildir
from mailserver.store.names import parse_name, virtual_size
from mailserver.store.quota import add_usage_blocking, file_size
from mailserver.store.uidlist import delivery_order

_CHUNK = 65536
#: How many times a file renamed under us is looked up again.
_ATTEMPTS = 3

__all__ = ["MaildirReader", "StoredMessage", "seen_name"]


@dataclass
class StoredMessage:
    """One message of a listing."""

    unique: str  # the Maildir unique name: the same in new/ and cur/, whatever the flags
    path: str  # where it was when listed
    size: int  # bytes with CRLF line ends
    letters: str  # Maildir info letters (``"FS"``), "" in new/


@implementer(IMailboxReader)
class MaildirReader:
    """The INBOX (``new/`` and ``cur/``) of the Maildir at C{path}."""

    def __init__(self, path: str) -> None:
        self.path = path

    def prepare(self) -> bool:
        return ensure_maildir(self.path)

    def list(self) -> list[StoredMessage]:
        """
        C{new/} is listed before C{cur/}: a file that moves between the two
        during the scan is then seen at least once (files only move that
        way), and a file seen twice is kept once, at its C{cur/} path.
        """
        by_unique: dict[str, StoredMessage] = {}
        for sub in ("new", "cur"):
            with os.scandir(os.path.join(self.path, sub)) as entries:
                for entry in entries:
                    if entry.name.startswith(".") or not entry.is_file(follow_symlinks=False):
                        continue
                    name = parse_name(entry.name)
                    size = virtual_size(entry.name)
                    if size is None:
                        try:
                            size = _measure(entry.path)
                        except FileNotFoundError:
                            continue
                    info = name.info or ""
                    letters = info[2:] if info.startswith("2,") else ""
                    by_unique[name.unique] = StoredMessage(name.unique, entry.path, size, letters)
        return sorted(by_unique.values(), key=lambda message: delivery_order(message.unique))

    def find(self, unique: str) -> str | None:
        """The current path of the message named C{unique}, or L{None} if it is gone."""
        for sub in ("cur", "new"):
            directory = os.path.join(self.path, sub)
            try:
                names = os.listdir(directory)
            except FileNotFoundError:
                continue
            for name in names:
                if name.startswith(unique) and parse_name(name).unique == unique:
                    return os.path.join(directory, name)
        return None

    def open(self, path: str, unique: str) -> tuple[IO[bytes], str] | None:
        current: str | None = path
        for _ in range(_ATTEMPTS):
            if current is None:
                break
            try:
                return open(current, "rb"), current
            except FileNotFoundError:
                current = self.find(unique)
        return None

    def mark_seen(self, path: str, unique: str) -> str | None:
        for _ in range(_ATTEMPTS):
            target = seen_name(os.path.basename(path))
            if target is None:
                return path
            destination = os.path.join(self.path, "cur", target)
            if destination == path:
                return path
            try:
                os.rename(path, destination)
                return destination
            except FileNotFoundError:
                found = self.find(unique)
                if found is None:
                    return None
                path = found
        return path

    def delete(self, messages: Iterable[tuple[str, str]]) -> int:
        removed = freed = 0
        for path, unique in messages:
            current: str | None = path
            for _ in range(_ATTEMPTS):
                if current is None:
                    break
                try:
                    size = file_size(current)
                    os.unlink(current)
                    removed += 1
                    freed += size
                    break
                except FileNotFoundError:
                    current = self.find(unique)
        for sub in ("cur", "new"):
            fsync_directory(os.path.join(self.path, sub))
        if removed:
            add_usage_blocking(self.path, -freed, -removed)
        return removed


def seen_name(basename: str) -> str | None:
    """
    C{basename} with the Maildir S (seen) flag added, flags kept in ASCII
    order as the Maildir spec asks; L{None} for an info part that is not
    ``2,`` (left alone).
    """
    base, sep, info = basename.partition(":")
    if not sep:
        return f"{basename}:2,S"
    if not info.startswith("2,"):
        return None
    flags = info[2:]
    if "S" in flags:
        return basename
    return f"{base}:2,{''.join(sorted(set(flags) | {'S'}))}"


def _measure(path: str) -> int:
    """The size with CRLF line ends, for files whose name lacks ``,W=``."""
    size = 0
    last = b""
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            size += len(chunk) + chunk.count(b"\n") - chunk.count(b"\r\n")
            if last == b"\r" and chunk[:1] == b"\n":
                size -= 1  # a CRLF split across chunks: its LF is not bare
            last = chunk[-1:]
    return size
