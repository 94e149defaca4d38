"""/metrics over loopback, after a real SMTP delivery, on the server service.py builds."""

from __future__ import annotations

import smtplib
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from mailserver.metrics.catalogue import COMMAND, CONNECTION_PROTOCOLS, METRICS, QUEUES, reference
from tests.harness import RunningServer


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(sample name, sorted labels) -> value."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def status_of(url: str) -> int:
    """The HTTP status of a GET of C{url} (blocks: run it in a thread)."""
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


class ScrapeTests(TestCase):
    timeout = 60

    def start(self, allow: str = "127.0.0.0/8"):
        self.server = RunningServer(
            self, listeners=("smtpd_listen", "imap_listen"),
            extra=f"metrics_listen = tcp:0:interface=127.0.0.1\nmetrics_allow = {allow}\n",
        )
        return self.server.start()

    def url(self, path: str = "/metrics") -> str:
        return f"http://127.0.0.1:{self.server.ports['metrics_listen']}{path}"

    async def test_scrape_after_delivery(self) -> None:
        await self.start()
        port = self.server.ports["smtpd_listen"]

        def exchange() -> str:
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
                client.sendmail("x@remote.example", ["alice@example.com"], b"Subject: m\r\n\r\nbody\r\n")
                try:
                    client.sendmail("x@remote.example", ["nobody@example.com"], b"Subject: m\r\n\r\nbody\r\n")
                except smtplib.SMTPRecipientsRefused:
                    pass
                with urllib.request.urlopen(self.url(), timeout=30) as response:
                    self.assertTrue(response.headers["Content-Type"].startswith("text/plain; version="))
                    return response.read().decode()

        values = samples(await deferToThread(exchange))
        self.assertEqual(values[("mailserver_messages_total", (("status", "delivered"),))], 1)
        self.assertEqual(values[("mailserver_rejects_total", (("code", "5.1.1"), ("phase", "rcpt")))], 1)
        self.assertEqual(values[("mailserver_delivery_latency_seconds_count", ())], 1)
        self.assertEqual(values[("mailserver_connections", (("protocol", "smtpd"),))], 1)  # the session above
        self.assertEqual(values[("mailserver_connections", (("protocol", "imap"),))], 0)
        self.assertEqual(values[("mailserver_queue_messages", (("queue", "deferred"),))], 0)
        self.assertEqual(values[("mailserver_queue_messages", (("queue", "hold"),))], 0)
        self.assertEqual(values[("mailserver_imap_idle_sessions", ())], 0)

    async def test_client_outside_metrics_allow_gets_403(self) -> None:
        await self.start(allow="192.0.2.0/24")
        self.assertEqual(await deferToThread(status_of, self.url()), 403)

    async def test_other_paths_not_found(self) -> None:
        await self.start()
        self.assertEqual(await deferToThread(status_of, self.url("/")), 404)

    async def test_scrape_matches_catalogue(self) -> None:
        """Every family scraped is in the catalogue (docs/metrics.rst) with its type, labels and values."""
        await self.start()

        def scrape() -> str:
            with urllib.request.urlopen(self.url(), timeout=30) as response:
                return response.read().decode()

        families = {f.name: f for f in text_string_to_metric_families(await deferToThread(scrape))}
        self.assertEqual(set(families), {m.name for m in METRICS})
        for metric in METRICS:
            family = families[metric.name]
            self.assertEqual(family.type, metric.type, metric.name)
            self.assertEqual(family.documentation, metric.help, metric.name)
            for sample in family.samples:
                names = set(sample.labels) - {"le"}
                self.assertEqual(names, set(metric.label_names), metric.name)
                for label, value in sample.labels.items():
                    if label != "le" and metric.name != "mailserver_rejects":
                        self.assertIn(value, dict(metric.labels)[label].split(", "), metric.name)
        protocols = {s.labels["protocol"] for s in families["mailserver_connections"].samples}
        self.assertEqual(protocols, set(CONNECTION_PROTOCOLS))
        queues = {s.labels["queue"] for s in families["mailserver_queue_messages"].samples}
        self.assertEqual(queues, set(QUEUES))

    def test_regression_metrics_page_matches_catalogue(self) -> None:
        import os

        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        with open(os.path.join(root, "docs", "metrics.rst"), encoding="utf-8") as handle:
            written = handle.read()
        self.assertTrue(written == reference(), f"docs/metrics.rst is out of date: run `{COMMAND}`")
