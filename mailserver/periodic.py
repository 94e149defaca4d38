"""
A periodic task that survives its own failures.

A bare C{LoopingCall} stops for good when its function raises or returns a
failed Deferred: one "too many open files" and hold releases, pickup or
the queue runner never run again until a restart.  L{PeriodicTask} catches
every error, logs it once (again only when the error changes, and a line
when the task recovers), and keeps the schedule.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure


def _signature(failure: Failure) -> tuple[str, str]:
    """What makes two failures "the same error" for logging."""
    return (getattr(failure.type, "__qualname__", repr(failure.type)), failure.getErrorMessage())


class PeriodicTask:
    """
    Call C{function} every C{interval} seconds on C{clock}; a run that
    returns a Deferred is waited for (runs never overlap) and its result is
    consumed, so C{function} must return a Deferred of its own, not one it
    shares with other callers.

    @param name: what the log lines call the task.
    @param function: no arguments; may return a Deferred.
    """

    log = Logger()

    def __init__(self, name: str, function: Callable[[], Any], interval: float, clock: IReactorTime) -> None:
        self.name = name
        self.interval = interval
        self._function = function
        self._clock = clock
        self._loop = LoopingCall(self._call)
        self._loop.clock = clock
        self._delayed: IDelayedCall | None = None
        self._last_error: tuple[str, str] | None = None
        #: Failed runs since the last successful one.
        self.failures = 0

    @property
    def running(self) -> bool:
        """True from L{start} to L{stop}, including a start delay."""
        return self._loop.running or self._delayed is not None

    @property
    def busy(self) -> bool:
        """True while a run is in progress (its Deferred has not fired yet)."""
        return self._loop.running and self._loop.call is None

    def start(self, now: bool = False, delay: float | None = None) -> None:
        """
        Start the schedule: the first run now (C{now}), after C{delay}
        seconds (to stagger tasks), or after one interval.
        """
        if self.running:
            return
        if delay is not None:
            self._delayed = self._clock.callLater(delay, self._start_loop, True)
        else:
            self._start_loop(now)

    def _start_loop(self, now: bool) -> None:
        self._delayed = None
        # _call never fails, so this Deferred only fires when stopped.
        self._loop.start(self.interval, now=now)

    def stop(self) -> None:
        """Stop the schedule (a run in progress finishes)."""
        if self._delayed is not None:
            self._delayed.cancel()
            self._delayed = None
        if self._loop.running:
            self._loop.stop()

    def _call(self) -> Deferred[None]:
        return maybeDeferred(self._function).addCallbacks(self._succeeded, self._failed)

    def _succeeded(self, _: object) -> None:
        if self.failures:
            self.log.info(
                "{task} works again after {count} failed run(s)", task=self.name, count=self.failures
            )
        self.failures = 0
        self._last_error = None

    def _failed(self, failure: Failure) -> None:
        self.failures += 1
        signature = _signature(failure)
        if signature != self._last_error:
            self._last_error = signature
            self.log.failure(
                "{task} failed (retrying every {interval}s; logged again only if the error changes)",
                failure,
                task=self.name,
                interval=self.interval,
            )
