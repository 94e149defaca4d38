"""
Counters and the delivery latency histogram, fed by a twisted.logger
observer that recognises our structured log events by their fields:

- C{delivery_line}, C{status}, C{delay}, C{detail}: the one line per
  message (L{mailserver.delivery.transaction});
- C{relay_status}: the queue manager's line per recipient;
- C{reject}: a refused RCPT (C{reply} holds the enhanced code);
- C{auth_failure}, C{service}: a failed login;
- C{refused}: a refused connection (C{suppressed}: the refusals the
  rate-limited log held back since its previous line for that client).

Nothing else is parsed from text, so a reworded message cannot break them.
"""

from __future__ import annotations

import re
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from twisted.logger import ILogObserver
from zope.interface import implementer

from mailserver.metrics.catalogue import (
    AUTH_SERVICES,
    BY_NAME,
    MESSAGE_STATUSES,
    REFUSING_PROTOCOLS,
    REJECT_PHASES,
    RELAY_STATUSES,
)

#: Seconds, MAIL FROM to 250: from a local fsync to a slow content check or DNS.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_ENHANCED = re.compile(r"\b([245]\.\d{1,3}\.\d{1,3})\b")


def _label(value: Any, allowed: tuple[str, ...]) -> str:
    return value if isinstance(value, str) and value in allowed else "other"


def enhanced_code(text: Any) -> str:
    """The RFC 3463 code in a reply text (C{5.1.1}), or C{other}."""
    match = _ENHANCED.search(text) if isinstance(text, str) else None
    return match.group(1) if match else "other"


def _counter(name: str, registry: CollectorRegistry, *known: tuple[str, ...]) -> Counter:
    """The catalogue's counter C{name}; the series of C{known} label values start at 0."""
    metric = BY_NAME[name]
    counter = Counter(name, metric.help, metric.label_names, registry=registry)
    for values in known:
        for value in values:
            counter.labels(value)
    return counter


@implementer(ILogObserver)
class EventMetrics:
    """The event-fed metrics, registered in C{registry}; an ILogObserver."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.messages = _counter("mailserver_messages", registry, MESSAGE_STATUSES)
        self.rejects = _counter("mailserver_rejects", registry)
        self.outbound = _counter("mailserver_outbound_deliveries", registry, RELAY_STATUSES)
        self.auth_failures = _counter("mailserver_auth_failures", registry, AUTH_SERVICES)
        self.refused = _counter("mailserver_connections_refused", registry, REFUSING_PROTOCOLS)
        self.latency = Histogram(
            "mailserver_delivery_latency_seconds", BY_NAME["mailserver_delivery_latency_seconds"].help,
            buckets=LATENCY_BUCKETS, registry=registry,
        )

    def __call__(self, event: dict[str, Any]) -> None:
        if "delivery_line" in event:
            self._message(event)
        elif "relay_status" in event:
            self.outbound.labels(_label(event["relay_status"], RELAY_STATUSES)).inc()
        elif "reject" in event:
            self.rejects.labels(_label(event["reject"], REJECT_PHASES), enhanced_code(event.get("reply"))).inc()
        elif event.get("auth_failure") is True:
            self.auth_failures.labels(_label(event.get("service"), AUTH_SERVICES)).inc()
        elif "refused" in event:
            suppressed = event.get("suppressed", 0)
            count = 1 + (suppressed if isinstance(suppressed, int) and suppressed > 0 else 0)
            self.refused.labels(_label(event["refused"], REFUSING_PROTOCOLS)).inc(count)

    def _message(self, event: dict[str, Any]) -> None:
        status = _label(event.get("status"), MESSAGE_STATUSES)
        self.messages.labels(status).inc()
        if status == "reject":
            self.rejects.labels("data", enhanced_code(event.get("detail"))).inc()
        delay = event.get("delay")
        if status in ("delivered", "queued") and isinstance(delay, (int, float)) and delay >= 0:
            self.latency.observe(delay)
