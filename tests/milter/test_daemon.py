"""The test-daemon helper: a daemon that cannot start fails every waiter, cleanly."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from tests.milter.daemon import Daemon, Shared


class Failing(Daemon):
    name = "failing"

    def argv(self) -> list[str]:
        return ["/bin/false"]


class SharedTests(TestCase):
    @defer.inlineCallbacks
    def test_start_failure_reaches_every_waiter(self) -> Any:
        shared = Shared(Failing)
        first, second = shared.get(reactor), shared.get(reactor)
        for d in (first, second):
            failure = yield self.assertFailure(d, RuntimeError)
            self.assertIn("failing exited with 1", str(failure))
        self.assertIsNone(shared.instance)
