"""
The deadlines of one DATA phase, on an injected clock.

* C{smtpd_data_time_limit}: the whole DATA phase, 354 to end of data.
* C{smtpd_min_data_rate} (Postfix's rule): the deadline starts
  C{smtpd_timeout} away; every N bytes received move it N/rate seconds
  later, but never further than C{smtpd_timeout} from now.  A client that
  keeps above the rate never meets it; one dripping a byte a second meets it
  about C{smtpd_timeout} after its last good burst.

While our own spool writer holds the client back (L{pause}), the clock
does not count against the client.  One timer per DATA phase, re-armed
lazily when it fires, so receiving data costs no timer work; the session
keeps it from one DATA phase to the next (L{DataDeadline.stop},
L{DataDeadline.restart}).
"""

from __future__ import annotations

from typing import Any, Callable


class DataDeadline:
    def __init__(
        self,
        clock: Any,
        expired: Callable[[str], object],
        time_limit: float,
        timeout: float,
        min_rate: float,
    ) -> None:
        self.clock = clock
        self._expired = expired
        self._time_limit = time_limit
        self._timeout = timeout
        self._min_rate = min_rate
        self._call: Any = None
        self.restart()

    def restart(self) -> None:
        """
        A new DATA phase starts now.  A timer still pending from the last
        phase (see L{stop}) is kept, moved earlier if it would be late: when
        it fires before the deadline it re-arms itself, as it always does.
        """
        now = self.clock.seconds()
        self._limit_at = now + self._time_limit if self._time_limit > 0 else None
        self._rate_at = now + self._timeout if self._min_rate > 0 and self._timeout > 0 else None
        self._paused_at: float | None = None
        call = self._call
        if call is None or not call.active():
            self._schedule()
            return
        due = self._due()
        if due is not None and call.getTime() > due:
            call.reset(max(0.0, due - now))

    def stop(self) -> None:
        """
        The DATA phase ended: nothing is due.  The timer is left to fire
        idle (or to serve the next phase, L{restart}): one DelayedCall per
        session instead of one per message.  L{cancel} drops it.
        """
        self._limit_at = self._rate_at = self._paused_at = None

    def received(self, count: int) -> None:
        """C{count} more bytes of message content arrived."""
        if self._rate_at is not None:
            now = self.clock.seconds()
            self._rate_at = min(self._rate_at + count / self._min_rate, now + self._timeout)

    def pause(self) -> None:
        """We stopped reading (the spool writer is behind): time does not count from now."""
        if self._paused_at is None:
            self._paused_at = self.clock.seconds()

    def resume(self) -> None:
        if self._paused_at is None:
            return
        stalled = self.clock.seconds() - self._paused_at
        self._paused_at = None
        if self._limit_at is not None:
            self._limit_at += stalled
        if self._rate_at is not None:
            self._rate_at += stalled
        if self._call is None:
            self._schedule()

    def cancel(self) -> None:
        call, self._call = self._call, None
        if call is not None and call.active():
            call.cancel()
        self._limit_at = self._rate_at = None

    def _due(self) -> float | None:
        limit, rate = self._limit_at, self._rate_at
        if limit is None or rate is None:
            return rate if limit is None else limit
        return min(limit, rate)

    def _schedule(self) -> None:
        due = self._due()
        if due is not None:
            self._call = self.clock.callLater(max(0.0, due - self.clock.seconds()), self._fire)

    def _fire(self) -> None:
        self._call = None
        if self._paused_at is not None:
            return  # resume() re-arms
        now = self.clock.seconds()
        if self._limit_at is not None and self._limit_at <= now:
            self.cancel()
            self._expired("smtpd_data_time_limit")
        elif self._rate_at is not None and self._rate_at <= now:
            self.cancel()
            self._expired("smtpd_min_data_rate")
        else:
            self._schedule()
