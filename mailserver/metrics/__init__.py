"""
Prometheus metrics (C{metrics_listen}): counters fed by our structured log
events (L{events}), gauges read from the running objects at scrape time
(L{collectors}), served by twisted.web (L{http}).  One CollectorRegistry per
server, never prometheus_client's global one.
"""
