"""
A user's Maildir++ folders on disk: create/delete/rename, subscriptions,
and the folder registry IMAP accounts are given (L{folder_registry}).  The
pure name rules live in L{mailserver.store.folder_names} and are re-exported
here.

IMAP names use ``/`` as hierarchy delimiter; on disk the folder ``a/b`` is
the Maildir ``<root>/.a.b`` and INBOX is the root itself, as Dovecot and
Courier store them.  Each name component is written in IMAP's modified
UTF-7 with ``.`` encoded as ``&AC4-``, so a name can never produce ``/``,
``..`` or an ambiguous ``.`` on disk.  Names are checked strictly first: no
empty components, no ``.``/``..`` components, no control characters, no
wildcards, bounded length and depth; anything else is refused with
L{FolderNameError} before a path is built, and every path is checked to lie
inside the root.

The functions and methods that touch the disk block: call them in a thread.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from typing import Iterable

from zope.interface import implementer

from mailserver.store.folder_names import (  # noqa: F401 (re-exported: the names are part of this module's API)
    DEFAULT_SPECIAL_USE,
    DELIMITER,
    INBOX,
    MAX_DEPTH,
    MAX_DISK_NAME,
    MAX_NAME_LENGTH,
    FolderError,
    FolderExistsError,
    FolderInUseError,
    FolderNameError,
    FolderNotFoundError,
    disk_name,
    is_inbox,
    mutf7_decode,
    mutf7_encode,
    name_from_disk,
    normalize_name,
    parent_names,
)
from mailserver.interfaces import IFolderRegistry, IFolderTree
from mailserver.store.index import Describe, FolderRegistry
from mailserver.store.maildir import ensure_maildir
from mailserver.store.quota import forget_usage_blocking
from mailserver.store.uidlist import fsync_directory, write_atomically

SUBSCRIPTIONS_FILE = "subscriptions"
#: Directories we hide a deleted folder under before removing it.
_TRASH_PREFIX = "..deleted."


# ---------------------------------------------------------------- disk


@implementer(IFolderTree)
class Folders:
    """
    The folders of the Maildir at C{root}.

    @param special_use: folder name -> SPECIAL-USE attribute; these are
        created (and subscribed) on first login by L{ensure_defaults}.
    """

    def __init__(self, root: str, special_use: dict[str, str] | None = None) -> None:
        self.root = os.path.abspath(root)
        self.special_use = dict(DEFAULT_SPECIAL_USE if special_use is None else special_use)
        self._lock = threading.Lock()

    # -- paths

    def path(self, name: str) -> str:
        """The Maildir directory of the (normalised) folder C{name}; checked to be inside root."""
        name = normalize_name(name)
        entry = disk_name(name)
        path = os.path.join(self.root, entry) if entry else self.root
        if entry:
            real_root = os.path.realpath(self.root)
            real = os.path.realpath(path)
            if os.path.dirname(real) != real_root or os.path.islink(path):
                raise FolderNameError("mailbox name resolves outside the Maildir")
        return path

    def exists(self, name: str) -> bool:
        return os.path.isdir(os.path.join(self.path(name), "cur"))

    # -- listing

    def names(self) -> list[str]:
        """Every existing folder (INBOX first, then in name order)."""
        found = []
        try:
            entries = list(os.scandir(self.root))
        except FileNotFoundError:
            return [INBOX]
        for entry in entries:
            name = name_from_disk(entry.name)
            if name is None or not entry.is_dir(follow_symlinks=False):
                continue
            if os.path.isdir(os.path.join(entry.path, "cur")):
                found.append(name)
        found.sort()
        return [INBOX] + [n for n in found if n != INBOX]

    def has_children(self, name: str, names: Iterable[str] | None = None) -> bool:
        prefix = normalize_name(name) + DELIMITER
        return any(n.startswith(prefix) for n in (self.names() if names is None else names))

    # -- changes

    def ensure_defaults(self) -> list[str]:
        """Create INBOX and missing special-use folders; subscribe those made now."""
        ensure_maildir(self.root)
        made = []
        for name in self.special_use:
            if ensure_maildir(self.path(name)):
                made.append(name)
        if made:
            self._change_subscriptions(add=made)
        return made

    def create(self, name: str) -> str:
        """Create folder C{name} (a trailing ``/`` is allowed and dropped)."""
        name = normalize_name(name, allow_trailing_delimiter=True)
        if is_inbox(name) or self.exists(name):
            raise FolderExistsError(f"mailbox {name} already exists")
        path = self.path(name)
        with self._lock:
            if not ensure_maildir(path):
                raise FolderExistsError(f"mailbox {name} already exists")
        return name

    def delete(self, name: str) -> str:
        """
        Remove folder C{name} and its messages.

        Its sub-folders stay (C{a} then shows as ``\\Noselect`` parent of
        C{a/b}, as RFC 3501 describes); INBOX cannot be deleted.  The
        cached quota usage is dropped (its messages are gone): the next
        read recounts.
        """
        name = normalize_name(name)
        if is_inbox(name):
            raise FolderError("INBOX cannot be deleted")
        if not self.exists(name):
            raise FolderNotFoundError(f"mailbox {name} does not exist")
        path = self.path(name)
        hidden = os.path.join(self.root, f"{_TRASH_PREFIX}{os.getpid()}.{time.time_ns()}")
        os.rename(path, hidden)
        fsync_directory(self.root)
        shutil.rmtree(hidden, ignore_errors=True)
        forget_usage_blocking(self.root)
        return name

    def rename(self, old: str, new: str) -> list[tuple[str, str]]:
        """
        Rename C{old} and every folder below it; return the (old, new) pairs.

        Renaming INBOX moves its messages into a new folder C{new} and
        leaves INBOX empty, as RFC 3501 requires.
        """
        old = normalize_name(old)
        new = normalize_name(new, allow_trailing_delimiter=True)
        if is_inbox(new):
            raise FolderExistsError("INBOX already exists")
        names = self.names()
        if new in names or any(n.startswith(new + DELIMITER) for n in names):
            raise FolderExistsError(f"mailbox {new} already exists")
        if is_inbox(old):
            self._rename_inbox(new)
            return [(INBOX, new)]
        if new == old or new.startswith(old + DELIMITER):
            raise FolderError("cannot rename a mailbox into itself")
        moves = [(n, new + n[len(old):]) for n in names if n == old or n.startswith(old + DELIMITER)]
        if not moves:
            raise FolderNotFoundError(f"mailbox {old} does not exist")
        targets = [(self.path(a), self.path(b)) for a, b in moves]
        with self._lock:
            for source, target in targets:
                if os.path.lexists(target):
                    raise FolderExistsError(f"mailbox {new} already exists")
            for source, target in targets:
                os.rename(source, target)
            fsync_directory(self.root)
        return moves

    def _rename_inbox(self, new: str) -> None:
        target = self.path(new)
        with self._lock:
            if not ensure_maildir(target):
                raise FolderExistsError(f"mailbox {new} already exists")
            keywords = os.path.join(self.root, "dovecot-keywords")
            if os.path.exists(keywords):
                shutil.copyfile(keywords, os.path.join(target, "dovecot-keywords"))
            for sub in ("new", "cur"):
                source_dir = os.path.join(self.root, sub)
                for entry in os.listdir(source_dir):
                    if entry.startswith("."):
                        continue
                    try:
                        os.rename(os.path.join(source_dir, entry), os.path.join(target, sub, entry))
                    except FileNotFoundError:
                        continue  # taken by a concurrent reader (POP3 moved it)
                fsync_directory(os.path.join(target, sub))
                fsync_directory(source_dir)

    # -- subscriptions

    def subscriptions(self) -> list[str]:
        """Subscribed names, in file order (names that no longer parse are dropped)."""
        try:
            with open(os.path.join(self.root, SUBSCRIPTIONS_FILE), encoding="utf-8", errors="replace") as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            return []
        result = []
        for line in lines:
            try:
                name = normalize_name(line)
            except FolderNameError:
                continue
            if name not in result:
                result.append(name)
        return result

    def subscribe(self, name: str) -> str:
        """Subscribe to existing folder C{name} (NO for a missing one, as Dovecot)."""
        name = normalize_name(name)
        if not self.exists(name):
            raise FolderNotFoundError(f"mailbox {name} does not exist")
        self._change_subscriptions(add=[name])
        return name

    def unsubscribe(self, name: str) -> str:
        name = normalize_name(name)
        if name not in self.subscriptions():
            raise FolderNotFoundError(f"not subscribed to {name}")
        self._change_subscriptions(remove=[name])
        return name

    def _change_subscriptions(self, add: Iterable[str] = (), remove: Iterable[str] = ()) -> None:
        with self._lock:
            current = self.subscriptions()
            updated = [n for n in current if n not in set(remove)]
            updated += [n for n in add if n not in updated]
            if updated != current:
                text = "".join(n + "\n" for n in updated)
                write_atomically(os.path.join(self.root, SUBSCRIPTIONS_FILE), text.encode("utf-8"))


def folder_registry(describe: Describe, describe_version: str) -> IFolderRegistry:
    """
    The registry of this process's folder indexes, which IMAP accounts are
    given (L{mailserver.store.index.FolderRegistry}): C{describe(crlf_bytes)}
    makes each message's cached summary, C{describe_version} names its format.
    """
    return FolderRegistry(describe, describe_version)
