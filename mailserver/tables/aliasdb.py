"""
The alias lookup the daemon uses: C{newaliases} compiles an aliases(5)
source into C{source + ".db"} (a versioned JSON document, replaced
atomically), the daemon loads and watches it.

Like Postfix, the daemon reads the compiled table, not the source: editing
C{/etc/aliases} takes effect when C{newaliases} has run.  When the C{.db}
is missing or older than its source the source is parsed instead, with a
warning.  C{texthash:} maps have no C{.db}; their source is watched.
"""

from __future__ import annotations

import json
import os
import stat
from typing import Any, Sequence

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import classImplements

from mailserver.durable import replace_atomically
from mailserver.errors import ConfigError, Problem
from mailserver.interfaces import ILookupTable
from mailserver.tables.aliases import (
    AliasEntry,
    AliasTable,
    AliasTarget,
    TargetKind,
    chain,
    parse_aliases,
    parse_virtual,
    source_path,
    table_type,
)
from mailserver.tables.loader import WatchedFile

classImplements(AliasTable, ILookupTable)

log = Logger(namespace="mailserver.tables.aliases")

FORMAT = "mailserver-aliases"
VERSION = 1
#: Table types read from a compiled C{.db}; C{texthash} reads its source.
COMPILED_TYPES = frozenset({"hash", "lmdb", "btree", "dbm"})
#: An :include: file larger than this is refused (a list, not a mailbox).
INCLUDE_LIMIT = 1 << 20


def compiled_path(source: str) -> str:
    """Where C{newaliases} writes the table compiled from C{source}."""
    return source + ".db"


def stale_compiled(source_path: str, db_mtime_ns: int | None) -> str | None:
    """
    Why the source is read instead of its C{.db} (missing: C{db_mtime_ns}
    None, or older than the source), or None when the C{.db} is current.
    The daemon logs this at load; C{mailserver check} reports it.
    """
    db = compiled_path(source_path)
    if db_mtime_ns is None:
        return f"{db} does not exist: reading {source_path} (run newaliases)"
    try:
        source_mtime_ns = os.stat(source_path).st_mtime_ns
    except FileNotFoundError:
        return None
    if source_mtime_ns > db_mtime_ns:
        return f"{db} is older than {source_path}: reading the source (run newaliases)"
    return None


# -- the compiled document ----------------------------------------------------------


def to_document(table: AliasTable) -> dict[str, Any]:
    """The JSON-ready form of C{table} (owners are not stored: they come from the file)."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "kind": table.kind,
        "source": table.source,
        "entries": [
            {
                "name": entry.name,
                "line": entry.line,
                "targets": [[t.kind.value, t.value, t.line] for t in entry.targets],
            }
            for entry in table.entries.values()
        ],
    }


def from_document(document: object, source: str) -> AliasTable:
    """Rebuild a table from L{to_document}'s form; raise ValueError if it is not one."""
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ValueError("not a compiled alias table")
    if document.get("version") != VERSION:
        raise ValueError(f"unsupported version {document.get('version')!r} (this server reads {VERSION})")
    entries: dict[str, AliasEntry] = {}
    try:
        for item in document["entries"]:
            targets = tuple(
                AliasTarget(TargetKind(kind), str(value), int(line)) for kind, value, line in item["targets"]
            )
            name = str(item["name"]).lower()
            entries.setdefault(name, AliasEntry(name, targets, source, int(item["line"])))
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"malformed entry: {error}") from None
    return AliasTable(entries, source, str(document.get("kind", "aliases")))


# -- newaliases ------------------------------------------------------------------------


def _read_source(path: str) -> tuple[str, os.stat_result]:
    with open(path, encoding="utf-8", errors="surrogateescape") as handle:
        return handle.read(), os.fstat(handle.fileno())


def validate_aliases(source: str) -> tuple[AliasTable | None, os.stat_result | None, list[Problem]]:
    """Read and parse C{source}: (table, its stat, problems); table None if unreadable."""
    try:
        text, st = _read_source(source)
    except OSError as error:
        return None, None, [Problem(source, 0, f"cannot read: {error.strerror or error}")]
    table, problems = parse_aliases(text, source)
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        problems.append(
            Problem(source, 0, "writable by group or others: they could make mail run commands as the file's owner", "warning")
        )
    return table, st, problems


def compile_aliases(source: str) -> tuple[AliasTable | None, list[Problem]]:
    """
    Validate C{source} and, if it has no errors, write C{source.db}
    atomically: a reader sees the old or the new table, never half of one.
    Running as root, the C{.db} gets the source's owner (as postalias does),
    since command and file deliveries run as the owner of the table.
    Returns the table (None when nothing was written) and every problem.
    """
    table, st, problems = validate_aliases(source)
    if table is None or st is None or any(p.severity == "error" for p in problems):
        return None, problems
    data = json.dumps(to_document(table), indent=1, sort_keys=False).encode() + b"\n"
    owner = (st.st_uid, st.st_gid) if os.geteuid() == 0 and st.st_uid != 0 else None
    mode = (st.st_mode & 0o644) | 0o600
    try:
        replace_atomically(compiled_path(source), data, mode, owner)
    except OSError as error:
        problems.append(Problem(compiled_path(source), 0, f"cannot write: {error.strerror or error}"))
        return None, problems
    return table, problems


