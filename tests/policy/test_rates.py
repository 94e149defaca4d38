"""Anvil-style client rate limits (pure, times given)."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from mailserver.policy.rates import (
    RateLimiter, SlidingCounter, connection_error, message_error, warning_line,
)  # fmt: skip
from tests.config.helpers import build


class CounterTests(SynchronousTestCase):
    def test_sliding_window(self) -> None:
        """limit events within any unit; the oldest leaving the window frees a place."""
        counter = SlidingCounter(limit=3, unit=60)
        self.assertEqual([counter.hit("a", t).allowed for t in (0, 10, 20, 30)], [True, True, True, False])
        self.assertEqual(counter.hit("a", 30).count, 4)
        self.assertTrue(counter.hit("a", 60).allowed)  # the event at 0 has left the window
        self.assertFalse(counter.hit("a", 61).allowed)
        self.assertTrue(counter.hit("b", 61).allowed)
        self.assertEqual(counter.count("a", 61), 3)

    def test_no_limit(self) -> None:
        counter = SlidingCounter(limit=0, unit=60)
        self.assertTrue(all(counter.hit("a", 0).allowed for _ in range(1000)))
        self.assertEqual(len(counter), 0)

    def test_bounded_memory(self) -> None:
        """At most limit stamps per client and max_keys clients; idle ones are pruned."""
        counter = SlidingCounter(limit=5, unit=60, max_keys=10)
        for n in range(100):
            counter.hit(f"192.0.2.{n}", n)
        self.assertEqual(len(counter), 10)
        for _ in range(50):
            counter.hit("192.0.2.99", 100)
        self.assertLessEqual(len(counter._events["192.0.2.99"]), 5)
        self.assertEqual(counter.prune(200), 10)
        self.assertEqual(len(counter), 0)


class LimiterTests(SynchronousTestCase):
    def test_from_config(self) -> None:
        """Connections and messages counted apart; mynetworks exempt by default."""
        config, _ = build(
            "smtpd_client_connection_rate_limit = 2\nsmtpd_client_message_rate_limit = 1\n"
            "anvil_rate_time_unit = 30s\n"
        )
        limiter = RateLimiter.from_config(config)
        self.assertEqual([limiter.connection("192.0.2.1", 0).allowed for _ in range(3)], [True, True, False])
        self.assertEqual([limiter.message("192.0.2.1", 0).allowed for _ in range(2)], [True, False])
        self.assertTrue(limiter.connection("192.0.2.1", 30).allowed)
        self.assertTrue(all(limiter.connection("127.0.0.1", 0).allowed for _ in range(10)))
        self.assertTrue(all(limiter.message("::1", 0).allowed for _ in range(10)))
        self.assertFalse(limiter._exempt("not an address"))
        self.assertEqual(limiter.prune(100), 1 + 1)

    def test_replies_and_log(self) -> None:
        self.assertEqual(str(connection_error("h.example", "192.0.2.1")),
                         "421 4.7.0 h.example[192.0.2.1] Error: too many connections from 192.0.2.1")
        self.assertEqual(str(message_error("unknown", "192.0.2.1")),
                         "421 4.7.0 unknown[192.0.2.1] Error: too much mail from 192.0.2.1")
        self.assertEqual(warning_line("Connection", 31, "unknown", "192.0.2.1"),
                         "warning: Connection rate limit exceeded: 31 from unknown[192.0.2.1] for service smtp")
