"""
Pure: when to try a deferred message again, and when to give up on it.

Postfix's behaviour: the delay between attempts starts at
C{minimal_backoff_time} and doubles after each failed attempt, never more
than C{maximal_backoff_time}; a message that still fails after
C{maximal_queue_lifetime} (C{bounce_queue_lifetime} for null-sender mail,
which is usually a bounce itself) is returned to its sender.
"""

from __future__ import annotations

#: Doubling stops well before a float overflows.
_MAX_DOUBLINGS = 62


def backoff(attempts: int, minimal_backoff: float, maximal_backoff: float) -> float:
    """
    The delay after C{attempts} failed attempts (1 for the first failure).

    >>> [backoff(n, 300, 4000) for n in (1, 2, 3, 4, 5)]
    [300, 600, 1200, 2400, 4000]
    """
    if minimal_backoff <= 0:
        raise ValueError("minimal_backoff must be positive")
    maximal_backoff = max(maximal_backoff, minimal_backoff)
    doublings = min(max(attempts, 1) - 1, _MAX_DOUBLINGS)
    return min(minimal_backoff * (2**doublings), maximal_backoff)


def next_attempt(
    attempts: int, now: float, minimal_backoff: float, maximal_backoff: float
) -> float:
    """The time of the next attempt after C{attempts} failed ones, seen at C{now}."""
    return now + backoff(attempts, minimal_backoff, maximal_backoff)


def expired(arrival: float, now: float, maximal_queue_lifetime: float) -> bool:
    """
    True when a message that arrived at C{arrival} has been queued too long.

    A lifetime of 0 means "try once": the first temporary failure expires it,
    as in Postfix.
    """
    return now - arrival >= maximal_queue_lifetime


def queue_lifetime(sender: str, maximal_queue_lifetime: float, bounce_queue_lifetime: float) -> float:
    """The lifetime that applies to a message from C{sender} (C{""} is the null sender)."""
    return bounce_queue_lifetime if sender == "" else maximal_queue_lifetime
