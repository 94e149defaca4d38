"""The store's writer threads (L{mailserver.store.writers.WriterThreads}): Twisted's pool contract, leaner."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from twisted.internet import reactor as global_reactor
from twisted.internet.defer import Deferred, DeferredList
from twisted.trial.unittest import SynchronousTestCase, TestCase

from mailserver.store import writers as writers_module
from mailserver.store.maildir import MaildirStore
from mailserver.store.writers import WriterThreads
from tests.harness import RunningServer


class Triggers:
    """The part of a reactor WriterThreads uses: records its system event triggers."""

    def __init__(self) -> None:
        self.added: list[tuple] = []

    def addSystemEventTrigger(self, phase: str, event: str, callable: Any) -> object:
        self.added.append((phase, event, callable))
        return len(self.added)


class Results:
    """onResult for WriterThreads: (ok, result, thread) per call, and an event once C{expected} came."""

    def __init__(self, expected: int) -> None:
        self.got: list[tuple[bool, Any, threading.Thread]] = []
        self.expected = expected
        self.done = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, ok: bool, result: Any) -> None:
        with self._lock:
            self.got.append((ok, result, threading.current_thread()))
            if len(self.got) >= self.expected:
                self.done.set()


class WriterThreadsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.triggers = Triggers()
        self.writers = WriterThreads(self.triggers, size=2, name="test-writer")
        self.addCleanup(self.writers.stop)

    def test_runs_work_off_this_thread_with_its_outcome(self) -> None:
        """As C{ThreadPool.callInThreadWithCallback}: (True, result) or (False, Failure), in a worker thread."""
        results = Results(2)
        self.writers.callInThreadWithCallback(results, lambda a, b=0: a + b, 2, b=3)
        self.writers.callInThreadWithCallback(results, lambda: 1 / 0)
        self.assertTrue(results.done.wait(10))
        outcomes = sorted((ok, ok and result) for ok, result, _ in results.got)
        self.assertEqual(outcomes, [(False, False), (True, 5)])
        failure = next(result for ok, result, _ in results.got if not ok)
        self.assertTrue(failure.check(ZeroDivisionError))
        for _, _, thread in results.got:
            self.assertIsNot(thread, threading.current_thread())
            self.assertTrue(thread.name.startswith("test-writer-"))
        self.assertEqual(self.triggers.added, [("during", "shutdown", self.writers.stop)])

    def test_at_most_size_threads(self) -> None:
        release = threading.Event()
        running: set[str] = set()

        def work() -> None:
            running.add(threading.current_thread().name)
            release.wait(10)

        results = Results(6)
        for _ in range(6):
            self.writers.callInThreadWithCallback(results, work)
        time.sleep(0.05)
        self.assertLessEqual(len(self.writers._threads), 2)
        release.set()
        self.assertTrue(results.done.wait(10))
        self.assertLessEqual(len(running), 2)
        self.assertEqual(len(self.triggers.added), 1)  # one shutdown trigger for all

    def test_stop_finishes_given_work_then_drops_new_work(self) -> None:
        results = Results(3)
        for n in range(3):
            self.writers.callInThreadWithCallback(results, time.sleep, 0.01 * n)
        threads = list(self.writers._threads)
        self.writers.stop()
        self.assertEqual(len(results.got), 3)
        self.assertFalse(any(thread.is_alive() for thread in threads))
        self.writers.callInThreadWithCallback(results, lambda: None)
        time.sleep(0.05)
        self.assertEqual(len(results.got), 3)

    def test_idle_threads_end_and_new_work_starts_one(self) -> None:
        self.patch(writers_module, "IDLE_SECONDS", 0.05)
        results = Results(1)
        self.writers.callInThreadWithCallback(results, lambda: "first")
        self.assertTrue(results.done.wait(10))
        first = list(self.writers._threads)
        deadline = time.monotonic() + 10
        while self.writers._threads and time.monotonic() < deadline:
            time.sleep(0.01)
        self.assertEqual(self.writers._threads, [])
        for thread in first:
            thread.join(5)
            self.assertFalse(thread.is_alive())
        again = Results(1)
        self.writers.callInThreadWithCallback(again, lambda: "second")
        self.assertTrue(again.done.wait(10))
        self.assertEqual(again.got[0][:2], (True, "second"))

    def test_failing_result_handler_logged_and_thread_goes_on(self) -> None:
        def broken(ok: bool, result: Any) -> None:
            raise RuntimeError("handler")

        self.writers.callInThreadWithCallback(broken, lambda: None)
        results = Results(1)
        self.writers.callInThreadWithCallback(results, lambda: "after")
        self.assertTrue(results.done.wait(10))
        self.assertEqual(results.got[0][:2], (True, "after"))
        self.writers.stop()
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class StoreWithWriterThreadsTests(TestCase):
    """The store delivers through WriterThreads as through Twisted's pool (real reactor and threads)."""

    def test_deliveries_in_writer_threads(self) -> Deferred:
        writers = WriterThreads(Triggers(), size=2, name="store-writer")
        self.addCleanup(writers.stop)
        base = os.path.abspath(self.mktemp())
        store = MaildirStore(global_reactor, "mx.example.com", threadpool=writers)
        threads: list[str] = []
        real_fsync = os.fsync

        def fsync(fd: int) -> None:
            threads.append(threading.current_thread().name)
            real_fsync(fd)

        self.patch(os, "fsync", fsync)
        boxes = [os.path.join(base, f"box{n % 3}") for n in range(20)]
        deliveries = [store.deliver(b"Subject: %d\n\nbody\n" % n, [(box, b"Delivered-To: x\n")])
                      for n, box in enumerate(boxes)]

        def check(outcomes: list[tuple[bool, Any]]) -> None:
            self.assertTrue(all(ok for ok, _ in outcomes), outcomes)
            stored = sum(len(os.listdir(os.path.join(base, f"box{n}", "new"))) for n in range(3))
            self.assertEqual(stored, 20)
            self.assertTrue(threads)
            self.assertTrue(all(name.startswith("store-writer-") for name in threads), set(threads))

        return DeferredList(deliveries, consumeErrors=True).addCallback(check)


class WiringTests(TestCase):
    def test_server_store_has_writer_threads(self) -> None:
        """The daemon's store runs its group commits in WriterThreads, as many as it runs at once."""
        parts = RunningServer(self).service.server
        self.assertIs(parts.store._threadpool, parts.store_writers)
        self.assertEqual(parts.store_writers._size, parts.store.max_writers)


class InsideTests(SynchronousTestCase):
    def test_same_as_os_path_join(self) -> None:
        """The store's cheaper join gives os.path.join's path for every kind of Maildir path."""
        from mailserver.store.maildir import _inside

        for directory in ("/m/alice/Maildir", "/m/alice/Maildir/", "rel/box", "box", "/", "//m//x/", "", ".Junk"):
            for sub in ("tmp", "new", "cur"):
                for name in ("1764950000.M1P2Q3.mx,S=10,W=12", "a:2,FS"):
                    self.assertEqual(_inside(directory, sub, name), os.path.join(directory, sub, name))


class NoTriggersTests(SynchronousTestCase):
    def test_clock_without_system_events(self) -> None:
        """With a reactor that has no system event triggers (a test clock) the threads still run the work."""
        from twisted.internet.task import Clock

        writers = WriterThreads(Clock(), size=1)
        self.addCleanup(writers.stop)
        results = Results(1)
        writers.callInThreadWithCallback(results, lambda: "done")
        self.assertTrue(results.done.wait(10))
        self.assertEqual(results.got[0][:2], (True, "done"))
