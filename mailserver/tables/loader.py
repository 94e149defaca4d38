"""
The only I/O of the tables package: read a file, watch its mtime, and swap
the parsed value atomically so readers see the old or the new table, never
a half-read one.
"""

from __future__ import annotations

import os
from typing import Callable, Generic, TypeVar

from twisted.internet import threads
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorThreads, IReactorTime
from twisted.logger import Logger

from mailserver.periodic import PeriodicTask

T = TypeVar("T")


def _stamp(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class WatchedFile(Generic[T]):
    """
    A parsed file that reloads itself when the file changes.

    C{parse(path) -> T} runs in a thread on reload; if it raises, the old
    value stays and the error is logged.  C{value} is always a complete
    parsed table.  C{generation} counts the swaps: a table built from
    several watched files is current while their generations are unchanged
    (an C{id()} of the value is not enough: a freed table's id is reused).
    """

    log = Logger()

    def __init__(
        self,
        path: str,
        parse: Callable[[str], T],
        reactor: IReactorTime | None = None,
        interval: float = 2.0,
    ) -> None:
        self.path = path
        self._parse = parse
        self._reactor = reactor
        self._interval = interval
        self._stamp = _stamp(path)
        self.value: T = parse(path)
        self.generation = 0
        self._loop: PeriodicTask | None = None

    def start(self) -> None:
        """Poll the file's mtime every C{interval} seconds."""
        clock = self._reactor
        if clock is None:
            from twisted.internet import reactor as clock  # type: ignore[assignment]
        if self._loop is None:
            self._loop = PeriodicTask(f"reload of {self.path}", self.reload, self._interval, clock)
        self._loop.start()

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.stop()

    def reload(self, force: bool = False) -> Deferred[bool]:
        """Re-read the file if it changed (or C{force}); fire with True if swapped."""
        stamp = _stamp(self.path)
        if stamp == self._stamp and not force:
            return succeed(False)

        def swap(value: T) -> bool:
            self.value = value
            self.generation += 1
            self._stamp = stamp
            self.log.info("reloaded {path}", path=self.path)
            return True

        def failed(failure) -> bool:
            self._stamp = stamp
            self.log.error(
                "keeping the previous {path}: {error}", path=self.path, error=failure.getErrorMessage()
            )
            return False

        if self._reactor is not None and IReactorThreads.providedBy(self._reactor):
            d = threads.deferToThreadPool(
                self._reactor, self._reactor.getThreadPool(), self._parse, self.path
            )
        else:
            from twisted.internet.defer import maybeDeferred

            d = maybeDeferred(self._parse, self.path)
        return d.addCallbacks(swap, failed)
