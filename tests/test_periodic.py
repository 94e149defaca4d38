"""Tests for mailserver.periodic: a periodic task survives any failure and logs it once."""

from __future__ import annotations

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from mailserver.periodic import PeriodicTask


class PeriodicTaskTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.calls = 0
        self.outcomes: list[object] = []

    def function(self):
        self.calls += 1
        outcome = self.outcomes.pop(0) if self.outcomes else None
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def test_regression_one_error_does_not_stop_the_loop(self) -> None:
        """An EMFILE (raised or as a failed Deferred) is logged and the next tick runs."""
        task = PeriodicTask("hold release", self.function, 5, self.clock)
        self.outcomes = [OSError(24, "Too many open files"), fail(OSError(24, "Too many open files")), None]
        with capturedLogs() as events:
            task.start(now=True)
            self.clock.advance(5)
            self.clock.advance(5)
            self.clock.advance(5)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        self.assertEqual(self.calls, 4)
        self.assertTrue(task.running)
        failures = [e for e in events if "log_failure" in e]
        self.assertEqual(len(failures), 1)  # the same error twice: logged once
        self.assertEqual(failures[0]["task"], "hold release")
        self.assertTrue(any("works again" in e["log_format"] for e in events))
        task.stop()
        self.assertFalse(task.running)

    def test_changed_error_and_error_after_recovery_are_logged(self) -> None:
        task = PeriodicTask("pickup", self.function, 1, self.clock)
        self.outcomes = [ValueError("a"), ValueError("a"), KeyError("b"), None, ValueError("a")]
        with capturedLogs() as events:
            task.start(now=True)
            self.clock.pump([1] * 4)
        self.assertEqual(len(self.flushLoggedErrors(ValueError, KeyError)), 3)
        self.assertEqual(self.calls, 5)
        self.assertEqual(len([e for e in events if "log_failure" in e]), 3)
        self.assertEqual(task.failures, 1)

    def test_runs_do_not_overlap(self) -> None:
        pending: Deferred[None] = Deferred()
        self.outcomes = [pending]
        task = PeriodicTask("queue run", self.function, 1, self.clock)
        task.start(now=True)
        self.clock.pump([1, 1, 1])
        self.assertEqual(self.calls, 1)
        pending.errback(RuntimeError("late failure"))
        self.flushLoggedErrors(RuntimeError)
        self.clock.advance(1)
        self.assertEqual(self.calls, 2)
        task.stop()

    def test_start_delay_staggers_the_first_run(self) -> None:
        task = PeriodicTask("cleanup", self.function, 100, self.clock)
        task.start(delay=7)
        self.assertTrue(task.running)
        self.clock.advance(6)
        self.assertEqual(self.calls, 0)
        self.clock.advance(1)
        self.assertEqual(self.calls, 1)
        self.clock.advance(100)
        self.assertEqual(self.calls, 2)
        task.stop()
        self.clock.advance(1000)
        self.assertEqual(self.calls, 2)

    def test_stop_during_delay(self) -> None:
        task = PeriodicTask("cleanup", self.function, 100, self.clock)
        task.start(delay=7)
        task.stop()
        self.assertFalse(task.running)
        self.clock.advance(1000)
        self.assertEqual(self.calls, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_success_value_is_ignored(self) -> None:
        self.outcomes = [succeed(3), 4]
        task = PeriodicTask("x", self.function, 1, self.clock)
        task.start(now=True)
        self.clock.advance(1)
        self.assertEqual((self.calls, task.failures), (2, 0))
        task.stop()


class BusyTests(SynchronousTestCase):
    def test_busy_while_a_run_is_in_progress(self) -> None:
        clock = Clock()
        pending: list[Deferred] = []

        def run() -> Deferred:
            pending.append(Deferred())
            return pending[-1]

        task = PeriodicTask("t", run, 10, clock)
        self.assertFalse(task.busy)
        task.start(now=True)
        self.assertTrue(task.busy)
        pending[-1].callback(None)
        self.assertFalse(task.busy)
        task.stop()
