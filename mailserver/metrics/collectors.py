"""
Gauges read from the running server at scrape time: open connections and
sessions (cheap counters, read on the reactor thread) and queue sizes
(directory counts, scanned in a thread and cached for a few seconds).
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterator, Mapping

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from mailserver.metrics.catalogue import BY_NAME, Metric

QUEUE_METRIC = BY_NAME["mailserver_queue_messages"]

#: Seconds a queue scan is reused: a scrape every second never rescans every second.
QUEUE_CACHE_SECONDS = 5.0


class GaugeCollector(Collector):
    """
    One gauge of the catalogue, each value of its one label (if any) read
    from its own callable at scrape time (C{readers}: label value -> reader).
    """

    def __init__(self, metric: Metric, readers: Mapping[str, Callable[[], float]]) -> None:
        self.name = metric.name
        self.documentation = metric.help
        self.label = metric.label_names[0] if metric.labels else None
        self.readers = dict(readers)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        labels = [self.label] if self.label else None
        family = GaugeMetricFamily(self.name, self.documentation, labels=labels)
        for value, reader in self.readers.items():
            family.add_metric([value] if self.label else [], float(reader()))
        yield family

    def describe(self) -> Iterator[GaugeMetricFamily]:
        labels = [self.label] if self.label else None
        yield GaugeMetricFamily(self.name, self.documentation, labels=labels)


def count_entries(path: str, exclude: frozenset[str] = frozenset()) -> int:
    """Entries of directory C{path} (not dot files, not C{exclude}); 0 if it is missing (blocks)."""
    try:
        with os.scandir(path) as entries:
            return sum(1 for e in entries if not e.name.startswith(".") and e.name not in exclude)
    except FileNotFoundError:
        return 0


class QueueSizes(Collector):
    """
    C{mailserver_queue_messages{queue=...}}: messages in each queue
    directory.  L{refresh} rescans (in a thread) when the last scan is older
    than C{max_age}; L{collect} reports the last scan and never touches the disk.
    """

    log = Logger()

    def __init__(self, counters: Mapping[str, Callable[[], int]], reactor: Any,
                 max_age: float = QUEUE_CACHE_SECONDS, threadpool: Any = None) -> None:
        self.counters = dict(counters)
        self.reactor = reactor
        self.max_age = max_age
        self.threadpool = threadpool
        self.sizes: dict[str, int] = {}
        self.scanned_at: float | None = None
        self._waiting: list[Deferred] = []  # scrapes waiting for the scan under way

    def _scan(self) -> dict[str, int]:
        return {queue: count() for queue, count in self.counters.items()}

    def refresh(self) -> Deferred:
        """Fires when the sizes are at most C{max_age} old (one scan at a time)."""
        now = self.reactor.seconds()
        if self.scanned_at is not None and now - self.scanned_at < self.max_age:
            return succeed(None)
        waiting: Deferred = Deferred()
        self._waiting.append(waiting)
        if len(self._waiting) == 1:  # no scan under way: start one
            pool = self.threadpool or self.reactor.getThreadPool()
            deferToThreadPool(self.reactor, pool, self._scan).addCallbacks(self._scanned, self._failed)
        return waiting

    def _scanned(self, sizes: dict[str, int]) -> None:
        self.sizes = sizes
        self.scanned_at = self.reactor.seconds()
        self._wake()

    def _failed(self, failure: Any) -> None:
        self.log.failure("queue size scan failed", failure)
        self._wake()

    def _wake(self) -> None:
        waiting, self._waiting = self._waiting, []
        for waiter in waiting:
            waiter.callback(None)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(QUEUE_METRIC.name, QUEUE_METRIC.help, labels=QUEUE_METRIC.label_names)
        for queue in self.counters:
            family.add_metric([queue], float(self.sizes.get(queue, 0)))
        yield family

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(QUEUE_METRIC.name, QUEUE_METRIC.help, labels=QUEUE_METRIC.label_names)
