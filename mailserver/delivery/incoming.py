"""
SMTP DATA spooled to disk as it arrives: C{data_directory/incoming/}.

A message stays in memory up to the spill threshold; past it, everything
goes to a spool file, written in a thread by one serial writer per
transaction.  At most C{high_water} bytes wait for that writer: the caller
asks L{SpoolWriter.behind} and pauses its transport until
L{SpoolWriter.when_caught_up} fires.  The files are scratch space: never
acknowledged on their own, removed when the transaction ends, and every
leftover is removed at start (L{IncomingSpool.clear}).
"""

from __future__ import annotations

import itertools
import os
from typing import Any, Callable

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure

from mailserver.errors import MailError
from mailserver.spooled import SpooledMessage, write_all

#: Messages up to this size are held in memory only.
SPILL_THRESHOLD = 256 * 1024
#: Most bytes waiting for the writer thread before the client is paused.
HIGH_WATER = 256 * 1024

_OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)

log = Logger(namespace="mailserver.delivery")


class IncomingSpool:
    """
    The directory of spool files and the thread pool that writes them.

    @param reactor: C{IReactorThreads} (C{getThreadPool}, C{callFromThread}).
    """

    def __init__(
        self, directory: str, reactor: Any, threshold: int = SPILL_THRESHOLD, high_water: int = HIGH_WATER,
        threadpool: Any = None,
    ) -> None:
        self.directory = directory
        self.reactor = reactor
        self.threshold = threshold
        self.high_water = high_water
        self._threadpool = threadpool
        self._names = itertools.count()
        self._prefix = f"{os.getpid()}.{id(self):x}"

    def clear(self) -> int:
        """Create the directory (0700) and remove leftovers of a crash; blocking, for start-up."""
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        removed = 0
        for name in os.listdir(self.directory):
            try:
                os.unlink(os.path.join(self.directory, name))
                removed += 1
            except (FileNotFoundError, IsADirectoryError, PermissionError):
                pass
        return removed

    def new_path(self) -> str:
        return os.path.join(self.directory, f"{self._prefix}.{next(self._names)}")

    def run(self, function: Callable[..., Any], *args: Any) -> Deferred:
        pool = self._threadpool or self.reactor.getThreadPool()
        return deferToThreadPool(self.reactor, pool, function, *args)

    def remove(self, paths: list[str]) -> Deferred:
        """Unlink spool files in a thread; errors are logged, never raised."""
        if not paths:
            return succeed(None)
        return self.run(_unlink_all, list(paths)).addErrback(
            lambda failure: log.failure("could not remove spool files", failure)
        )

    def writer(self) -> SpoolWriter:
        return SpoolWriter(self)


def _unlink_all(paths: list[str]) -> None:
    for path in paths:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def create(path: str) -> int:
    """A new spool file (blocking)."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    return os.open(path, _OPEN_FLAGS, 0o600)


class SpoolWriter:
    """
    One transaction's message: memory up to the threshold, then the spool
    file.  L{write} is called on the reactor thread; the file is written in
    order by one job at a time in the thread pool.
    """

    def __init__(self, spool: IncomingSpool) -> None:
        self.spool = spool
        self.size = 0
        self._memory: list[bytes] = []
        self.path: str | None = None
        self._fd: int | None = None
        self._queued: list[bytes] = []
        self._waiting = 0  # bytes queued or being written
        self._busy = False
        self._discarded = False
        self._error: BaseException | None = None
        self._caught_up: list[Callable[[], object]] = []
        self._drained: list[Deferred] = []

    @property
    def spilled(self) -> bool:
        return self.path is not None

    @property
    def failed(self) -> bool:
        """True when writing the spool file failed (the message is refused with 451)."""
        return self._error is not None

    @property
    def behind(self) -> bool:
        """True while more than C{high_water} bytes wait for the writer thread."""
        return self._waiting > self.spool.high_water

    def write(self, data: bytes) -> None:
        if self._discarded or not data:
            return
        self.size += len(data)
        if self.path is None:
            if self.size <= self.spool.threshold:
                self._memory.append(data)
                return
            self.path = self.spool.new_path()
            self._queued, self._memory = self._memory, []
            self._waiting = self.size - len(data)
        self._queued.append(data)
        self._waiting += len(data)
        self._kick()

    def when_caught_up(self, callback: Callable[[], object]) -> None:
        """Call C{callback} once the writer is no longer L{behind} (at once if it is not)."""
        if not self.behind:
            callback()
        else:
            self._caught_up.append(callback)

    def discard(self) -> None:
        """Stop storing now: the file is closed and removed, later writes are ignored."""
        if self._discarded:
            return
        self._discarded = True
        self._memory, self._queued = [], []
        self._waiting = 0
        self._notify()
        if not self._busy:
            self._dispose()

    def in_memory(self) -> bytes | None:
        """The whole message when it never left memory (what L{finish} fires with), else None."""
        if self.path is not None or self._discarded or self._error is not None:
            return None
        return b"".join(self._memory)

    def finish(self) -> Deferred[SpooledMessage]:
        """End of data: fire with the message once every byte is in the file (not fsynced)."""
        if self._error is not None:
            return fail(MailError(451, "4.3.0", "Error: queue file write error"))
        if self._discarded:
            raise RuntimeError("finish() after discard()")
        if self.path is None:
            return succeed(SpooledMessage(b"".join(self._memory)))
        d: Deferred[SpooledMessage] = Deferred()
        self._drained.append(d)
        self._kick()
        return d

    # -- the serial writer ---------------------------------------------------

    def _kick(self) -> None:
        if self._busy:
            return
        if self._queued:
            batch, self._queued = self._queued, []
            self._busy = True
            d = self.spool.run(self._write_batch, b"".join(batch) if len(batch) > 1 else batch[0])
            d.addBoth(self._written)
        elif self._drained:
            self._busy = True
            self.spool.run(self._close).addBoth(self._written)

    def _write_batch(self, data: bytes) -> int:
        if self._fd is None:
            assert self.path is not None
            self._fd = create(self.path)
        write_all(self._fd, data)
        return len(data)

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _written(self, result: int | Failure | None) -> None:
        self._busy = False
        if isinstance(result, Failure):
            self._error = result.value
            log.error("spool file {path}: {error}", path=self.path, error=result.getErrorMessage())
            self._discarded = True
            self._queued = []
        elif isinstance(result, int):
            self._waiting -= result
        if self._discarded:
            self._waiting = 0
            self._notify()
            self._dispose()
            return
        self._notify()
        if self._queued or (self._drained and self._fd is not None):
            self._kick()
        elif self._drained:
            drained, self._drained = self._drained, []
            message = SpooledMessage(b"", self.path, 0, self.size)
            for d in drained:
                d.callback(message)

    def _notify(self) -> None:
        if self.behind:
            return
        callbacks, self._caught_up = self._caught_up, []
        for callback in callbacks:
            callback()

    def _dispose(self) -> None:
        """Close and unlink the file (in a thread), and fail whoever waits for it."""
        fd, self._fd = self._fd, None
        path = self.path
        if fd is not None or path is not None:
            self.spool.run(_close_and_unlink, fd, path).addErrback(
                lambda failure: log.failure("could not remove spool file", failure)
            )
        drained, self._drained = self._drained, []
        for d in drained:
            d.errback(MailError(451, "4.3.0", "Error: queue file write error"))


def _close_and_unlink(fd: int | None, path: str | None) -> None:
    if fd is not None:
        os.close(fd)
    if path is not None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
