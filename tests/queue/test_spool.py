"""The on-disk queue: durable enqueue, states as directories, recovery."""

from __future__ import annotations

import errno
import json
import os

from twisted.internet import reactor
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from mailserver.errors import MailError
from mailserver.interfaces import IOutboundQueue
from mailserver.queue import spool as spool_module
from mailserver.queue.envelope import EnvelopeError, is_queue_id
from mailserver.queue.spool import (
    ACTIVE,
    CORRUPT,
    DATA,
    DEFERRED,
    INCOMING,
    STALE_AGE,
    TMP,
    QueueEntryGone,
    Spool,
    SpoolDirectory,
)

MESSAGE = b"Subject: test\n\nhello\n"


def listing(directory: SpoolDirectory, state: str) -> list[str]:
    return sorted(os.listdir(os.path.join(directory.path, state)))


class SpoolDirectoryTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = SpoolDirectory(self.mktemp())

    def store(self, now: float = 1000.0, recipients=("bob@example.org",)) -> str:
        return self.directory.store("alice@example.com", list(recipients), MESSAGE, now)

    def test_store_writes_data_and_envelope(self) -> None:
        queue_id = self.store()
        self.assertTrue(is_queue_id(queue_id))
        with open(os.path.join(self.directory.path, DATA, queue_id), "rb") as f:
            self.assertEqual(f.read(), MESSAGE)
        with open(os.path.join(self.directory.path, INCOMING, queue_id), "rb") as f:
            document = json.loads(f.read())
        self.assertEqual(document["version"], 1)
        self.assertEqual(document["sender"], "alice@example.com")
        self.assertEqual(document["recipients"][0]["address"], "bob@example.org")
        self.assertEqual(document["recipients"][0]["status"], "pending")
        self.assertEqual(document["arrival"], 1000.0)
        self.assertEqual(document["size"], len(MESSAGE))
        self.assertEqual(listing(self.directory, TMP), [])

    def test_private_modes(self) -> None:
        queue_id = self.store()
        self.assertEqual(os.stat(self.directory.path).st_mode & 0o777, 0o700)
        self.assertEqual(os.stat(os.path.join(self.directory.path, DATA, queue_id)).st_mode & 0o777, 0o600)

    def test_ids_unique(self) -> None:
        ids = {self.store(now=1000.0) for _ in range(300)}
        self.assertEqual(len(ids), 300)

    def test_store_failure_leaves_nothing(self) -> None:
        if not os.path.isdir("/proc/self/fd"):
            self.skipTest("needs /proc")
        real_fsync = os.fsync
        synced: list[str] = []
        tmp, data = (os.path.join(self.directory.path, state) for state in (TMP, DATA))

        def failing_fsync(fd: int) -> None:
            path = os.readlink(f"/proc/self/fd/{fd}")
            synced.append(path)
            # tmp/ files: the message data first, then the envelope -- fail that one.
            if [os.path.dirname(p) for p in synced].count(tmp) == 2:
                raise OSError(errno.ENOSPC, "No space left on device")
            real_fsync(fd)

        self.directory.ensure()
        self.patch(spool_module.os, "fsync", failing_fsync)
        self.assertRaises(OSError, self.store)
        self.assertIn(data, synced[:-1])  # the data was stored first
        for state in (DATA, INCOMING, TMP):
            self.assertEqual(listing(self.directory, state), [], state)

    def test_every_step_is_fsynced(self) -> None:
        if not os.path.isdir("/proc/self/fd"):
            self.skipTest("needs /proc")
        synced = []
        real = os.fsync

        def recording(fd: int) -> None:
            synced.append(os.readlink(f"/proc/self/fd/{fd}"))
            real(fd)

        self.directory.ensure()
        self.patch(spool_module.os, "fsync", recording)
        self.store()
        data_dir = os.path.join(self.directory.path, DATA)
        incoming = os.path.join(self.directory.path, INCOMING)
        self.assertIn(data_dir, synced)
        self.assertIn(incoming, synced)
        self.assertEqual(synced[-1], incoming)  # the rename into incoming/ is made durable last
        self.assertGreaterEqual(sum(1 for p in synced if f"/{TMP}/" in p), 2)  # content and envelope

    def test_activate_defer_due_remove(self) -> None:
        queue_id = self.store()
        self.assertEqual(self.directory.due(1000.0), [queue_id])
        envelope, message = self.directory.activate(queue_id)
        self.assertEqual(message, MESSAGE)
        self.assertEqual(listing(self.directory, ACTIVE), [queue_id])
        self.assertEqual(self.directory.due(1000.0, busy=[queue_id]), [])
        envelope.next_attempt = 1300.0
        envelope.recipients[0].last_error = "try later"
        self.directory.defer(envelope)
        self.assertEqual(listing(self.directory, ACTIVE), [])
        self.assertEqual(listing(self.directory, DEFERRED), [queue_id])
        self.assertEqual(self.directory.due(1299.0), [])
        self.assertEqual(self.directory.due(1299.0, flush=True), [queue_id])
        self.assertEqual(self.directory.due(1300.0), [queue_id])
        again, _ = self.directory.activate(queue_id)
        self.assertEqual(again.recipients[0].last_error, "try later")
        self.assertTrue(self.directory.remove(queue_id))
        for state in (DATA, INCOMING, ACTIVE, DEFERRED):
            self.assertEqual(listing(self.directory, state), [])
        self.assertRaises(QueueEntryGone, self.directory.activate, queue_id)

    def test_stuck_active_entry_is_due_when_nobody_works_on_it(self) -> None:
        queue_id = self.store()
        self.directory.activate(queue_id)
        self.assertEqual(self.directory.due(0.0), [queue_id])
        envelope, _ = self.directory.activate(queue_id)  # already in active/: fine
        self.assertEqual(envelope.queue_id, queue_id)

    def test_recover_returns_active_to_incoming(self) -> None:
        queue_id = self.store()
        self.directory.activate(queue_id)
        fresh = SpoolDirectory(self.directory.path)
        self.assertEqual(fresh.recover(), [queue_id])
        self.assertEqual(listing(fresh, ACTIVE), [])
        self.assertEqual(listing(fresh, INCOMING), [queue_id])

    def test_clean_removes_only_stale_leftovers(self) -> None:
        queue_id = self.store(now=1000.0)
        self.directory.ensure()
        tmp_old = os.path.join(self.directory.path, TMP, "old")
        tmp_new = os.path.join(self.directory.path, TMP, "new")
        orphan = os.path.join(self.directory.path, DATA, "ABCDEF0123456")
        for path in (tmp_old, tmp_new, orphan):
            open(path, "wb").close()
        now = os.stat(tmp_new).st_mtime + 10
        os.utime(tmp_old, (now - STALE_AGE - 100,) * 2)
        os.utime(orphan, (now - STALE_AGE - 100,) * 2)
        os.utime(os.path.join(self.directory.path, DATA, queue_id), (now - STALE_AGE - 100,) * 2)
        removed = self.directory.clean(now=now)
        self.assertEqual(sorted(path for path, _ in removed), [os.path.join(DATA, "ABCDEF0123456"), os.path.join(TMP, "old")])
        self.assertEqual(listing(self.directory, TMP), ["new"])
        self.assertEqual(listing(self.directory, DATA), [queue_id])  # referenced: kept however old

    def test_corrupt_envelope_moved_aside(self) -> None:
        queue_id = self.store()
        with open(os.path.join(self.directory.path, INCOMING, queue_id), "wb") as f:
            f.write(b"\x80\x03}q\x00.")  # a pickle, say
        self.assertRaises(EnvelopeError, self.directory.activate, queue_id)
        self.assertEqual(listing(self.directory, CORRUPT), [queue_id])
        self.assertEqual(listing(self.directory, ACTIVE), [])

    def test_envelope_without_content_is_dropped(self) -> None:
        queue_id = self.store()
        os.unlink(os.path.join(self.directory.path, DATA, queue_id))
        self.assertRaises(QueueEntryGone, self.directory.activate, queue_id)
        self.assertEqual(listing(self.directory, ACTIVE), [])

    def test_save_after_delete_does_not_resurrect(self) -> None:
        queue_id = self.store()
        envelope, _ = self.directory.activate(queue_id)
        self.directory.remove(queue_id)
        self.assertRaises(QueueEntryGone, self.directory.defer, envelope)
        self.assertEqual(listing(self.directory, DEFERRED), [])

    def test_entries_and_remove_all(self) -> None:
        first = self.store()
        second = self.store()
        self.directory.activate(second)
        entries = self.directory.entries()
        self.assertEqual([(e.queue_id, e.state) for e in entries], [(second, ACTIVE), (first, INCOMING)])
        self.assertEqual(self.directory.remove_all(), 2)
        self.assertEqual(self.directory.entries(), [])
        self.assertEqual(listing(self.directory, DATA), [])

    def test_remove_unknown(self) -> None:
        self.directory.ensure()
        self.assertFalse(self.directory.remove("ABCDEF012345"))
        self.assertRaises(ValueError, self.directory.remove, "../../etc")

    def test_flush_trigger(self) -> None:
        self.assertFalse(self.directory.take_flush_request())
        self.directory.request_flush()
        self.assertTrue(self.directory.take_flush_request())
        self.assertFalse(self.directory.take_flush_request())


