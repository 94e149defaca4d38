"""A task.Clock that is also a reactor with threads: "threaded" work runs inline or when the test says."""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.interfaces import IReactorThreads
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from zope.interface import implementer


class QueuedThreadPool:
    """
    Records work given to the "thread pool"; runs it at once when
    C{synchronous}, otherwise when the test calls L{run}.
    """

    def __init__(self, synchronous: bool = True) -> None:
        self.synchronous = synchronous
        self.calls: list[tuple[Callable, tuple]] = []
        self.pending: list[tuple[Callable, Callable, tuple, dict]] = []

    def callInThreadWithCallback(self, onResult, func, *args, **kwargs) -> None:
        self.calls.append((func, args))
        self.pending.append((onResult, func, args, kwargs))
        if self.synchronous:
            self.run()

    def run(self) -> None:
        while self.pending:
            self.run_next()

    def run_next(self) -> None:
        """Run the oldest piece of work waiting."""
        onResult, func, args, kwargs = self.pending.pop(0)
        try:
            result: Any = func(*args, **kwargs)
        except Exception:
            onResult(False, Failure())
        else:
            onResult(True, result)


@implementer(IReactorThreads)
class ThreadedClock(Clock):
    """
    C{IReactorTime} from task.Clock plus the parts of C{IReactorThreads} that
    C{deferToThreadPool} and the table loader use.
    """

    def __init__(self, synchronous: bool = True) -> None:
        super().__init__()
        self.pool = QueuedThreadPool(synchronous)

    def getThreadPool(self) -> QueuedThreadPool:
        return self.pool

    def callFromThread(self, f, *args, **kwargs) -> None:
        f(*args, **kwargs)
