"""
In-process "this Maildir folder changed" events.

The delivery store calls L{MailboxNotifier.changed} after each delivery,
IMAP sessions call it after they change a folder, and a poll of the
``new/`` and ``cur/`` mtimes of every watched folder (once a second by
default) catches other programs (POP3 in another process, Dovecot's LDA,
a user's script).  Subscribers (IMAP IDLE sessions) are called on the
reactor thread.
"""

from __future__ import annotations

import os
from typing import Callable, Iterable

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from mailserver.interfaces import IMailboxNotifier
from mailserver.periodic import PeriodicTask

Callback = Callable[[str], object]

#: Default seconds between two polls of the watched folders.
POLL_INTERVAL = 1.0


def folder_key(path: str) -> str:
    """The key one folder is known by: an absolute, normalised path."""
    return os.path.normpath(os.path.abspath(path))


def _stamp(folder: str) -> tuple[int | None, int | None]:
    stamps = []
    for sub in ("new", "cur"):
        try:
            stamps.append(os.stat(os.path.join(folder, sub)).st_mtime_ns)
        except OSError:
            stamps.append(None)
    return (stamps[0], stamps[1])


@implementer(IMailboxNotifier)
class MailboxNotifier:
    """
    Tell subscribers when a Maildir folder changed.

    @param clock: drives the periodic poll (the reactor, or a C{task.Clock}).
    @param interval: seconds between polls.
    @param stat: C{stat(folder) -> stamp}, replaceable in tests.
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        interval: float = POLL_INTERVAL,
        stat: Callable[[str], object] = _stamp,
    ) -> None:
        self._clock = clock
        self._interval = interval
        self._stat = stat
        self._subscribers: dict[str, list[Callback]] = {}
        self._stamps: dict[str, object] = {}
        self._loop: PeriodicTask | None = None

    def subscribe(self, path: str, callback: Callback) -> Callable[[], None]:
        """
        Call C{callback(key)} whenever the folder at C{path} changes.

        Watching starts now (the poll compares against the current state);
        the returned function unsubscribes and may be called more than once.
        """
        key = folder_key(path)
        callbacks = self._subscribers.setdefault(key, [])
        if not callbacks:
            self._stamps[key] = self._stat(key)
        callbacks.append(callback)
        self._ensure_polling()
        done = False

        def unsubscribe() -> None:
            nonlocal done
            if done:
                return
            done = True
            remaining = self._subscribers.get(key, [])
            if callback in remaining:
                remaining.remove(callback)
            if not remaining:
                self._subscribers.pop(key, None)
                self._stamps.pop(key, None)
            if not self._subscribers:
                self._stop_polling()

        return unsubscribe

    def changed(self, paths: Iterable[str]) -> None:
        """Folders at C{paths} changed: call their subscribers now."""
        if not self._subscribers:  # nobody in IDLE: the common case for a delivery
            return
        for path in dict.fromkeys(folder_key(p) for p in paths):
            if path in self._subscribers:
                self._stamps[path] = self._stat(path)
                self._fire(path)

    def poll(self) -> None:
        """Compare every watched folder's stamp with the last one seen."""
        for key in list(self._subscribers):
            stamp = self._stat(key)
            if stamp != self._stamps.get(key):
                self._stamps[key] = stamp
                self._fire(key)

    def _fire(self, key: str) -> None:
        for callback in list(self._subscribers.get(key, ())):
            try:
                callback(key)
            except Exception:
                self.log.failure("mailbox change listener failed for {folder}", folder=key)

    def _ensure_polling(self) -> None:
        if self._loop is None:
            self._loop = PeriodicTask("mailbox change poll", self.poll, self._interval, self._clock)
        self._loop.start()

    def _stop_polling(self) -> None:
        if self._loop is not None:
            self._loop.stop()

    def stop(self) -> None:
        """Stop polling (service shutdown); subscriptions stay."""
        self._stop_polling()

    @property
    def watched(self) -> list[str]:
        return list(self._subscribers)

    @property
    def subscriptions(self) -> int:
        """Subscribers in all (IMAP sessions in IDLE)."""
        return sum(len(callbacks) for callbacks in self._subscribers.values())
