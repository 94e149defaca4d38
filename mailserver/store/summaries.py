"""
The persisted half of a folder index: what is expensive to learn about a
message (internal date, sizes, the parsed summary) keyed by its unique
base name.

A Maildir message never changes once delivered, so an entry stays valid
for as long as a file with that base name exists.  Entries live in
``mailserver.index`` (a JSON snapshot, rewritten as tmp + rename) plus
``mailserver.index.log`` (one JSON line per entry added since, appended
with a single write).  Both are caches: losing or corrupting them only
costs a re-parse, so they are not fsynced.  Blocking: call from a thread.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from typing import Any, Iterable

from twisted.logger import Logger

from mailserver.durable import replace_atomically

SNAPSHOT = "mailserver.index"
JOURNAL = SNAPSHOT + ".log"
FORMAT_VERSION = 1

log = Logger()


@dataclass(frozen=True, slots=True)
class Summary:
    """What we cache per message: internal date, file size, parsed summary."""

    mtime: float
    size: int
    data: dict[str, Any]

    def as_json(self) -> list[Any]:
        return [self.mtime, self.size, self.data]

    @classmethod
    def from_json(cls, value: Any) -> "Summary | None":
        if (
            isinstance(value, list)
            and len(value) == 3
            and isinstance(value[0], (int, float))
            and isinstance(value[1], int)
            and isinstance(value[2], dict)
        ):
            return cls(float(value[0]), value[1], value[2])
        return None


class SummaryCache:
    """
    The summaries of one folder, loaded lazily, appended to as messages
    are described, compacted when the journal grows.

    @param version: the describer's version; a cache written by another
        version is ignored (and replaced at the next compaction).
    """

    def __init__(self, folder: str, version: str, compact_after: int = 2000) -> None:
        self.folder = folder
        self.version = version
        self._compact_after = compact_after
        self._entries: dict[str, Summary] | None = None
        self._journal_lines = 0
        self._lock = threading.Lock()

    def _load(self) -> dict[str, Summary]:
        entries: dict[str, Summary] = {}
        self._journal_lines = 0
        try:
            with open(os.path.join(self.folder, SNAPSHOT), "rb") as f:
                snapshot = json.loads(f.read())
            if (
                isinstance(snapshot, dict)
                and snapshot.get("format") == FORMAT_VERSION
                and snapshot.get("describe") == self.version
                and isinstance(snapshot.get("entries"), dict)
            ):
                for base, value in snapshot["entries"].items():
                    summary = Summary.from_json(value)
                    if summary is not None:
                        entries[base] = summary
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as e:
            log.warn("ignoring unreadable index in {folder}: {error}", folder=self.folder, error=e)
        try:
            with open(os.path.join(self.folder, JOURNAL), "rb") as f:
                for line in f:
                    self._journal_lines += 1
                    try:
                        version, base, value = json.loads(line)
                    except ValueError:
                        continue  # a torn last line
                    summary = Summary.from_json(value)
                    if version == self.version and isinstance(base, str) and summary is not None:
                        entries[base] = summary
        except FileNotFoundError:
            pass
        except OSError as e:
            log.warn("ignoring unreadable index log in {folder}: {error}", folder=self.folder, error=e)
        return entries

    def get(self, base: str) -> Summary | None:
        with self._lock:
            if self._entries is None:
                self._entries = self._load()
            return self._entries.get(base)

    def add(self, items: Iterable[tuple[str, Summary]]) -> None:
        """Remember new entries and append them to the journal."""
        items = list(items)
        if not items:
            return
        with self._lock:
            if self._entries is None:
                self._entries = self._load()
            lines = []
            for base, summary in items:
                self._entries[base] = summary
                lines.append(json.dumps([self.version, base, summary.as_json()], separators=(",", ":")))
            data = ("\n".join(lines) + "\n").encode("utf-8")
            try:
                fd = os.open(
                    os.path.join(self.folder, JOURNAL),
                    os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                    0o600,
                )
                try:
                    os.write(fd, data)
                finally:
                    os.close(fd)
                self._journal_lines += len(lines)
            except OSError as e:
                log.warn("cannot write index log in {folder}: {error}", folder=self.folder, error=e)

    def compact(self, keep: Iterable[str], force: bool = False) -> bool:
        """
        Rewrite the snapshot with the entries of C{keep} (the bases that
        still exist) once the journal is long; True if it did.
        """
        with self._lock:
            if self._entries is None:
                return False
            if not force and self._journal_lines < self._compact_after:
                return False
            keep = set(keep)
            self._entries = {b: s for b, s in self._entries.items() if b in keep}
            snapshot = {
                "format": FORMAT_VERSION,
                "describe": self.version,
                "entries": {b: s.as_json() for b, s in self._entries.items()},
            }
            path = os.path.join(self.folder, SNAPSHOT)
            try:
                replace_atomically(path, json.dumps(snapshot, separators=(",", ":")).encode("utf-8"), sync=False)
                # Entries appended by another process since our load are
                # lost here; they are only a cache and get re-parsed.
                with open(os.path.join(self.folder, JOURNAL), "wb"):
                    pass
                self._journal_lines = 0
            except OSError as e:
                log.warn("cannot write index in {folder}: {error}", folder=self.folder, error=e)
                return False
            return True