class SpoolTests(TestCase):
    def setUp(self) -> None:
        self.spool = Spool(self.mktemp(), reactor)

    def test_provides_interface(self) -> None:
        self.assertTrue(verifyObject(IOutboundQueue, self.spool))

    async def test_enqueue_fires_with_id_after_write(self) -> None:
        heard = []
        self.spool.add_listener(heard.append)
        queue_id = await self.spool.enqueue("", ["bob@example.org", "bob@example.org"], MESSAGE)
        self.assertEqual(heard, [queue_id])
        envelope = self.spool.directory.find(queue_id)
        self.assertEqual(envelope.sender, "")
        self.assertEqual([r.address for r in envelope.recipients], ["bob@example.org"])

    async def test_enqueue_failure_is_451(self) -> None:
        self.spool.directory.ensure()

        def no_space(fd: int) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        self.patch(spool_module.os, "fsync", no_space)
        with self.assertRaises(MailError) as caught:
            await self.spool.enqueue("a@example.com", ["b@example.org"], MESSAGE)
        self.assertEqual(caught.exception.code, 451)
        self.assertEqual(self.spool.directory.entries(), [])

    def test_enqueue_refuses_bad_arguments(self) -> None:
        self.assertRaises(ValueError, self.spool.enqueue, "a@example.com", [], MESSAGE)
        self.assertRaises(TypeError, self.spool.enqueue, "a@example.com", ["b@example.org"], "text")

    async def test_list_delete(self) -> None:
        first = await self.spool.enqueue("a@example.com", ["b@example.org"], MESSAGE)
        second = await self.spool.enqueue("a@example.com", ["c@example.org"], MESSAGE)
        self.assertEqual({e.queue_id for e in await self.spool.list()}, {first, second})
        self.assertTrue(await self.spool.delete(first))
        self.assertFalse(await self.spool.delete(first))
        self.assertEqual(await self.spool.delete_all(), 1)
        self.assertEqual(await self.spool.list(), [])


class NotDueTests(SynchronousTestCase):
    def test_activate_leaves_a_deferred_message_that_is_not_due(self) -> None:
        from mailserver.queue.spool import NotDue

        directory = SpoolDirectory(self.mktemp())
        queue_id = directory.store("a@example.com", ["b@example.org"], MESSAGE, 1000.0)
        envelope, _ = directory.activate(queue_id, due_by=1000.0)  # incoming: always due
        envelope.next_attempt = 1300.0
        directory.defer(envelope)
        self.assertRaises(NotDue, directory.activate, queue_id, 1299.0)
        self.assertEqual(listing(directory, DEFERRED), [queue_id])
        directory.activate(queue_id, 1300.0)
        self.assertEqual(listing(directory, ACTIVE), [queue_id])
