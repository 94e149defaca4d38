"""
What the metrics cost: the log observer per delivery event, and one
/metrics rendering (generate_latest) of a registry like the server's, on
the reactor thread.  Prints microseconds per operation.

    python bench/metrics_cost.py --events 200000 --scrapes 2000
"""

from __future__ import annotations

import argparse
import time

from twisted.internet.task import Clock

from mailserver.metrics.wiring import Sources, build_metrics
from prometheus_client import generate_latest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--scrapes", type=int, default=2_000)
    args = parser.parse_args()
    sources = Sources(
        connections={name: (lambda: 3) for name in ("smtpd", "submission", "smtps", "imap", "pop3")},
        sessions={"imap": lambda: 10, "pop3": lambda: 2},
        idle_sessions=lambda: 5,
        queues={"deferred": lambda: 0},
    )
    metrics = build_metrics(sources, lambda ip: True, Clock())
    event = {"delivery_line": "A: from=<a@b>, to=<c@d>, status=delivered", "queue_id": "A",
             "status": "delivered", "delay": 0.042, "detail": "delivered to c@d", "log_namespace": "x"}
    other = {"log_format": "unrelated line", "log_namespace": "y"}
    started = time.perf_counter()
    for _ in range(args.events):
        metrics.events(event)
    delivery = (time.perf_counter() - started) / args.events
    started = time.perf_counter()
    for _ in range(args.events):
        metrics.events(other)
    unrelated = (time.perf_counter() - started) / args.events
    size = 0
    started = time.perf_counter()
    for _ in range(args.scrapes):
        size = len(generate_latest(metrics.registry))
    scrape = (time.perf_counter() - started) / args.scrapes
    print(f"delivery event: {delivery * 1e6:.2f} us; unrelated event: {unrelated * 1e6:.2f} us; "
          f"scrape: {scrape * 1e6:.0f} us ({size} bytes)")


if __name__ == "__main__":
    main()
