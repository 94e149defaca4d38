"""
The metrics of one server, from what service.py hands over (readers of
live counters, queue directory counters, the endpoints): a registry and the
services that feed and serve it.  Knows no other package of ours.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from prometheus_client import CollectorRegistry, disable_created_metrics
from twisted.application.service import Service
from twisted.logger import globalLogPublisher

from mailserver.metrics.catalogue import BY_NAME
from mailserver.metrics.collectors import GaugeCollector, QueueSizes
from mailserver.metrics.events import EventMetrics
from mailserver.metrics.http import MetricsPage, metrics_site

Reader = Callable[[], float]


@dataclass(frozen=True)
class Sources:
    """Where the gauges read from, each a C{label value -> reader} mapping."""

    connections: Mapping[str, Reader]  # open connections per protocol
    sessions: Mapping[str, Reader]  # logged-in IMAP/POP3 sessions
    idle_sessions: Reader  # IMAP sessions in IDLE
    queues: Mapping[str, Callable[[], int]]  # blocking directory counts (run in a thread)


class LogObserverService(Service):
    """Keeps C{observer} on the log publisher while the server runs."""

    def __init__(self, observer: Any, publisher: Any = globalLogPublisher) -> None:
        self.observer = observer
        self.publisher = publisher

    def startService(self) -> None:
        super().startService()
        self.publisher.addObserver(self.observer)

    def stopService(self) -> None:
        super().stopService()
        self.publisher.removeObserver(self.observer)


@dataclass
class Metrics:
    """A server's registry, its event observer and queue sizes, and the /metrics site."""

    registry: CollectorRegistry
    events: EventMetrics
    queues: QueueSizes
    site: Any

    def observer_service(self) -> LogObserverService:
        return LogObserverService(self.events)


def build_metrics(sources: Sources, allowed: Callable[[str], bool], reactor: Any) -> Metrics:
    """The registry over C{sources}, served to clients for which C{allowed(ip)} holds."""
    # No *_created series: Prometheus does not need them and they double the family count.
    disable_created_metrics()
    registry = CollectorRegistry(auto_describe=True)
    events = EventMetrics(registry)
    registry.register(GaugeCollector(BY_NAME["mailserver_connections"], sources.connections))
    registry.register(GaugeCollector(BY_NAME["mailserver_sessions"], sources.sessions))
    registry.register(GaugeCollector(BY_NAME["mailserver_imap_idle_sessions"], {"": sources.idle_sessions}))
    queues = QueueSizes(sources.queues, reactor)
    registry.register(queues)
    site = metrics_site(MetricsPage(registry, allowed, queues.refresh))
    return Metrics(registry, events, queues, site)
