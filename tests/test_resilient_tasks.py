"""
Every periodic task survives an injected failure, logs it once and runs
again (issue 16 item 2: one EMFILE stopped hold releases until a restart).
"""

from __future__ import annotations

import errno
import os
from types import SimpleNamespace
from typing import Any, Callable

from twisted.internet import reactor
from twisted.internet.defer import succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from mailserver.auth.userdb import FileUserDatabase
from mailserver.queue.manager import QueueManager
from mailserver.queue.pickup import PickupService, write_pickup
from mailserver.queue.spool import Spool
from mailserver.service import HoldReleaser
from mailserver.store.notify import MailboxNotifier
from mailserver.tables import loader
from mailserver.tables.loader import WatchedFile
from tests.reactors import ThreadedClock


def emfile() -> OSError:
    return OSError(errno.EMFILE, "Too many open files")


def failing_first(times: int, function: Callable[..., Any]) -> Callable[..., Any]:
    """C{function}, except that its first C{times} calls raise EMFILE; C{.calls} counts all."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        wrapper.calls += 1  # type: ignore[attr-defined]
        if wrapper.calls <= times:  # type: ignore[attr-defined]
            raise emfile()
        return function(*args, **kwargs)

    wrapper.calls = 0  # type: ignore[attr-defined]
    return wrapper


class FakeHoldArea:
    def __init__(self) -> None:
        self.released = [("H1", {"sender": "a@example.com", "recipients": ["b@example.com"]}, b"x\n")]
        self.removed: list[str] = []
        self.purged = 0

    def take_released(self):
        released, self.released = self.released, []
        return iter(released)

    def remove_released(self, message_id: str) -> None:
        self.removed.append(message_id)

    def purge_tmp(self) -> int:
        self.purged += 1
        return 1


class ResilientTaskTests(SynchronousTestCase):
    def test_regression_hold_release_survives_emfile(self) -> None:
        clock = ThreadedClock()
        area = FakeHoldArea()
        area.take_released = failing_first(2, area.take_released)  # type: ignore[method-assign]
        injected: list[tuple] = []

        def inject(sender, recipients, message, run_checks, client):
            injected.append((sender, recipients))
            return succeed(None)

        server = SimpleNamespace(reactor=clock, hold_area=area, injector=SimpleNamespace(inject=inject))
        releaser = HoldReleaser(server, interval=5)  # type: ignore[arg-type]
        releaser.startService()
        clock.advance(5)
        self.assertEqual(injected, [])
        clock.advance(5)
        self.assertEqual(injected, [("a@example.com", ["b@example.com"])])
        self.assertEqual(area.removed, ["H1"])
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)  # twice the same error: one log
        self.assertEqual(area.purged, 1)  # hold tmp/ leftovers: at start, then hourly
        clock.advance(3600)
        self.assertEqual(area.purged, 2)
        releaser.stopService()
        self.assertEqual(clock.getDelayedCalls(), [])

    def written(self, text: str, path: str | None = None) -> str:
        path = path or os.path.abspath(self.mktemp())
        with open(path, "w") as handle:
            handle.write(text)
        return path

    def test_regression_table_reload_survives_an_error(self) -> None:
        path = self.written("a")
        clock = Clock()
        watched = WatchedFile(path, lambda p: open(p).read(), clock, interval=2)
        self.patch(loader, "_stamp", failing_first(1, loader._stamp))
        watched.start()
        clock.advance(2)
        self.written("bb", path)
        clock.advance(2)
        self.assertEqual(watched.value, "bb")
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        watched.stop()

    def test_regression_passwd_reload_survives_an_error(self) -> None:
        path = self.written("")
        clock = ThreadedClock()
        db = FileUserDatabase(path, clock, interval=1)
        self.patch(loader, "_stamp", failing_first(1, loader._stamp))
        db.startService()
        clock.advance(1)
        self.written("bob@example.com:{PLAIN}x\n", path)
        clock.advance(1)
        self.assertIsNotNone(db.lookup("bob@example.com"))
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        db.stopService()

    def test_regression_notifier_poll_survives_an_error(self) -> None:
        clock = Clock()
        stamps = {"value": 1}
        stat = failing_first(2, lambda path: stamps["value"])
        notifier = MailboxNotifier(clock, interval=1, stat=lambda path: stamps["value"])
        fired: list[str] = []
        notifier.subscribe("/m/bob", fired.append)
        notifier._stat = stat  # from now on the first two polls fail
        clock.advance(1)
        clock.advance(1)
        stamps["value"] = 2
        clock.advance(1)
        self.assertEqual(len(fired), 1)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        notifier.stop()


class ResilientServiceTests(TestCase):
    async def test_regression_pickup_survives_an_error(self) -> None:
        directory = os.path.join(os.path.abspath(self.mktemp()), "maildrop")
        os.makedirs(directory)
        clock = ThreadedClock()
        injected: list[tuple] = []

        def inject(sender, recipients, message, extract):
            injected.append((sender, recipients))
            return succeed(None)

        service = PickupService(directory, clock, inject, clock=clock, interval=2)
        service._scan = failing_first(2, service._scan)  # type: ignore[method-assign]
        service.startService()
        await service.ready
        write_pickup(directory, "a@example.com", ["b@example.com"], b"Subject: x\n\nx\n")
        clock.advance(2)
        self.assertEqual(injected, [])
        clock.advance(2)
        self.assertEqual(injected, [("a@example.com", ["b@example.com"])])
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        service.stopService()

    async def test_regression_queue_loops_survive_errors(self) -> None:
        clock = Clock()
        clock.advance(1_700_000_000)
        spool = Spool(self.mktemp(), reactor, clock=clock)
        manager = QueueManager(
            spool, SimpleNamespace(), clock, inject_bounce=lambda *a: succeed(None), myhostname="mx.example.com",
            queue_run_delay=10, flush_check_interval=5,
        )
        manager._scan = failing_first(2, manager._scan)  # type: ignore[method-assign]
        spool.take_flush_request = failing_first(2, lambda: succeed(False))  # type: ignore[method-assign]
        manager.startService()
        await manager.ready
        for _ in range(4):
            clock.advance(5)
            await manager.idle()
        self.assertEqual(manager._scan.calls, 3)  # type: ignore[attr-defined]
        self.assertEqual(spool.take_flush_request.calls, 4)  # type: ignore[attr-defined]
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 2)  # one per task
        manager.stopService()
