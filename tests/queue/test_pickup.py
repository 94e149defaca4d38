"""The maildrop: sendmail's files, picked up and injected by the daemon."""

from __future__ import annotations

import json
import os
import stat

from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from mailserver.errors import MailError
from mailserver.queue.pickup import (
    CORRUPT,
    PickupError,
    PickupService,
    parse_pickup,
    read_pickup,
    write_pickup,
)

MESSAGE = b"From: alice@example.com\nSubject: hi\n\nbody\n"


class WritePickupTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = os.path.join(self.mktemp(), "maildrop")
        os.makedirs(os.path.dirname(self.directory))

    def test_writes_one_complete_file(self) -> None:
        name = write_pickup(self.directory, "alice@example.com", ["bob@example.org"], MESSAGE, {"extract_recipients": True})
        self.assertEqual(os.listdir(self.directory), [name])
        with open(os.path.join(self.directory, name), "rb") as f:
            data = f.read()
        header, _, message = data.partition(b"\n")
        document = json.loads(header)
        self.assertEqual(document["version"], 1)
        self.assertEqual(document["sender"], "alice@example.com")
        self.assertEqual(document["recipients"], ["bob@example.org"])
        self.assertTrue(document["flags"]["extract_recipients"])
        self.assertEqual(message, MESSAGE)

    def test_directory_mode_and_file_mode(self) -> None:
        name = write_pickup(self.directory, "", ["bob@example.org"], MESSAGE)
        self.assertEqual(stat.S_IMODE(os.stat(self.directory).st_mode), 0o1733)
        self.assertEqual(stat.S_IMODE(os.stat(os.path.join(self.directory, name)).st_mode), 0o644)

    def test_names_are_unguessable_and_distinct(self) -> None:
        names = {write_pickup(self.directory, "", ["b@example.org"], MESSAGE) for _ in range(20)}
        self.assertEqual(len(names), 20)
        self.assertTrue(all(len(n.split(".")[1]) == 32 for n in names))

    def test_failure_leaves_no_file(self) -> None:
        import mailserver.queue.pickup as pickup

        def broken(fd):
            raise OSError(28, "No space left on device")

        os.mkdir(self.directory)
        self.patch(pickup.os, "fsync", broken)
        self.assertRaises(OSError, write_pickup, self.directory, "", ["b@example.org"], MESSAGE)
        self.assertEqual(os.listdir(self.directory), [])


class ParseTests(SynchronousTestCase):
    def test_round_trip(self) -> None:
        data = b'{"version": 1, "sender": "", "recipients": ["b@example.org"], "flags": {}}\n' + MESSAGE
        entry = parse_pickup(data)
        self.assertEqual((entry.sender, entry.recipients, entry.message), ("", ["b@example.org"], MESSAGE))
        self.assertFalse(entry.extract_recipients)

    def test_refused(self) -> None:
        for data in (
            b"",
            b"no json\n",
            b'{"version": 2, "sender": "", "recipients": ["b@x"]}\n',
            b'{"version": 1, "sender": 5, "recipients": ["b@x"]}\n',
            b'{"version": 1, "sender": "", "recipients": []}\n',
            b'{"version": 1, "sender": "", "recipients": ["b@x\\r\\nRCPT TO:<c@y>"]}\n',
            b'{"version": 1, "sender": "", "recipients": ["b@x"], "flags": {"extract_recipients": "yes"}}\n',
        ):
            self.assertRaises(PickupError, parse_pickup, data)


class ReadPickupTests(SynchronousTestCase):
    """The daemon treats maildrop files as hostile."""

    def setUp(self) -> None:
        self.directory = self.mktemp()
        os.mkdir(self.directory)
        self.name = write_pickup(self.directory, "", ["b@example.org"], MESSAGE)
        self.path = os.path.join(self.directory, self.name)

    def test_reads_file_and_owner(self) -> None:
        entry, uid = read_pickup(self.path, 1 << 20)
        self.assertEqual(entry.message, MESSAGE)
        self.assertEqual(uid, os.getuid())

    def test_symlink_refused(self) -> None:
        secret = os.path.join(self.directory, "..", "secret")
        with open(secret, "w") as f:
            f.write("root:x:0:0\n")
        link = os.path.join(self.directory, "link")
        os.symlink(os.path.abspath(secret), link)
        self.assertRaises(PickupError, read_pickup, link, 1 << 20)

    def test_fifo_refused_without_blocking(self) -> None:
        fifo = os.path.join(self.directory, "fifo")
        os.mkfifo(fifo)
        self.assertRaises(PickupError, read_pickup, fifo, 1 << 20)

    def test_hard_link_refused(self) -> None:
        os.link(self.path, os.path.join(self.directory, "other"))
        self.assertRaises(PickupError, read_pickup, self.path, 1 << 20)

    def test_too_large_refused(self) -> None:
        self.assertRaises(PickupError, read_pickup, self.path, 10)


class Injector:
    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.results: list = []  # Deferreds or exceptions, in turn; empty: success

    def __call__(self, sender, recipients, message, extract):
        self.calls.append((sender, recipients, message, extract))
        if self.results:
            result = self.results.pop(0)
            return result if isinstance(result, Deferred) else fail(result)
        return succeed(None)


