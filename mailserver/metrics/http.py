"""
C{/metrics} over twisted.web: the registry in Prometheus' text format, for
clients in C{metrics_allow} only (anything else gets 403).
"""

from __future__ import annotations

from typing import Any, Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site


class MetricsPage(Resource):
    """
    The exposition page.  C{before_scrape} fires when the cached collectors
    are fresh (queue sizes are scanned in a thread); C{allowed(ip)} says
    whether a client may scrape.
    """

    isLeaf = True
    log = Logger()

    def __init__(self, registry: CollectorRegistry, allowed: Callable[[str], bool],
                 before_scrape: Callable[[], Deferred] = lambda: succeed(None)) -> None:
        super().__init__()
        self.registry = registry
        self.allowed = allowed
        self.before_scrape = before_scrape

    def render_GET(self, request: Any) -> bytes | int:
        address = request.getClientAddress()
        if not self.allowed(getattr(address, "host", "")):
            request.setResponseCode(403)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"Forbidden\n"
        finished = request.notifyFinish()
        finished.addErrback(lambda _: None)  # the client went away: nothing to write to

        def write(_: object) -> None:
            if finished.called:
                return
            request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode("ascii"))
            request.write(generate_latest(self.registry))
            request.finish()

        def failed(failure: Any) -> None:
            self.log.failure("metrics scrape failed", failure)
            if not finished.called:
                request.setResponseCode(500)
                request.finish()

        self.before_scrape().addCallback(write).addErrback(failed)
        return NOT_DONE_YET


def metrics_site(page: MetricsPage) -> Site:
    """A Site serving C{page} at C{/metrics} (and 404 elsewhere)."""
    root = Resource()
    root.putChild(b"metrics", page)
    site = Site(root)
    site.noisy = False
    site.displayTracebacks = False
    site.log = lambda request: None  # no access log line per scrape
    return site
