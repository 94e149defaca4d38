"""
The content checks of the configuration, reloaded atomically: each regexp
table file is watched, and a new immutable L{ContentChecks} is built when
any of them changed.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, gatherResults
from zope.interface import implementer

from mailserver.delivery.checks import ContentChecks, ContentVerdict
from mailserver.interfaces import IContentCheck
from mailserver.tables.loader import WatchedFile
from mailserver.tables.regexp import RuleTable, combine_tables, compile_regexp_table

TABLE_PARAMETERS = ("header_checks", "mime_header_checks", "nested_header_checks", "body_checks")


def _load(path: str) -> RuleTable:
    with open(path, encoding="utf-8", errors="surrogateescape") as handle:
        return compile_regexp_table(handle.read(), path)


@implementer(IContentCheck)
class ReloadingContentChecks:
    """
    C{header_checks}, C{mime_header_checks}, C{nested_header_checks} and
    C{body_checks} as one IContentCheck.  A table that fails to compile on
    reload keeps its previous version (the error is logged); at start-up it
    is a configuration error.
    """

    name = "cleanup"

    def __init__(self, config: Any, reactor: Any) -> None:
        self._config = config
        self._paths = {name: [ref.path for ref in getattr(config, name)] for name in TABLE_PARAMETERS}
        self.files: dict[str, WatchedFile[RuleTable]] = {}
        for paths in self._paths.values():
            for path in paths:
                if path not in self.files:
                    self.files[path] = WatchedFile(path, _load, reactor)
        self._stamp: tuple[int, ...] = ()
        self._checks: ContentChecks | None = None

    @property
    def configured(self) -> bool:
        return bool(self.files)

    def current(self) -> ContentChecks:
        """The checks built from the tables as they are now (rebuilt after a reload)."""
        stamp = tuple(f.generation for f in self.files.values())
        checks = self._checks
        if checks is None or stamp != self._stamp:
            tables: dict[str, RuleTable | None] = {}
            for name, paths in self._paths.items():
                loaded = [self.files[p].value for p in paths]
                tables[name] = None if not loaded else loaded[0] if len(loaded) == 1 else combine_tables(loaded)
            checks = ContentChecks(
                tables["header_checks"], tables["mime_header_checks"], tables["nested_header_checks"],
                tables["body_checks"], body_checks_size_limit=self._config.body_checks_size_limit,
                decode_headers=self._config.header_checks_decode,
                mime_nesting_limit=self._config.mime_nesting_limit,
            )
            self._checks, self._stamp = checks, stamp
        return checks

    def inspect(self, envelope: object, message: bytes) -> ContentVerdict:
        return self.current().inspect(envelope, message)

    def start(self) -> None:
        for watched in self.files.values():
            watched.start()

    def stop(self) -> None:
        for watched in self.files.values():
            watched.stop()

    def reload(self) -> Deferred:
        """Re-read every table now; the Deferred fires once all are swapped in (or kept)."""
        return gatherResults([watched.reload(force=True) for watched in self.files.values()])