def newaliases(source_path: str) -> list[Problem]:
    """Validate and compile one aliases(5) file; the problems found (nothing written on errors)."""
    return compile_aliases(source_path)[1]


# -- loading -----------------------------------------------------------------------------


def _parse_source(source: str) -> AliasTable:
    """Parse the source itself, logging its problems; ConfigError if it cannot be read."""
    try:
        text, st = _read_source(source)
    except OSError as error:
        raise ConfigError([Problem(source, 0, f"cannot read aliases: {error.strerror or error}")]) from None
    table, problems = parse_aliases(text, source)
    for problem in problems:
        log.warn("{problem}", problem=str(problem))
    return table.with_owner(st.st_uid)


def load_compiled(source_path: str) -> AliasTable:
    """
    The table compiled from C{source_path}, its entries owned by the C{.db}'s
    owner.  The source is parsed instead (with a warning) when the C{.db} is
    missing, older than the source, or unreadable.

    @raise ConfigError: neither the C{.db} nor the source can be read.
    """
    db = compiled_path(source_path)
    try:
        with open(db, "rb") as handle:
            st_db = os.fstat(handle.fileno())
            data = handle.read()
    except FileNotFoundError:
        log.warn("{problem}", problem=stale_compiled(source_path, None), db=db, source=source_path)
        return _parse_source(source_path)
    except OSError as error:
        log.error("cannot read {db}: {error}; reading {source}", db=db, error=str(error), source=source_path)
        return _parse_source(source_path)
    stale = stale_compiled(source_path, st_db.st_mtime_ns)
    if stale is not None:
        log.warn("{problem}", problem=stale, db=db, source=source_path)
        return _parse_source(source_path)
    try:
        table = from_document(json.loads(data), source_path)
    except ValueError as error:
        log.error("{db}: {error}; reading {source} (run newaliases)", db=db, error=str(error), source=source_path)
        return _parse_source(source_path)
    return table.with_owner(st_db.st_uid)


def load_virtual(path: str) -> AliasTable:
    """A virtual(5) table read from its source, problems logged; ConfigError if unreadable."""
    try:
        text, _ = _read_source(path)
    except OSError as error:
        raise ConfigError([Problem(path, 0, f"cannot read virtual aliases: {error.strerror or error}")]) from None
    table, problems = parse_virtual(text, path)
    for problem in problems:
        log.warn("{problem}", problem=str(problem))
    return table


def read_include_file(path: str) -> str:
    """
    Read an C{:include:} file for the expansion (blocking: call the
    expansion in a thread).  Raises OSError for a missing, non-regular or
    oversized file.
    """
    with open(path, encoding="utf-8", errors="surrogateescape") as handle:
        st = os.fstat(handle.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise OSError(f"{path}: not a regular file")
        text = handle.read(INCLUDE_LIMIT + 1)
    if len(text) > INCLUDE_LIMIT:
        raise OSError(f"{path}: larger than {INCLUDE_LIMIT} bytes")
    return text


# -- watching --------------------------------------------------------------------------------


def watch_aliases(
    source_path: str, reactor: IReactorTime | None, interval: float = 2.0
) -> WatchedFile[AliasTable]:
    """
    The table of C{source_path}, reloaded when C{newaliases} replaces the
    C{.db} (the watched file).  Call C{start()} to begin polling.
    """
    return WatchedFile(compiled_path(source_path), lambda _db: load_compiled(source_path), reactor, interval)


def watch_virtual(path: str, reactor: IReactorTime | None, interval: float = 2.0) -> WatchedFile[AliasTable]:
    """A virtual(5) table reloaded when its source changes."""
    return WatchedFile(path, load_virtual, reactor, interval)


class AliasMaps:
    """
    Several watched tables searched in order (C{alias_maps},
    C{virtual_alias_maps}); calling it gives the current L{chain}, rebuilt
    only when one of the tables was reloaded.
    """

    def __init__(self, watched: Sequence[WatchedFile[AliasTable]], kind: str = "aliases") -> None:
        self.watched = tuple(watched)
        self._kind = kind
        self._key: tuple[int, ...] = ()
        self._table = AliasTable(kind=kind)

    def __call__(self) -> AliasTable:
        key = tuple(w.generation for w in self.watched)
        if key != self._key:
            values = [w.value for w in self.watched]
            self._table = chain(values) if values else AliasTable(kind=self._kind)
            self._key = key
        return self._table

    def start(self) -> None:
        for watched in self.watched:
            watched.start()

    def stop(self) -> None:
        for watched in self.watched:
            watched.stop()


def watch_alias_maps(maps: Sequence[object], reactor: IReactorTime | None, interval: float = 2.0) -> AliasMaps:
    """
    L{AliasMaps} over C{config.alias_maps} (C{type:path} entries): compiled
    types through their C{.db}, C{texthash:} through the source.
    """
    watched = [
        watch_aliases(source_path(m), reactor, interval)
        if table_type(m) in COMPILED_TYPES
        else WatchedFile(source_path(m), _parse_source, reactor, interval)
        for m in maps
    ]
    return AliasMaps(watched, "aliases")


def watch_virtual_maps(maps: Sequence[object], reactor: IReactorTime | None, interval: float = 2.0) -> AliasMaps:
    """L{AliasMaps} over C{config.virtual_alias_maps}, each read from its source."""
    return AliasMaps([watch_virtual(source_path(m), reactor, interval) for m in maps], "virtual")
