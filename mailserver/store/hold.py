"""
The hold area: messages a content check HOLD kept back, durably, until an
administrator releases or deletes them (C{mailserver hold ...}).

Layout under the hold directory (mode 0700)::

    <id>/message          the message bytes
    <id>/envelope.json    {"version": 1, "sender": ..., "recipients": [...], ...}
    released/<id>/        released: the daemon delivers these (no content checks)
    tmp/                  being written, or being deleted

Each held message is one directory, written in C{tmp/} (files fsynced) and
renamed into place, so holding, releasing and deleting are each one atomic
rename followed by an fsync of the directories.  Every method blocks: the
daemon calls them in a thread.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator
from mailserver.durable import fsync_directory as _fsync_directory
from mailserver.durable import write_new_file
from mailserver.spooled import SpooledMessage, write_message

ENVELOPE_VERSION = 1
MESSAGE_FILE = "message"
ENVELOPE_FILE = "envelope.json"
RELEASED = "released"
TMP = "tmp"
_ID = re.compile(r"[0-9A-Z]{1,64}\Z")
_FIELDS: dict[str, tuple[type, ...]] = {
    "sender": (str,),
    "recipients": (list,),
    "client_ip": (str,),
    "time": (int, float),
    "reason": (str,),
    "queue_id": (str,),
    "helo": (str,),
    "sasl_user": (str, type(None)),
    # The origin is one we sign for (SASL user, mynetworks, sendmail): released mail is DKIM-signed.
    "trusted": (bool,),
}
_REQUIRED = ("sender", "recipients")


class NoSuchMessage(KeyError):
    """No held (or released) message has this id."""

    def __str__(self) -> str:
        return f"no such held message: {self.args[0]}"


@dataclass(frozen=True)
class HeldMessage:
    """One entry of L{HoldArea.list}."""

    id: str
    envelope: dict[str, Any]
    size: int
    problem: str | None = None  # set when the entry cannot be read


def check_envelope(envelope: dict[str, Any]) -> dict[str, Any]:
    """
    The envelope as stored, or L{ValueError} saying what is wrong: known
    fields only, C{sender} (C{""} for the null sender) and a non-empty list
    of C{recipients} as strings required.
    """
    if not isinstance(envelope, dict):
        raise ValueError("the envelope must be a dict")
    unknown = sorted(set(envelope) - set(_FIELDS) - {"version"})
    if unknown:
        raise ValueError(f"unknown envelope field(s): {', '.join(unknown)}")
    for name in _REQUIRED:
        if name not in envelope:
            raise ValueError(f"the envelope needs {name!r}")
    for name, types in _FIELDS.items():
        if name in envelope and (
            not isinstance(envelope[name], types) or (isinstance(envelope[name], bool) and bool not in types)
        ):
            raise ValueError(f"envelope field {name!r} has the wrong type")
    recipients = envelope["recipients"]
    if not recipients or not all(isinstance(r, str) and r for r in recipients):
        raise ValueError("'recipients' must be a non-empty list of addresses as strings")
    stored = {k: v for k, v in envelope.items() if k != "version"}
    stored["version"] = ENVELOPE_VERSION
    return stored


def _read_envelope(data: bytes) -> dict[str, Any]:
    envelope = json.loads(data.decode("utf-8"))
    if not isinstance(envelope, dict) or envelope.get("version") != ENVELOPE_VERSION:
        version = envelope.get("version") if isinstance(envelope, dict) else None
        raise ValueError(f"unsupported hold envelope version {version!r}")
    return check_envelope(envelope)



def _write_durably(path: str, data: bytes | SpooledMessage) -> None:
    """A new file, fsynced; on failure nothing is left (the seam a full-disk test replaces)."""
    write_new_file(path, data, 0o600, write_message)


class HoldArea:
    """Held messages in C{directory}; see the module docstring for the layout."""

    def __init__(self, directory: str, clock: Callable[[], float] = time.time) -> None:
        self.directory = directory
        self._clock = clock
        self._ensured = False

    # -- paths ------------------------------------------------------------

    def _entry(self, message_id: str, where: str = "") -> str:
        if not isinstance(message_id, str) or not _ID.match(message_id):
            raise NoSuchMessage(message_id)
        return os.path.join(self.directory, where, message_id) if where else os.path.join(self.directory, message_id)

    def ensure(self) -> None:
        """Create the hold directory and its C{tmp/} and C{released/} (mode 0700)."""
        if self._ensured:
            return
        for sub in ("", TMP, RELEASED):
            os.makedirs(os.path.join(self.directory, sub), mode=0o700, exist_ok=True)
        self._ensured = True

    # -- writing ----------------------------------------------------------

    def hold(self, envelope: dict[str, Any], message: bytes | SpooledMessage) -> str:
        """Store C{message} durably; return its id.  C{ValueError} for a bad envelope."""
        stored = check_envelope(envelope)
        stored.setdefault("time", self._clock())
        data = json.dumps(stored, sort_keys=True, indent=1).encode("utf-8") + b"\n"
        self.ensure()
        tmp = os.path.join(self.directory, TMP)
        for _attempt in range(8):
            message_id = self._new_id()
            staging = os.path.join(tmp, message_id)
            try:
                os.mkdir(staging, 0o700)
            except FileExistsError:
                continue
            break
        else:
            raise OSError("cannot allocate a hold id")
        try:
            _write_durably(os.path.join(staging, MESSAGE_FILE), message)
            _write_durably(os.path.join(staging, ENVELOPE_FILE), data)
            _fsync_directory(staging)
            os.rename(staging, self._entry(message_id))
            _fsync_directory(self.directory)
            _fsync_directory(tmp)
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return message_id

    def _new_id(self) -> str:
        return f"{int(self._clock() * 1_000_000):X}{secrets.token_hex(5).upper()}"

    def mark_released(self, message_id: str) -> None:
        """Move a held message into C{released/}, atomically."""
        source = self._entry(message_id)
        if not os.path.isdir(source):
            raise NoSuchMessage(message_id)
        released = os.path.join(self.directory, RELEASED)
        os.makedirs(released, mode=0o700, exist_ok=True)
        os.rename(source, self._entry(message_id, RELEASED))
        _fsync_directory(released)
        _fsync_directory(self.directory)

    def delete(self, message_id: str) -> None:
        """Remove a held message."""
        self._remove(self._entry(message_id), message_id)

    def remove_released(self, message_id: str) -> None:
        """Forget a released message once it is durably delivered or queued."""
        self._remove(self._entry(message_id, RELEASED), message_id)

    def _remove(self, path: str, message_id: str) -> None:
        if not os.path.isdir(path):
            raise NoSuchMessage(message_id)
        tmp = os.path.join(self.directory, TMP)
        os.makedirs(tmp, mode=0o700, exist_ok=True)
        doomed = os.path.join(tmp, f"{message_id}.deleted.{secrets.token_hex(4)}")
        os.rename(path, doomed)  # the atomic step: gone from the listing
        _fsync_directory(os.path.dirname(path))
        shutil.rmtree(doomed, ignore_errors=True)

    def purge_tmp(self, max_age: float = 86400.0) -> int:
        """Remove C{tmp/} leftovers older than C{max_age} seconds (never acknowledged)."""
        tmp = os.path.join(self.directory, TMP)
        removed = 0
        now = self._clock()
        try:
            names = os.listdir(tmp)
        except FileNotFoundError:
            return 0
        for name in names:
            path = os.path.join(tmp, name)
            try:
                if now - os.lstat(path).st_mtime > max_age:
                    shutil.rmtree(path, ignore_errors=True)
                    removed += 1
            except FileNotFoundError:
                continue
        return removed

    # -- reading ----------------------------------------------------------

    def _ids(self, where: str = "") -> list[str]:
        try:
            names = os.listdir(os.path.join(self.directory, where))
        except FileNotFoundError:
            return []
        return sorted(n for n in names if _ID.match(n))

    def list(self) -> list[HeldMessage]:
        """The held (not released) messages, oldest first."""
        entries = []
        for message_id in self._ids():
            path = self._entry(message_id)
            try:
                with open(os.path.join(path, ENVELOPE_FILE), "rb") as f:
                    envelope = _read_envelope(f.read())
                size = os.stat(os.path.join(path, MESSAGE_FILE)).st_size
            except (OSError, ValueError) as error:
                entries.append(HeldMessage(message_id, {}, 0, f"unreadable: {error}"))
                continue
            entries.append(HeldMessage(message_id, envelope, size))
        entries.sort(key=lambda e: (e.envelope.get("time", 0), e.id))
        return entries

    def load(self, message_id: str, released: bool = False) -> tuple[dict[str, Any], bytes]:
        """C{(envelope, message)} of a held (or C{released}) message."""
        path = self._entry(message_id, RELEASED if released else "")
        try:
            with open(os.path.join(path, ENVELOPE_FILE), "rb") as f:
                envelope = _read_envelope(f.read())
            with open(os.path.join(path, MESSAGE_FILE), "rb") as f:
                message = f.read()
        except FileNotFoundError:
            raise NoSuchMessage(message_id) from None
        return envelope, message

    def take_released(self) -> Iterator[tuple[str, dict[str, Any], bytes]]:
        """
        C{(id, envelope, message)} of each released message, oldest id
        first.  Nothing is removed: call L{remove_released} once the message
        is durably delivered, so a crash in between delivers it again rather
        than losing it.  Unreadable entries are skipped (and stay).
        """
        for message_id in self._ids(RELEASED):
            try:
                envelope, message = self.load(message_id, released=True)
            except (NoSuchMessage, OSError, ValueError):
                continue
            yield message_id, envelope, message
