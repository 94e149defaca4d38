"""
Threads of the store's writers (L{mailserver.store.maildir.MaildirStore}).

The store asks a pool for one thing, C{callInThreadWithCallback}, once per
group commit.  Twisted's C{ThreadPool} hands each call through a
coordinator, a C{Team} and a condition-variable queue, all in Python on the
reactor thread and the worker: about 5% of the reactor's time at 1 KB
messages (bench/README.rst, "Fifth pass").  L{WriterThreads} does the same
with a C{queue.SimpleQueue} (C code) and a few threads of its own.

Threads start when work arrives and end after L{IDLE_SECONDS} without any;
the reactor's shutdown stops them ("during", as it stops its own pool),
after the work already given to them.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable

from twisted.logger import Logger
from twisted.python.failure import Failure

log = Logger(namespace="mailserver.store")

#: A writer thread with nothing to do for this long ends (a new one starts with the next work).
IDLE_SECONDS = 30.0


class WriterThreads:
    """
    At most C{size} threads running what L{callInThreadWithCallback} is
    given, in order; C{reactor} (its system event triggers) stops them at
    shutdown.
    """

    def __init__(self, reactor: Any, size: int = 2, name: str = "maildir-writer") -> None:
        self._reactor = reactor
        self._size = size
        self._name = name
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._stopped = False
        self._trigger: Any = None  # the shutdown trigger, added with the first thread

    def callInThreadWithCallback(
        self, onResult: Callable[[bool, Any], object], func: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> None:
        """
        Run C{func(*args, **kwargs)} in a writer thread, then, there,
        C{onResult(True, result)} or C{onResult(False, Failure)}: Twisted's
        C{ThreadPool} contract (as there, work given after L{stop} is dropped).
        """
        with self._lock:
            if self._stopped:
                return
            self._queue.put((onResult, func, args, kwargs))
            if len(self._threads) < self._size:  # a thread that ends leaves this list itself
                self._start()

    def _start(self) -> None:
        """One more thread (the lock held)."""
        if self._trigger is None:
            add = getattr(self._reactor, "addSystemEventTrigger", None)  # a test clock has none
            self._trigger = add("during", "shutdown", self.stop) if add is not None else False
        thread = threading.Thread(target=self._work, name=f"{self._name}-{len(self._threads)}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def _work(self) -> None:
        get = self._queue.get
        while True:
            try:
                item = get(timeout=IDLE_SECONDS)
            except queue.Empty:
                with self._lock:  # work is put under the lock: none can arrive unseen now
                    if self._queue.empty():
                        self._threads.remove(threading.current_thread())
                        return
                continue
            if item is None:  # L{stop}
                return
            onResult, func, args, kwargs = item
            del item
            try:
                result = func(*args, **kwargs)
                ok = True
            except BaseException:
                result, ok = Failure(), False
            del func, args, kwargs
            try:
                onResult(ok, result)
            except BaseException:
                log.failure("writer thread: result handler failed")
            del onResult, result

    def stop(self) -> None:
        """Finish the work given so far, then end every thread (blocking, as C{ThreadPool.stop})."""
        with self._lock:
            self._stopped = True
            threads = list(self._threads)
            for _ in threads:
                self._queue.put(None)
        for thread in threads:
            thread.join()
