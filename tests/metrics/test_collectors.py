"""Scrape-time gauges over fakes; queue sizes scanned in a thread and cached."""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry
from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from mailserver.metrics.catalogue import BY_NAME
from mailserver.metrics.collectors import GaugeCollector, QueueSizes, count_entries


class GaugeCollectorTests(SynchronousTestCase):
    def test_readers_called_at_scrape_time(self) -> None:
        open_sessions = {"smtpd": 2}
        registry = CollectorRegistry()
        registry.register(GaugeCollector(BY_NAME["mailserver_connections"], {"smtpd": lambda: open_sessions["smtpd"]}))
        self.assertEqual(registry.get_sample_value("mailserver_connections", {"protocol": "smtpd"}), 2)
        open_sessions["smtpd"] = 5
        self.assertEqual(registry.get_sample_value("mailserver_connections", {"protocol": "smtpd"}), 5)

    def test_unlabelled(self) -> None:
        registry = CollectorRegistry()
        registry.register(GaugeCollector(BY_NAME["mailserver_imap_idle_sessions"], {"": lambda: 3}))
        self.assertEqual(registry.get_sample_value("mailserver_imap_idle_sessions"), 3)


class _Pool:
    """A thread pool that runs work at once (in the test thread)."""

    def callInThreadWithCallback(self, onResult, f, *args, **kw):
        try:
            result = f(*args, **kw)
        except Exception as e:  # noqa: BLE001 -- handed back as a failure, like the real pool
            onResult(False, e)
        else:
            onResult(True, result)


class _Reactor(Clock):
    def callFromThread(self, f, *args, **kw):
        f(*args, **kw)


class QueueSizesTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = _Reactor()
        self.scans = 0
        self.deferred = 4

        def deferred() -> int:
            self.scans += 1
            return self.deferred

        self.sizes = QueueSizes({"deferred": deferred, "hold": lambda: 0}, self.reactor, max_age=5, threadpool=_Pool())
        self.registry = CollectorRegistry()
        self.registry.register(self.sizes)

    def value(self, queue: str) -> float | None:
        return self.registry.get_sample_value("mailserver_queue_messages", {"queue": queue})

    def test_collect_never_scans(self) -> None:
        self.assertEqual(self.value("deferred"), 0)
        self.assertEqual(self.scans, 0)

    def test_refresh_scans_then_caches(self) -> None:
        self.successResultOf(self.sizes.refresh())
        self.assertEqual(self.value("deferred"), 4)
        self.deferred = 9
        self.reactor.advance(4)
        self.successResultOf(self.sizes.refresh())
        self.assertEqual((self.scans, self.value("deferred")), (1, 4))
        self.reactor.advance(1)
        self.successResultOf(self.sizes.refresh())
        self.assertEqual((self.scans, self.value("deferred")), (2, 9))

    def test_concurrent_scrapes_share_one_scan(self) -> None:
        """Scrapes arriving during a scan wait for it instead of starting another."""
        held: list = []

        class _HeldPool:
            def callInThreadWithCallback(self, onResult, f, *args, **kw):
                held.append(lambda: onResult(True, f(*args, **kw)))

        self.sizes.threadpool = _HeldPool()
        first, second = self.sizes.refresh(), self.sizes.refresh()
        self.assertNoResult(first)
        self.assertNoResult(second)
        self.assertEqual(len(held), 1)
        held.pop()()
        self.successResultOf(first)
        self.successResultOf(second)
        self.assertEqual((self.scans, self.value("deferred")), (1, 4))

    def test_failed_scan_keeps_serving(self) -> None:
        def broken() -> int:
            raise OSError("gone")

        self.sizes.counters["deferred"] = broken
        self.successResultOf(self.sizes.refresh())
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        self.assertEqual(self.value("deferred"), 0)


class CountEntriesTests(TestCase):
    def test_counts_entries_but_dot_files_and_excluded(self) -> None:
        path = self.mktemp()
        os.makedirs(os.path.join(path, "tmp"))
        for name in ("A1", "B2", ".tmp.x"):
            open(os.path.join(path, name), "w").close()
        self.assertEqual(count_entries(path, frozenset({"tmp"})), 2)
        self.assertEqual(count_entries(os.path.join(path, "missing")), 0)

    async def test_real_thread_pool(self) -> None:
        sizes = QueueSizes({"incoming": lambda: 7}, reactor)
        await sizes.refresh()
        self.assertEqual(sizes.sizes, {"incoming": 7})