class PickupServiceTests(TestCase):
    def setUp(self) -> None:
        self.directory = os.path.join(self.mktemp(), "maildrop")
        os.makedirs(os.path.dirname(self.directory))
        self.clock = Clock()
        self.inject = Injector()
        self.service = PickupService(self.directory, reactor, self.inject, clock=self.clock, retry_delay=60)
        self.addCleanup(lambda: self.service.running and self.service.stopService())

    def files(self) -> list[str]:
        return sorted(n for n in os.listdir(self.directory) if n != CORRUPT)

    async def test_picks_up_what_was_dropped_while_down(self) -> None:
        write_pickup(self.directory, "alice@example.com", ["bob@example.org"], MESSAGE, {"extract_recipients": True})
        self.service.startService()
        await self.service.ready
        self.assertEqual(self.inject.calls, [("alice@example.com", ["bob@example.org"], MESSAGE, True)])
        self.assertEqual(self.files(), [])

    async def test_callers_during_a_scan_each_get_its_result(self) -> None:
        """The periodic task consumes its scan's result; another caller of the same scan still gets it."""
        self.service.startService()
        await self.service.ready
        write_pickup(self.directory, "", ["bob@example.org"], MESSAGE)
        first, second = self.service.scan(), self.service.scan()
        self.assertIsNot(first, second)
        self.assertEqual((await first, await second), (1, 1))

    async def test_file_kept_until_inject_fires(self) -> None:
        pending = Deferred()
        self.inject.results = [pending]
        self.service.startService()
        await self.service.ready
        write_pickup(self.directory, "", ["bob@example.org"], MESSAGE)
        scan = self.service.scan()
        while not self.inject.calls:  # the read happens in a thread
            await _turn()
        self.assertEqual(len(self.files()), 1)
        pending.callback(None)
        self.assertEqual(await scan, 1)
        self.assertEqual(self.files(), [])

    async def test_temporary_failure_retried_later(self) -> None:
        self.inject.results = [MailError(451, "4.3.0", "queue full")]
        write_pickup(self.directory, "", ["bob@example.org"], MESSAGE)
        self.service.startService()
        await self.service.ready
        self.assertEqual(len(self.files()), 1)
        await self.service.scan()
        self.assertEqual(len(self.inject.calls), 1)  # left alone until retry_delay passed
        self.clock.advance(61)
        await self.service.scan()
        self.assertEqual(len(self.inject.calls), 2)
        self.assertEqual(self.files(), [])

    async def test_unexpected_failure_keeps_file(self) -> None:
        self.inject.results = [RuntimeError("bug")]
        write_pickup(self.directory, "", ["bob@example.org"], MESSAGE)
        self.service.startService()
        await self.service.ready
        self.assertEqual(len(self.files()), 1)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    async def test_permanent_failure_moved_to_corrupt(self) -> None:
        self.inject.results = [MailError(550, "5.7.1", "content rejected")]
        name = write_pickup(self.directory, "", ["bob@example.org"], MESSAGE)
        self.service.startService()
        await self.service.ready
        self.assertEqual(self.files(), [])
        self.assertEqual(os.listdir(os.path.join(self.directory, CORRUPT)), [name])

    async def test_garbage_moved_to_corrupt(self) -> None:
        self.service.startService()
        await self.service.ready
        with open(os.path.join(self.directory, "junk"), "wb") as f:
            f.write(b"not a maildrop file")
        await self.service.scan()
        self.assertEqual(self.inject.calls, [])
        self.assertEqual(os.listdir(os.path.join(self.directory, CORRUPT)), ["junk"])

    async def test_files_being_written_are_skipped(self) -> None:
        self.service.startService()
        await self.service.ready
        with open(os.path.join(self.directory, ".tmp.half"), "wb") as f:
            f.write(b"{")
        await self.service.scan()
        self.assertEqual(self.inject.calls, [])
        self.assertEqual(sorted(os.listdir(self.directory)), sorted([CORRUPT, ".tmp.half"]))

    async def test_corrupt_directory_owned_by_someone_else_not_used(self) -> None:
        os.makedirs(os.path.join(self.directory, CORRUPT), mode=0o777)
        os.chmod(os.path.join(self.directory, CORRUPT), 0o777)  # a user made it first
        self.service.startService()
        await self.service.ready
        with open(os.path.join(self.directory, "junk"), "wb") as f:
            f.write(b"x")
        await self.service.scan()
        self.assertEqual(os.listdir(os.path.join(self.directory, CORRUPT)), [])
        self.assertEqual(self.files(), [])

    async def test_polls_on_the_clock(self) -> None:
        self.service.startService()
        await self.service.ready
        write_pickup(self.directory, "", ["bob@example.org"], MESSAGE)
        self.clock.advance(self.service.interval)
        while self.files():
            await _turn()
        self.assertEqual(len(self.inject.calls), 1)


def _turn() -> Deferred:
    """Let the reactor run once (thread results come back through it)."""
    d = Deferred()
    reactor.callLater(0, d.callback, None)
    return d
