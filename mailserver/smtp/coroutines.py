"""
Running a command's coroutine without Deferred machinery when it never
waits.  Most MAIL and RCPT commands await only Deferreds that have already
fired (cached DNS, in-memory tables): such a coroutine runs to its end in
one C{send}, and only one that really waits pays for
C{Deferred.fromCoroutine}.
"""

from __future__ import annotations

import types
from typing import Any, Coroutine, Generator

from twisted.internet.defer import Deferred


def run_now(coroutine: Coroutine[Any, Any, Any]) -> Deferred[Any] | None:
    """
    Start C{coroutine} at once.  If it ends without waiting, return None
    (its return value is dropped) or raise what it raised; if it waits,
    return a Deferred of its outcome, as C{Deferred.fromCoroutine} would
    (cancelling it throws CancelledError into the coroutine).
    """
    try:
        awaited = coroutine.send(None)
    except StopIteration:
        return None
    return Deferred.fromCoroutine(_resume(coroutine, awaited))


@types.coroutine
def _resume(coroutine: Coroutine[Any, Any, Any], awaited: Any) -> Generator[Any, Any, Any]:
    """The rest of C{coroutine}, suspended on C{awaited}: each value and error passed through."""
    while True:
        try:
            sent = yield awaited
        except GeneratorExit:
            coroutine.close()
            raise
        except BaseException as error:  # CancelledError and friends: the coroutine decides
            try:
                awaited = coroutine.throw(error)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                awaited = coroutine.send(sent)
            except StopIteration as stop:
                return stop.value
