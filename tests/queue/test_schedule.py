"""Postfix's retry schedule and queue lifetimes."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from mailserver.queue.schedule import backoff, expired, next_attempt, queue_lifetime


class BackoffTests(SynchronousTestCase):
    def test_doubles_from_minimal_and_caps_at_maximal(self) -> None:
        self.assertEqual([backoff(n, 300, 4000) for n in range(1, 7)], [300, 600, 1200, 2400, 4000, 4000])

    def test_next_attempt_adds_backoff_to_now(self) -> None:
        self.assertEqual(next_attempt(1, 1000.0, 300, 4000), 1300.0)
        self.assertEqual(next_attempt(3, 1000.0, 300, 4000), 2200.0)

    def test_huge_attempt_counts_do_not_overflow(self) -> None:
        self.assertEqual(backoff(10_000, 300, 4000), 4000)

    def test_zero_attempts_count_as_first(self) -> None:
        self.assertEqual(backoff(0, 300, 4000), 300)

    def test_maximal_below_minimal_uses_minimal(self) -> None:
        self.assertEqual(backoff(5, 300, 100), 300)

    def test_minimal_must_be_positive(self) -> None:
        self.assertRaises(ValueError, backoff, 1, 0, 4000)


class LifetimeTests(SynchronousTestCase):
    def test_expired_after_lifetime(self) -> None:
        self.assertFalse(expired(0.0, 5 * 86400 - 1, 5 * 86400))
        self.assertTrue(expired(0.0, 5 * 86400, 5 * 86400))

    def test_zero_lifetime_means_try_once(self) -> None:
        self.assertTrue(expired(100.0, 100.0, 0))

    def test_null_sender_uses_bounce_queue_lifetime(self) -> None:
        self.assertEqual(queue_lifetime("", 500, 50), 50)
        self.assertEqual(queue_lifetime("a@example.com", 500, 50), 500)
