"""build_metrics over fake sources: gauges read them, the observer counts only while running."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.logger import LogPublisher
from twisted.trial.unittest import SynchronousTestCase

from mailserver.metrics.wiring import Sources, build_metrics


class BuildMetricsTests(SynchronousTestCase):
    def test_gauges_and_observer(self) -> None:
        sources = Sources(
            connections={"smtpd": lambda: 3, "imap": lambda: 1}, sessions={"imap": lambda: 1},
            idle_sessions=lambda: 1, queues={"deferred": lambda: 0},
        )
        metrics = build_metrics(sources, lambda ip: True, Clock())
        value = metrics.registry.get_sample_value
        self.assertEqual(value("mailserver_connections", {"protocol": "smtpd"}), 3)
        self.assertEqual(value("mailserver_sessions", {"protocol": "imap"}), 1)
        self.assertEqual(value("mailserver_imap_idle_sessions"), 1)

        publisher = LogPublisher()
        service = metrics.observer_service()
        service.publisher = publisher
        event = {"auth_failure": True, "service": "pop3"}
        publisher(event)  # not yet observed
        service.startService()
        publisher(event)
        service.stopService()
        publisher(event)
        self.assertEqual(value("mailserver_auth_failures_total", {"service": "pop3"}), 1)
        self.assertIsNone(value("mailserver_messages_created", {"status": "delivered"}))
