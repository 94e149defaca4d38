"""mailserver.limits: the RLIMIT_NOFILE raise, the descriptor budget, the refusal log, the counters."""

from __future__ import annotations

import resource
from typing import Any
from unittest import mock

from twisted.application.service import MultiService
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from mailserver import limits, tap
from mailserver.limits import (
    FIXED_ALLOWANCE,
    UNLIMITED_CAP,
    DescriptorBudget,
    LoginLimits,
    RefusalLog,
    raise_nofile_limit,
)


class FakeRlimit:
    def __init__(self, soft: int, hard: int, refuse: bool = False) -> None:
        self.value = (soft, hard)
        self.refuse = refuse
        self.set_calls: list[tuple[int, tuple[int, int]]] = []

    def getrlimit(self, which: int) -> tuple[int, int]:
        assert which == resource.RLIMIT_NOFILE
        return self.value

    def setrlimit(self, which: int, value: tuple[int, int]) -> None:
        self.set_calls.append((which, value))
        if self.refuse:
            raise ValueError("not allowed")
        self.value = value


class RaiseNofileTests(SynchronousTestCase):
    def test_soft_limit_raised_to_hard_and_both_logged(self) -> None:
        fake = FakeRlimit(1024, 524288)
        with capturedLogs() as events:
            self.assertEqual(raise_nofile_limit(fake.getrlimit, fake.setrlimit), (1024, 524288))
        self.assertEqual(fake.set_calls, [(resource.RLIMIT_NOFILE, (524288, 524288))])
        [event] = [e for e in events if "soft limit" in e["log_format"]]
        self.assertEqual((event["before"], event["after"], event["hard"]), ("1024", "524288", "524288"))

    def test_unlimited_hard_limit_is_capped(self) -> None:
        fake = FakeRlimit(1024, resource.RLIM_INFINITY)
        raise_nofile_limit(fake.getrlimit, fake.setrlimit)
        self.assertEqual(fake.value, (UNLIMITED_CAP, resource.RLIM_INFINITY))

    def test_already_at_hard_limit(self) -> None:
        fake = FakeRlimit(4096, 4096)
        self.assertEqual(raise_nofile_limit(fake.getrlimit, fake.setrlimit), (4096, 4096))
        self.assertEqual(fake.set_calls, [])

    def test_refused_raise_keeps_the_soft_limit(self) -> None:
        fake = FakeRlimit(1024, 4096, refuse=True)
        with capturedLogs() as events:
            self.assertEqual(raise_nofile_limit(fake.getrlimit, fake.setrlimit), (1024, 1024))
        self.assertTrue(any("cannot raise" in e["log_format"] for e in events))

    def test_tap_raises_before_building(self) -> None:
        calls: list[str] = []
        with mock.patch.object(limits, "raise_nofile_limit", lambda: calls.append("raise")), \
                mock.patch("mailserver.locate.find_config", lambda path: (mock.Mock(path="main.cf"), [])), \
                mock.patch("mailserver.locate.config_path", lambda path: path or "main.cf"), \
                mock.patch("mailserver.service.build", lambda config, reactor: calls.append("build") or MultiService()):
            tap.makeService(tap.Options())
        self.assertEqual(calls, ["raise", "build"])

    def test_budget_from_rlimit(self) -> None:
        fake = FakeRlimit(65536, 65536)
        budget = DescriptorBudget.from_rlimit(Clock(), fake.getrlimit)
        self.assertEqual((budget.limit, budget.reserve), (65536, 6553))


class DescriptorBudgetTests(SynchronousTestCase):
    def test_reserve_is_a_tenth_but_at_least_100(self) -> None:
        self.assertEqual(DescriptorBudget(1024, Clock()).reserve, 102)
        self.assertEqual(DescriptorBudget(256, Clock()).reserve, 100)

    def test_counts_proc_at_most_once_a_second_plus_admissions(self) -> None:
        clock = Clock()
        counts: list[int] = []

        def count() -> int:
            counts.append(1)
            return 390

        budget = DescriptorBudget(500, clock, count_open=count)
        self.assertEqual([budget.acquire() for _ in range(12)], [True] * 10 + [False] * 2)
        self.assertEqual(len(counts), 1)
        for _ in range(10):
            budget.release()
        clock.advance(1)
        self.assertTrue(budget.acquire())  # the new count (390) no longer holds the ten
        self.assertEqual(len(counts), 2)

    def test_without_proc_the_held_connections_count(self) -> None:
        budget = DescriptorBudget(300, Clock(), count_open=lambda: None)
        admitted = 0
        while budget.acquire() and admitted < 1000:
            admitted += 1
        self.assertEqual(admitted, 300 - 100 - FIXED_ALLOWANCE)
        budget.release()
        self.assertTrue(budget.acquire())

    def test_real_count(self) -> None:
        count = limits.count_open_descriptors()
        if count is not None:
            self.assertGreater(count, 2)


class RefusalLogTests(SynchronousTestCase):
    def test_memory_is_bounded_under_a_wide_flood(self) -> None:
        clock = Clock()
        log = RefusalLog(clock, max_addresses=100)
        with capturedLogs():
            for n in range(1000):
                log.refused("imap", f"10.0.{n // 256}.{n % 256}", "busy")
        self.assertLessEqual(len(log.lines._last), 100)


class LoginLimitsTests(SynchronousTestCase):
    def test_counters_return_to_zero(self) -> None:
        budget = DescriptorBudget(10_000, Clock(), count_open=lambda: 10)
        login = LoginLimits("imap", client_limit=5, per_ip_limit=5, userip_limit=2, budget=budget)
        connections: list[Any] = [login.connect("192.0.2.1") for _ in range(3)]
        self.assertTrue(connections[0].login("alice"))
        self.assertFalse(connections[0].login("alice"))  # one login per connection
        self.assertTrue(connections[1].login("alice"))
        self.assertFalse(connections[2].login("alice"))
        connections[1].logout()
        self.assertTrue(connections[2].login("alice"))
        for connection in connections:
            connection.close()
            connection.close()
        self.assertEqual((login.connections, login.sessions, budget.held), ({}, {}, 0))

    def test_refused_connection_holds_nothing(self) -> None:
        login = LoginLimits("pop3", client_limit=1)
        kept = login.connect(None)
        refused = login.connect(None)
        self.assertEqual(refused.refusal, limits.TOO_MANY)
        refused.close()
        self.assertEqual(login.connections, {"": 1})
        kept.close()
        self.assertEqual(login.connections, {})
