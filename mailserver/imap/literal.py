"""
Reading one IMAP literal in raw mode, against a deadline.

A client that drips a literal (one byte a second into a 50 MiB APPEND)
would otherwise hold its connection for ever: every byte resets the idle
timeout.  A literal must therefore arrive within C{deadline} seconds in
all (C{imap_literal_deadline}) and keep up a minimum rate
(C{imap_literal_min_rate}): after a grace of L{GRACE} seconds, each second
must be paid for by C{min_rate} octets received, as Postfix's
C{smtpd_min_data_rate} extends the DATA deadline.  On a breach the
session's C{expired} is called (it says BYE and closes; nothing is stored).
"""

from __future__ import annotations

from typing import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime

#: Seconds a literal may take before the minimum rate applies.
GRACE = 60.0


class LiteralReader:
    """Collects one literal of C{size} octets (twisted's rawDataReceived calls L{write})."""

    def __init__(
        self,
        size: int,
        done: Callable[[bytes], None],
        clock: IReactorTime | None = None,
        deadline: float = 0,
        min_rate: int = 0,
        expired: Callable[[], None] | None = None,
    ) -> None:
        self.size = size
        self.remaining = size
        self.chunks: list[bytes] = []
        self._done = done
        self._clock = clock
        self._deadline = deadline
        self._min_rate = min_rate
        self._expired = expired
        self._timer: IDelayedCall | None = None
        self._started = 0.0
        self.timed_out = False
        if clock is not None and expired is not None and size and (deadline > 0 or min_rate > 0):
            self._started = clock.seconds()
            self._schedule(self._started)

    def write(self, data: bytes) -> bytes | None:
        if self.timed_out:  # what still arrives is dropped
            return None
        if len(data) < self.remaining:
            self.chunks.append(data)
            self.remaining -= len(data)
            return None
        self.chunks.append(data[:self.remaining])
        rest = data[self.remaining:]
        self.remaining = 0
        self.cancel()
        self._done(b"".join(self.chunks))
        return rest

    def cancel(self) -> None:
        """Stop the deadline (literal complete, or the connection lost)."""
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _due(self) -> float:
        """When the literal runs out of time, given what has arrived so far."""
        due = float("inf")
        if self._deadline > 0:
            due = self._started + self._deadline
        if self._min_rate > 0:
            received = self.size - self.remaining
            due = min(due, self._started + GRACE + received / self._min_rate)
        return due

    def _schedule(self, now: float) -> None:
        self._timer = self._clock.callLater(max(0.0, self._due() - now), self._check)

    def _check(self) -> None:
        self._timer = None
        now = self._clock.seconds()
        if now < self._due():
            self._schedule(now)
            return
        self.timed_out = True
        self.chunks = []
        self._expired()
