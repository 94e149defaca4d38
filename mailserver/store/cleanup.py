"""
Remove what crashes leave in Maildir C{tmp/} directories.

A delivery or an IMAP APPEND writes to C{tmp/} and renames into C{new/} or
C{cur/}; a crash (or a full disk) in between leaves the file behind, for
good.  As Dovecot does, files in C{tmp/} not touched for 36 hours are
removed: no write takes that long.  Every Maildir the server knows (each
user's, and their Maildir++ folders) is swept at start and then every
12 hours, in a thread, with a bound on the work per sweep.
"""

from __future__ import annotations

import os
import stat
from typing import Any, Callable, Iterable, Iterator

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from mailserver.durable import fsync_directory
from mailserver.periodic import PeriodicTask

#: Dovecot's rule: a tmp/ file older than this is a leftover.
TMP_MAX_AGE = 36 * 3600.0
#: How often the sweep runs.
SWEEP_INTERVAL = 12 * 3600.0
#: Directory entries examined per sweep, at most (the rest waits for the next one).
MAX_EXAMINED = 1_000_000

log = Logger()


def tmp_directories(maildir: str) -> Iterator[str]:
    """C{maildir/tmp} and the C{tmp/} of each Maildir++ folder (C{.Name/tmp}), if present."""
    yield os.path.join(maildir, "tmp")
    try:
        entries = sorted(os.scandir(maildir), key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return
    for entry in entries:
        if entry.name.startswith(".") and not entry.name.startswith("..") and entry.is_dir(follow_symlinks=False):
            yield os.path.join(entry.path, "tmp")


def _age(st: os.stat_result, now: float) -> float:
    """Seconds since the file was last written or changed (reads do not count: a backup reads everything)."""
    return now - max(st.st_mtime, st.st_ctime)


def sweep(
    maildirs: Iterable[str], now: float, max_age: float = TMP_MAX_AGE, max_examined: int = MAX_EXAMINED
) -> list[tuple[str, float]]:
    """
    Remove files older than C{max_age} from the C{tmp/} directories of
    C{maildirs} (blocking: run it in a thread).  Returns C{(path, age)} of
    each removal; stops after examining C{max_examined} entries.
    """
    removed: list[tuple[str, float]] = []
    examined = 0
    for maildir in dict.fromkeys(maildirs):
        for tmp in tmp_directories(maildir):
            removed_here = False
            try:
                entries = os.scandir(tmp)
            except (FileNotFoundError, NotADirectoryError, PermissionError):
                continue
            with entries:
                for entry in entries:
                    examined += 1
                    if examined > max_examined:
                        return removed
                    try:
                        st = entry.stat(follow_symlinks=False)
                        if stat.S_ISDIR(st.st_mode) or _age(st, now) <= max_age:
                            continue
                        os.unlink(entry.path)
                    except FileNotFoundError:
                        continue
                    removed.append((entry.path, _age(st, now)))
                    removed_here = True
            if removed_here:
                fsync_directory(tmp)
    return removed


class MaildirTmpCleaner(Service):
    """
    Sweeps the C{tmp/} directories of C{maildirs()} at start (after
    C{start_delay} seconds) and every C{interval} seconds; each removal is
    logged.

    @param maildirs: the Maildirs the server knows now (called on the
        reactor thread before each sweep).
    @param reactor: C{IReactorTime} and C{IReactorThreads}.
    """

    def __init__(
        self,
        maildirs: Callable[[], Iterable[str]],
        reactor: Any,
        interval: float = SWEEP_INTERVAL,
        start_delay: float = 0.0,
        max_age: float = TMP_MAX_AGE,
    ) -> None:
        self.maildirs = maildirs
        self.reactor = reactor
        self.max_age = max_age
        self.start_delay = start_delay
        self.task = PeriodicTask("Maildir tmp/ cleanup", self.run, interval, reactor)

    def startService(self) -> None:
        super().startService()
        self.task.start(delay=self.start_delay)

    def stopService(self) -> None:
        super().stopService()
        self.task.stop()

    def run(self) -> Deferred[list[tuple[str, float]]]:
        """One sweep now; fires with the removals."""
        maildirs = list(self.maildirs())
        d = deferToThreadPool(
            self.reactor, self.reactor.getThreadPool(), sweep, maildirs, self.reactor.seconds(), self.max_age
        )

        def removed(found: list[tuple[str, float]]) -> list[tuple[str, float]]:
            for path, age in found:
                log.warn(
                    "removed crash leftover {path} ({hours:.0f} hours old) from a Maildir tmp/",
                    path=path,
                    hours=age / 3600,
                )
            return found

        return d.addCallback(removed)
