"""The event-fed metrics: each structured log event we emit moves its counter."""

from __future__ import annotations

from prometheus_client import CollectorRegistry
from twisted.internet.task import Clock
from twisted.logger import Logger, LogPublisher
from twisted.trial.unittest import SynchronousTestCase

from mailserver.auth.throttle import log_auth_failure
from mailserver.limits import RefusalLog
from mailserver.metrics.events import EventMetrics, enhanced_code


class EventMetricsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.registry = CollectorRegistry()
        self.metrics = EventMetrics(self.registry)

    def value(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0

    def test_delivery_line_counts_status_and_latency(self) -> None:
        self.metrics({"delivery_line": "...", "status": "queued", "delay": 0.3, "queue_id": "A"})
        self.metrics({"delivery_line": "...", "status": "reject", "detail": "5.7.1 spam", "queue_id": "B"})
        self.assertEqual(self.value("mailserver_messages_total", status="queued"), 1)
        self.assertEqual(self.value("mailserver_messages_total", status="reject"), 1)
        self.assertEqual(self.value("mailserver_rejects_total", phase="data", code="5.7.1"), 1)
        self.assertEqual(self.value("mailserver_delivery_latency_seconds_count"), 1)
        self.assertEqual(self.value("mailserver_delivery_latency_seconds_bucket", le="0.5"), 1)

    def test_unknown_label_values_are_other(self) -> None:
        """A field value we did not foresee cannot make a new time series per value."""
        self.metrics({"delivery_line": "...", "status": "x" * 50})
        self.metrics({"relay_status": object()})
        self.assertEqual(self.value("mailserver_messages_total", status="other"), 1)
        self.assertEqual(self.value("mailserver_outbound_deliveries_total", status="other"), 1)

    def test_auth_failure_line(self) -> None:
        publisher = LogPublisher(self.metrics)
        log = Logger(observer=publisher)
        from mailserver.auth import throttle

        self.patch(throttle, "log", log)
        log_auth_failure("imap", "192.0.2.1", b"alice", "password mismatch")
        self.assertEqual(self.value("mailserver_auth_failures_total", service="imap"), 1)

    def test_rate_limited_refusals_all_counted(self) -> None:
        """Refusals the rate-limited log held back are counted with its next line."""
        clock = Clock()
        refusals = RefusalLog(clock, interval=60)
        refusals.lines.log = Logger(observer=LogPublisher(self.metrics))
        for _ in range(3):
            refusals.refused("pop3", "192.0.2.1", "too many")
        clock.advance(61)
        refusals.refused("pop3", "192.0.2.1", "too many")
        self.assertEqual(self.value("mailserver_connections_refused_total", protocol="pop3"), 4)

    def test_relay_and_rcpt_events(self) -> None:
        self.metrics({"relay_status": "sent"})
        self.metrics({"relay_status": "expired"})
        self.metrics({"reject": "rcpt", "reply": "5.1.1 User unknown"})
        self.assertEqual(self.value("mailserver_outbound_deliveries_total", status="sent"), 1)
        self.assertEqual(self.value("mailserver_outbound_deliveries_total", status="expired"), 1)
        self.assertEqual(self.value("mailserver_rejects_total", phase="rcpt", code="5.1.1"), 1)

    def test_enhanced_code(self) -> None:
        self.assertEqual(enhanced_code("550 5.1.1 no"), "5.1.1")
        self.assertEqual(enhanced_code("no code"), "other")
        self.assertEqual(enhanced_code(None), "other")
