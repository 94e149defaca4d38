"""
The bounds every fuzzed call must keep: only the documented errors, under a
second of CPU for an input under 10 KB, bounded memory.
"""

from __future__ import annotations

import contextlib
import itertools
import signal
import threading
import time
import tracemalloc
from typing import Any, Callable, Iterator, TypeVar

T = TypeVar("T")

#: An input of this size or more is exempt from the time bound.
SMALL_INPUT = 10 * 1024
#: CPU seconds one call on a small input may take.
CPU_LIMIT = 1.0
#: CPU seconds after which a call is interrupted (an endless loop would
#: otherwise hang the suite, and may eat the machine's memory on the way).
CPU_HARD_LIMIT = 3.0
#: Peak bytes allocated while parsing a small input.
MEMORY_LIMIT = 64 * 1024 * 1024
#: Memory is traced on one call in this many (tracing slows Python down).
MEMORY_SAMPLE = 8

_calls = itertools.count()


class BoundExceeded(AssertionError):
    """A call was too slow or used too much memory."""


def size_of(value: Any) -> int:
    """The size of a parser input: bytes, str or a list of them."""
    if isinstance(value, (bytes, str)):
        return len(value)
    if isinstance(value, (list, tuple)):
        return sum(size_of(item) for item in value)
    return 0


@contextlib.contextmanager
def cpu_alarm(seconds: float) -> Iterator[None]:
    """
    Raise L{BoundExceeded} in the main thread once this process has used
    C{seconds} more CPU time (SIGPROF); a no-op off the main thread.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expired(signum: int, frame: object) -> None:
        raise BoundExceeded(f"interrupted after {seconds} s of CPU: an endless loop?")

    previous = signal.signal(signal.SIGPROF, expired)
    signal.setitimer(signal.ITIMER_PROF, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, previous)


def bounded(
    call: Callable[..., T],
    *args: Any,
    allowed: tuple[type[BaseException], ...] = (),
    hard_limit: float = CPU_HARD_LIMIT,
) -> T | None:
    """
    C{call(*args)}; an exception in C{allowed} gives None, any other
    propagates (hypothesis reports and shrinks it).  Raises
    L{BoundExceeded} when the bounds above are broken.

    The time bound is on process CPU time, and a call over it is timed a
    second time before failing, so a loaded machine does not make it flaky.
    A call on a small input is interrupted after C{hard_limit} CPU seconds.
    """
    size = size_of(args)
    small = size < SMALL_INPUT
    traced = small and next(_calls) % MEMORY_SAMPLE == 0 and not tracemalloc.is_tracing()
    if traced:
        tracemalloc.start()
    try:
        started = time.process_time()
        with cpu_alarm(hard_limit) if small else contextlib.nullcontext():
            result = _call(call, args, allowed)
        spent = time.process_time() - started
        if traced:
            peak = tracemalloc.get_traced_memory()[1]
            if peak > MEMORY_LIMIT:
                raise BoundExceeded(f"{call.__qualname__}: {peak} bytes at peak for a {size}-byte input")
    finally:
        if traced:
            tracemalloc.stop()
    if small and spent > CPU_LIMIT:
        started = time.process_time()
        with cpu_alarm(hard_limit):
            _call(call, args, allowed)
        again = time.process_time() - started
        if again > CPU_LIMIT:
            raise BoundExceeded(f"{call.__qualname__}: {spent:.2f} s, then {again:.2f} s of CPU for a {size}-byte input")
    return result


def _call(call: Callable[..., T], args: tuple[Any, ...], allowed: tuple[type[BaseException], ...]) -> T | None:
    try:
        return call(*args)
    except allowed:
        return None
