"""
User databases: a Dovecot passwd-file that reloads itself when it changes,
and an in-memory one for tests and embedding.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Iterable

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from mailserver.errors import ConfigError, Problem
from mailserver.interfaces import IUserDatabase
from mailserver.tables.loader import WatchedFile
from mailserver.tables.passwd import UserRecord, lookup_key, mode_problem, parse_passwd

log = Logger()


@dataclass(frozen=True)
class UserTable:
    """One parsed passwd-file: records by lookup key, and their domains."""

    records: dict[str, UserRecord] = field(default_factory=dict)
    domains: frozenset[str] = frozenset()

    @classmethod
    def of(cls, records: Iterable[UserRecord]) -> UserTable:
        table: dict[str, UserRecord] = {}
        for record in records:
            table.setdefault(record.key, record)
        return cls(table, frozenset(r.domain for r in table.values() if r.domain))


def load_passwd(path: str) -> UserTable:
    """
    Read and parse a passwd-file (blocking: the loader runs it in a thread).

    A missing file is an empty table and a warning; warnings are logged.

    @raise ConfigError: the file is unreadable, not UTF-8, or has errors;
        the previous table then stays in use.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
            mode = os.fstat(f.fileno()).st_mode
    except FileNotFoundError:
        log.warn("passwd file {path} does not exist: no users", path=path)
        return UserTable()
    except OSError as error:
        raise ConfigError([Problem(path, 0, f"cannot read: {error.strerror}")]) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise ConfigError([Problem(path, line, "not UTF-8")]) from None
    records, problems = parse_passwd(text, path)
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        raise ConfigError(errors)
    for problem in problems:
        log.warn("{problem}", problem=str(problem))
    exposed = mode_problem(path, mode)
    if exposed is not None:
        log.warn("{problem}", problem=exposed, path=path)
    return UserTable.of(records.values())


@implementer(IUserDatabase)
class FileUserDatabase(Service):
    """
    The users of a Dovecot passwd-file.

    The file is read at construction (raising L{ConfigError} if it has
    errors) and, while the service runs, re-read within C{interval} seconds
    of a change; readers see the old or the new table, never a mix.  An edit
    with errors is logged and ignored until the file is fixed.

    @param reactor: C{IReactorTime} and C{IReactorThreads} (parsing runs in
        its thread pool).
    """

    def __init__(self, path: str, reactor, interval: float = 1.0) -> None:
        self.path = path
        self._file: WatchedFile[UserTable] = WatchedFile(path, load_passwd, reactor, interval)

    def startService(self) -> None:
        super().startService()
        self._file.start()

    def stopService(self) -> None:
        self._file.stop()
        return super().stopService()

    def reload(self, force: bool = False) -> Deferred[bool]:
        """Re-read the file now if it changed; fire with True if the table was swapped."""
        return self._file.reload(force)

    def lookup(self, name: str) -> UserRecord | None:
        return self._file.value.records.get(lookup_key(name))

    def users(self) -> list[UserRecord]:
        return list(self._file.value.records.values())

    def domains(self) -> set[str]:
        return set(self._file.value.domains)


@implementer(IUserDatabase)
class MemoryUserDatabase:
    """Users held in memory (tests, embedding); the first record of a name wins."""

    def __init__(self, records: Iterable[UserRecord] = ()) -> None:
        self._table = UserTable.of(records)

    def replace(self, records: Iterable[UserRecord]) -> None:
        """Swap in a new set of users at once."""
        self._table = UserTable.of(records)

    def lookup(self, name: str) -> UserRecord | None:
        return self._table.records.get(lookup_key(name))

    def users(self) -> list[UserRecord]:
        return list(self._table.records.values())

    def domains(self) -> set[str]:
        return set(self._table.domains)
