"""Tests for shared folder-index refreshes (IDLE wake-ups, issue 15)."""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from mailserver.store.shared_refresh import claim_recent, refresh


class FakeIndex:
    def __init__(self) -> None:
        self.generation = 0

    def refresh(self) -> int:
        self.generation += 1
        return self.generation


class ManualRunner:
    """Thread trips that wait until the test finishes them."""

    def __init__(self) -> None:
        self.pending: list[tuple[object, Deferred]] = []

    def __call__(self, f) -> Deferred:
        d: Deferred = Deferred()
        self.pending.append((f, d))
        return d

    def finish_one(self) -> None:
        f, d = self.pending.pop(0)
        try:
            result = f()
        except Exception as error:
            d.errback(error)
        else:
            d.callback(result)


class SharedRefreshTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.index = FakeIndex()
        self.run = ManualRunner()

    def test_regression_idle_wakeup_burst_costs_two_trips(self) -> None:
        """Issue 15: N sessions woken at once made N refreshes; now the first and one for the rest."""
        results = [refresh(self.index, self.run) for _ in range(5000)]
        self.assertEqual(len(self.run.pending), 1)
        self.run.finish_one()
        self.assertEqual(self.successResultOf(results[0]), 1)
        self.assertEqual(len(self.run.pending), 1)
        self.run.finish_one()
        self.assertEqual({self.successResultOf(d) for d in results[1:]}, {2})
        self.assertEqual(self.run.pending, [])
        self.assertEqual(self.index.generation, 2)

    def test_each_caller_gets_a_refresh_started_after_its_call(self) -> None:
        first = refresh(self.index, self.run)
        second = refresh(self.index, self.run)  # arrives while the first runs
        self.run.finish_one()
        self.assertEqual(self.successResultOf(first), 1)
        self.assertNoResult(second)
        self.run.finish_one()
        self.assertEqual(self.successResultOf(second), 2)

    def test_quiet_folder_refreshes_at_once(self) -> None:
        d = refresh(self.index, self.run)
        self.run.finish_one()
        self.assertEqual(self.successResultOf(d), 1)
        d = refresh(self.index, self.run)
        self.run.finish_one()
        self.assertEqual(self.successResultOf(d), 2)

    def test_failure_reaches_every_waiter_and_next_refresh_runs(self) -> None:
        def broken() -> int:
            raise OSError("disk gone")

        self.index.refresh = broken
        a, b = refresh(self.index, self.run), refresh(self.index, self.run)
        self.run.finish_one()
        self.failureResultOf(a, OSError)
        self.run.finish_one()
        self.failureResultOf(b, OSError)

    def test_indexes_are_independent(self) -> None:
        other = FakeIndex()
        refresh(self.index, self.run)
        refresh(other, self.run)
        self.assertEqual(len(self.run.pending), 2)


class FakeClaimIndex(FakeIndex):
    def __init__(self) -> None:
        super().__init__()
        self.new = {1, 2}

    def claim_recent(self) -> set[int]:
        claimed, self.new = self.new, set()
        return claimed


class SharedClaimTests(SynchronousTestCase):
    def test_regression_burst_of_claims_one_session_gets_recent(self) -> None:
        """Issue 15: each woken read-write session claimed \\Recent in a trip of its own."""
        index, run = FakeClaimIndex(), ManualRunner()
        first = claim_recent(index, run)
        later = [claim_recent(index, run) for _ in range(100)]
        run.finish_one()
        self.assertEqual(self.successResultOf(first), {1, 2})
        index.new |= {3}  # delivered after the first claim
        run.finish_one()
        self.assertEqual(run.pending, [])
        got = [self.successResultOf(d) for d in later]
        self.assertEqual(got[0], {3})
        self.assertEqual(got[1:], [set()] * 99)
