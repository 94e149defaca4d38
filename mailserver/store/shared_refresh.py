"""
Overlapping refreshes (and \\Recent claims) of one folder index share their
thread trips.

When a delivery wakes every IDLE session on a folder, each used to refresh
the folder's index in a thread of its own: 5,000 sessions made 5,000 trips
to the pool, each re-listing a directory whose fresh mtime cannot be
trusted (issue 15: the last ``* N EXISTS`` after 5 s).  Here a refresh
asked for while one is running waits for the next one, which starts as
soon as the running one ends and serves every caller that arrived
meanwhile: each caller still gets a refresh that began after its request,
and a burst of N callers costs two trips.  Claims of \\Recent go the same
way, the claimed UIDs going to the first caller of a trip and nothing to the
others, as if they had claimed just after it.
"""

from __future__ import annotations

import weakref
from typing import Any, Callable

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

#: C{run(f) -> Deferred}: runs blocking C{f} in a thread pool.
Runner = Callable[[Callable[[], Any]], Deferred]


class _Flight:
    """
    The state of one index's C{method} calls, on the reactor thread.

    @param first_only: the result goes to the first caller of a trip, an
        empty set to the others (claims); else the same to all.
    """

    def __init__(self, index: Any, method: str, first_only: bool) -> None:
        self.index = weakref.ref(index)
        self.method = method
        self.first_only = first_only
        self.running = False
        self.waiting: list[Deferred] = []
        self.run: Runner | None = None

    def request(self, run: Runner) -> Deferred:
        d: Deferred = Deferred()
        self.waiting.append(d)
        self.run = run
        if not self.running:
            self._start()
        return d

    def _start(self) -> None:
        index = self.index()
        batch, self.waiting = self.waiting, []
        if index is None:  # cannot happen while a caller holds the index; be safe
            for d in batch:
                d.errback(Failure(RuntimeError("folder index went away")))
            return
        self.running = True
        self.run(getattr(index, self.method)).addBoth(self._done, batch)

    def _done(self, result: Any, batch: list[Deferred]) -> None:
        self.running = False
        for position, d in enumerate(batch):
            if isinstance(result, Failure):
                d.errback(result)
            else:
                d.callback(set() if self.first_only and position else result)
        if self.waiting:
            self._start()


_flights: weakref.WeakKeyDictionary[Any, dict[str, _Flight]] = weakref.WeakKeyDictionary()


def _flight(index: Any, method: str, first_only: bool) -> _Flight:
    flights = _flights.setdefault(index, {})
    if method not in flights:
        flights[method] = _Flight(index, method, first_only)
    return flights[method]


def refresh(index: Any, run: Runner) -> Deferred:
    """C{index.refresh()} through C{run}, shared with overlapping callers; fires with the snapshot."""
    return _flight(index, "refresh", False).request(run)


def claim_recent(index: Any, run: Runner) -> Deferred:
    """C{index.claim_recent()} through C{run}; overlapping callers after the first of a trip get C{set()}."""
    return _flight(index, "claim_recent", True).request(run)
