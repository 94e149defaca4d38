"""
Every metric we export: name, type, labels (with their values) and meaning,
in one place.  The metrics take their help text and label names from here,
and C{docs/metrics.rst} is generated from it::

    python -m mailserver.metrics.catalogue > docs/metrics.rst

Tests fail when the page drifts, or when a live scrape and the catalogue
disagree.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

COMMAND = "python -m mailserver.metrics.catalogue > docs/metrics.rst"

#: Label values (bounded: anything unforeseen is counted as "other").
MESSAGE_STATUSES = ("delivered", "queued", "deferred", "bounced", "reject", "discarded", "hold")
RELAY_STATUSES = ("sent", "deferred", "bounced", "expired")
AUTH_SERVICES = ("smtp", "imap", "pop3")
REFUSING_PROTOCOLS = ("smtp", "imap", "pop3", "managesieve")
CONNECTION_PROTOCOLS = ("smtpd", "submission", "smtps", "imap", "pop3", "managesieve")
REJECT_PHASES = ("helo", "mail", "rcpt", "data")
SESSION_PROTOCOLS = ("imap", "pop3", "managesieve")
QUEUES = ("incoming", "active", "deferred", "corrupt", "hold", "maildrop")


@dataclass(frozen=True)
class Metric:
    """One exported metric family (C{name} without the C{_total} of counters)."""

    name: str
    type: str  # counter, gauge, histogram
    help: str
    labels: tuple[tuple[str, str], ...] = ()  # (label, its values)

    @property
    def label_names(self) -> list[str]:
        return [label for label, _ in self.labels]

    @property
    def exposed(self) -> str:
        """The name in the exposition (counters end in _total)."""
        return self.name + "_total" if self.type == "counter" else self.name


def _values(values: tuple[str, ...]) -> str:
    return ", ".join(values)


METRICS: tuple[Metric, ...] = (
    Metric("mailserver_messages", "counter",
           "Messages at end of DATA (SMTP, sendmail, bounces) by outcome",
           (("status", _values(MESSAGE_STATUSES)),)),
    Metric("mailserver_rejects", "counter",
           "Refusals by phase and RFC 3463 enhanced status code",
           (("phase", _values(REJECT_PHASES)), ("code", "e.g. 5.1.1, 5.7.1, 4.3.0")),),
    Metric("mailserver_delivery_latency_seconds", "histogram",
           "Seconds from MAIL FROM to the durable 250 (mail delivered or queued)"),
    Metric("mailserver_outbound_deliveries", "counter",
           "Outbound queue delivery attempts per recipient by outcome",
           (("status", _values(RELAY_STATUSES)),)),
    Metric("mailserver_auth_failures", "counter", "Failed logins by service",
           (("service", _values(AUTH_SERVICES)),)),
    Metric("mailserver_connections_refused", "counter",
           "Connections refused by a connection limit, by protocol",
           (("protocol", _values(REFUSING_PROTOCOLS)),)),
    Metric("mailserver_connections", "gauge",
           "Open connections: per SMTP listener; IMAP, POP3 and ManageSieve with their TLS listeners",
           (("protocol", _values(CONNECTION_PROTOCOLS)),)),
    Metric("mailserver_sessions", "gauge", "Logged-in IMAP, POP3 and ManageSieve sessions",
           (("protocol", _values(SESSION_PROTOCOLS)),)),
    Metric("mailserver_imap_idle_sessions", "gauge", "IMAP sessions in IDLE"),
    Metric("mailserver_queue_messages", "gauge",
           "Messages in each queue directory (scanned at most every 5 seconds)",
           (("queue", _values(QUEUES)),)),
)  # fmt: skip

BY_NAME: dict[str, Metric] = {m.name: m for m in METRICS}

HEADER = f"""\
..
   Generated from mailserver/metrics/catalogue.py by
   ``{COMMAND}``: do not edit.

Metrics
=======

With ``metrics_listen`` set (it is empty, off, by default), mailserver serves
Prometheus metrics at ``/metrics`` on each endpoint given, to clients in
``metrics_allow`` (default: loopback; anything else gets ``403``)::

    metrics_listen = tcp:9154:interface=127.0.0.1
    metrics_allow = 127.0.0.0/8, [::1]/128, 10.0.0.5

A scrape job for it::

    scrape_configs:
      - job_name: mailserver
        static_configs:
          - targets: ["127.0.0.1:9154"]

Counters come from the server's structured log events (one line per message,
per outbound attempt, per failed login, per refused connection), so they
count what the log shows, including refusals the log rate-limits.  Gauges are
read when scraped: open connections and sessions from the listeners, queue
sizes from the queue directories (counted in a thread, cached for 5 seconds,
never on the event loop).  Counters start at 0 when the process starts;
the series of the label values listed below (but the rejection codes) exist
from the start, and a value outside those lists is counted as ``other``.

Metric names for Grafana
------------------------

Counters are exposed with the ``_total`` suffix, the histogram as
``_bucket``, ``_sum`` and ``_count``.

.. list-table::
   :header-rows: 1
   :widths: 34 10 22 34

   * - Metric
     - Type
     - Labels
     - Meaning
"""

EXAMPLES = """
Useful queries
--------------

* Mail accepted per minute: ``sum(rate(mailserver_messages_total{status=~"delivered|queued"}[5m])) * 60``
* Rejections by code: ``sum by (code) (rate(mailserver_rejects_total[5m]))``
* 95th percentile of the time to 250:
  ``histogram_quantile(0.95, sum by (le) (rate(mailserver_delivery_latency_seconds_bucket[5m])))``
* Deferred queue: ``mailserver_queue_messages{queue="deferred"}``
* Brute force: ``sum by (service) (rate(mailserver_auth_failures_total[5m]))``
"""


def reference() -> str:
    """The text of docs/metrics.rst."""
    lines = [HEADER.rstrip("\n")]
    for m in METRICS:
        labels = "; ".join(f"``{label}``: {values}" for label, values in m.labels) or "none"
        lines += [f"   * - ``{m.exposed}``", f"     - {m.type}", f"     - {labels}", f"     - {m.help}"]
    return "\n".join(lines) + "\n" + EXAMPLES


if __name__ == "__main__":
    sys.stdout.write(reference())
