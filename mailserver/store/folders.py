"""
A user's Maildir++ folders: names, safety, create/delete/rename, subscriptions.

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

import base64
import os
import shutil
import threading
import time
from typing import Iterable

from mailserver.store.maildir import ensure_maildir
from mailserver.store.uidlist import fsync_directory, write_atomically

DELIMITER = "/"
INBOX = "INBOX"
SUBSCRIPTIONS_FILE = "subscriptions"
#: Longest mailbox name, in characters, and deepest hierarchy we accept.
MAX_NAME_LENGTH = 255
MAX_DEPTH = 16
#: Longest directory name on disk (NAME_MAX, with room to spare).
MAX_DISK_NAME = 250
#: Directories we hide a deleted folder under before removing it.
_TRASH_PREFIX = "..deleted."


#: The SPECIAL-USE folders made on first login: name -> attribute.
DEFAULT_SPECIAL_USE: dict[str, str] = {
    "Sent": "\\Sent",
    "Drafts": "\\Drafts",
    "Trash": "\\Trash",
    "Junk": "\\Junk",
}


class FolderError(Exception):
    """A folder operation was refused; C{code} is an IMAP response code or None."""

    code: str | None = None


class FolderNameError(FolderError):
    """The name is not acceptable as a mailbox name."""

    code = "CANNOT"


class FolderExistsError(FolderError):
    code = "ALREADYEXISTS"


class FolderNotFoundError(FolderError):
    code = "NONEXISTENT"


class FolderInUseError(FolderError):
    code = "CANNOT"


# ---------------------------------------------------------------- names (pure)


def mutf7_encode(text: str) -> str:
    """IMAP modified UTF-7 (RFC 3501 5.1.3)."""
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            raw = "".join(pending).encode("utf-16-be")
            out.append("&" + base64.b64encode(raw).decode("ascii").rstrip("=").replace("/", ",") + "-")
            pending.clear()

    for ch in text:
        if 0x20 <= ord(ch) <= 0x7E:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            pending.append(ch)
    flush()
    return "".join(out)


def mutf7_decode(text: str, strict: bool = False) -> str:
    """
    Decode modified UTF-7; raises FolderNameError when malformed.

    With C{strict} (names from clients), only the canonical encoding is
    accepted (RFC 3501 5.1.3): printable ASCII spelled as itself, one
    ``&...-`` run per run of other characters, no stray base64 bits, so
    ``&AGEAYgBj-`` is not another spelling of ``abc``, nor ``a&AC8-b`` of
    ``a/b``.
    """
    decoded = _mutf7_decode(text)
    if strict and mutf7_encode(decoded) != text:
        raise FolderNameError("mailbox name is not canonical modified UTF-7")
    return decoded


def _mutf7_decode(text: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch != "&":
            if not 0x20 <= ord(ch) <= 0x7E:
                raise FolderNameError("mailbox name is not valid modified UTF-7")
            out.append(ch)
            i += 1
            continue
        end = text.find("-", i + 1)
        if end < 0:
            raise FolderNameError("mailbox name has an unterminated &-sequence")
        chunk = text[i + 1:end]
        if not chunk:
            out.append("&")
        else:
            b64 = chunk.replace(",", "/")
            b64 += "=" * (-len(b64) % 4)
            try:
                raw = base64.b64decode(b64, validate=True)
                out.append(raw.decode("utf-16-be"))
            except (ValueError, UnicodeDecodeError) as e:
                raise FolderNameError("mailbox name is not valid modified UTF-7") from e
        i = end + 1
    return "".join(out)


def _is_control(ch: str) -> bool:
    code = ord(ch)
    return code < 0x20 or 0x7F <= code < 0xA0 or 0xD800 <= code < 0xE000


def normalize_name(name: str, allow_trailing_delimiter: bool = False) -> str:
    """
    Check a (decoded) mailbox name and return its canonical form.

    A first component spelled any case of ``INBOX`` becomes ``INBOX``.

    @raise FolderNameError: with a reason a user can act on.
    """
    if allow_trailing_delimiter and name.endswith(DELIMITER) and name != DELIMITER:
        name = name[: -len(DELIMITER)]
    if not name:
        raise FolderNameError("empty mailbox name")
    if len(name) > MAX_NAME_LENGTH:
        raise FolderNameError(f"mailbox name longer than {MAX_NAME_LENGTH} characters")
    if any(_is_control(ch) for ch in name):
        raise FolderNameError("control characters are not allowed in mailbox names")
    if "*" in name or "%" in name:
        raise FolderNameError("wildcards * and % are not allowed in mailbox names")
    if name.startswith(DELIMITER):
        raise FolderNameError("mailbox names must not start with /")
    parts = name.split(DELIMITER)
    if len(parts) > MAX_DEPTH:
        raise FolderNameError(f"mailbox hierarchy deeper than {MAX_DEPTH} levels")
    for part in parts:
        if not part:
            raise FolderNameError("empty hierarchy level in mailbox name")
        if part in (".", ".."):
            raise FolderNameError("mailbox name components . and .. are not allowed")
        if part != part.strip():
            raise FolderNameError("mailbox name components must not start or end with spaces")
    if parts[0].upper() == INBOX:
        parts[0] = INBOX
    return DELIMITER.join(parts)


def is_inbox(name: str) -> bool:
    return name == INBOX


def disk_name(name: str) -> str:
    """The directory name (relative to the root) of a normalised name; "" for INBOX."""
    if is_inbox(name):
        return ""
    encoded = "." + ".".join(mutf7_encode(part).replace(".", "&AC4-") for part in name.split(DELIMITER))
    if len(encoded.encode("utf-8")) > MAX_DISK_NAME:
        raise FolderNameError("mailbox name too long")
    return encoded


def name_from_disk(entry: str) -> str | None:
    """The mailbox name of a root directory entry, or None if it is not a folder."""
    if len(entry) < 2 or not entry.startswith(".") or entry.startswith(".."):
        return None
    try:
        parts = [mutf7_decode(part) for part in entry[1:].split(".")]
        return normalize_name(DELIMITER.join(parts))
    except FolderNameError:
        return None


def parent_names(name: str) -> list[str]:
    """``a/b/c`` -> ``["a", "a/b"]``."""
    parts = name.split(DELIMITER)
    return [DELIMITER.join(parts[:i]) for i in range(1, len(parts))]


# ---------------------------------------------------------------- disk


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
        C{a/b}, as RFC 3501 describes); INBOX cannot be deleted.
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
