"""DATA spooled to disk: spill threshold, serial writer, back-pressure, size limit, clean-up, edits."""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from mailserver.delivery import spool_edits
from mailserver.delivery.checks import ContentChecks
from mailserver.envelope import Client
from mailserver.delivery.incoming import IncomingSpool
from mailserver.delivery.pipeline import DeliveryPipeline
from mailserver.delivery.received import add_missing_headers
from mailserver.spooled import SpooledMessage
from mailserver.tables.regexp import compile_regexp_table
from tests.fakes import MemoryStore, build_core
from tests.reactors import ThreadedClock

HEADER = b"From: a@remote.example\nSubject: big\n\n"


class SpoolCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = ThreadedClock(synchronous=True)
        self.clock.advance(1_700_000_000)
        self.directory = os.path.join(os.path.abspath(self.mktemp()), "incoming")
        self.spool = IncomingSpool(self.directory, self.clock, threshold=100, high_water=200)
        self.spool.clear()

    def files(self) -> list[str]:
        return sorted(os.listdir(self.directory))

    def transaction(self, size_limit: int = 0, store: MemoryStore | None = None, checks=()):
        self.store = store or MemoryStore()
        core = build_core(self.clock, store=self.store, message_size_limit=size_limit, spool=self.spool,
                          checks=list(checks))
        pipeline = DeliveryPipeline(core)
        envelope = pipeline.begin(Client(ip="192.0.2.1", helo="c"), None)
        self.successResultOf(pipeline_check(pipeline, envelope))
        return pipeline.open_transaction(envelope)


def pipeline_check(pipeline: DeliveryPipeline, envelope):
    from twisted.internet.defer import Deferred

    from mailserver.address import parse_mailbox

    return Deferred.fromCoroutine(pipeline.check_recipient(envelope, parse_mailbox("bob@example.com")))


class SpillTests(SpoolCase):
    def test_small_message_stays_in_memory(self) -> None:
        writer = self.spool.writer()
        writer.write(b"x" * 60)
        writer.write(b"y" * 40)
        message = self.successResultOf(writer.finish())
        self.assertEqual(message, SpooledMessage(b"x" * 60 + b"y" * 40))
        self.assertEqual(self.clock.pool.calls, [])
        self.assertEqual(self.files(), [])

    def test_regression_large_message_not_held_in_memory(self) -> None:
        """DATA used to be kept whole in memory (9.4 MB of RSS per 9.5 MB message); past the threshold it is on disk."""
        writer = self.spool.writer()
        pieces = [bytes([65 + n]) * 30 for n in range(10)]
        for piece in pieces:
            writer.write(piece)
            self.assertLessEqual(sum(map(len, writer._memory + writer._queued)), self.spool.threshold)
        self.assertTrue(writer.spilled)
        self.assertEqual((writer._memory, writer._queued), ([], []))
        message = self.successResultOf(writer.finish())
        self.assertIsNotNone(message.path)
        self.assertEqual(len(message), 300)
        self.assertEqual(message.read(), b"".join(pieces))
        self.assertEqual(self.files(), [os.path.basename(message.path)])

    def test_one_write_at_a_time_and_back_pressure(self) -> None:
        """A serial writer: one job in the pool at once; behind past high water until it catches up."""
        self.clock.pool.synchronous = False
        writer = self.spool.writer()
        caught_up: list[bool] = []
        for _ in range(5):
            writer.write(b"z" * 80)
            self.assertLessEqual(len(self.clock.pool.pending), 1)
        self.assertTrue(writer.behind)
        writer.when_caught_up(lambda: caught_up.append(True))
        self.assertEqual(caught_up, [])
        self.clock.pool.run()
        self.assertEqual(caught_up, [True])
        self.assertFalse(writer.behind)
        d = writer.finish()
        self.clock.pool.run()
        self.assertEqual(self.successResultOf(d).read(), b"z" * 400)

    def test_leftovers_removed_at_start(self) -> None:
        for name in ("123.abc.0", "123.abc.1"):
            with open(os.path.join(self.directory, name), "wb") as handle:
                handle.write(b"never acknowledged")
        self.assertEqual(IncomingSpool(self.directory, self.clock).clear(), 2)
        self.assertEqual(self.files(), [])


class TransactionSpoolTests(SpoolCase):
    def test_regression_size_limit_stops_storing_at_once(self) -> None:
        """Past message_size_limit the spool file is removed and nothing more is written (no buffering to the end)."""
        transaction = self.transaction(size_limit=1000)
        transaction.write(HEADER + b"a" * 500)
        self.assertEqual(len(self.files()), 1)
        transaction.write(b"b" * 600)
        self.assertEqual(transaction.error.code, 552)
        self.assertEqual(self.files(), [])
        calls = len(self.clock.pool.calls)
        for _ in range(100):
            transaction.write(b"c" * 1000)
        self.assertEqual(len(self.clock.pool.calls), calls)
        failure = self.failureResultOf(transaction.commit())
        self.assertEqual((failure.value.code, failure.value.enhanced), (552, "5.3.4"))
        self.assertEqual(self.store.delivered, [])

    def test_delivered_byte_identical_and_spool_removed(self) -> None:
        body = b"".join(b"line %d\n" % n for n in range(2000))
        transaction = self.transaction()
        message = HEADER + body
        for start in range(0, len(message), 700):
            transaction.write(message[start : start + 700])
        self.successResultOf(transaction.commit())
        [(_, stored)] = self.store.delivered
        expected = add_missing_headers(message, "mx.example.com", transaction.envelope.queue_id, self.clock.seconds())
        self.assertTrue(stored.endswith(expected), stored[:400])
        self.assertEqual(self.files(), [])

    def test_spool_removed_on_abort(self) -> None:
        transaction = self.transaction()
        transaction.write(HEADER + b"x" * 500)
        self.assertEqual(len(self.files()), 1)
        transaction.abort()
        self.assertEqual(self.files(), [])

    def test_spool_removed_when_the_store_fails(self) -> None:
        from mailserver.errors import MailError

        store = MemoryStore()
        store.error = MailError(451, "4.3.0", "Error: mail store write error")
        transaction = self.transaction(store=store)
        transaction.write(HEADER + b"x" * 500)
        self.failureResultOf(transaction.commit())
        self.assertEqual(self.files(), [])

    def test_write_failure_is_451(self) -> None:
        os.rmdir(self.directory)
        with open(self.directory, "wb"):
            pass  # a file where the directory should be: the spool file cannot be made
        transaction = self.transaction()
        transaction.write(HEADER + b"x" * 500)
        failure = self.failureResultOf(transaction.commit())
        self.assertEqual(failure.value.code, 451)
        self.flushLoggedErrors()

    def test_header_checks_on_a_spooled_message(self) -> None:
        """Header edits change only the head: the file is not copied; the result equals the in-memory one."""
        table = compile_regexp_table("/^Subject:/ PREPEND X-Seen: yes\n/^X-Drop:/ IGNORE\n", "header_checks")
        checks = ContentChecks(header_checks=table)
        message = b"From: a@remote.example\nX-Drop: 1\nSubject: big\n\n" + b"body line\n" * 100
        transaction = self.transaction(checks=[checks])
        transaction.write(message)
        self.successResultOf(transaction.commit())
        [(_, stored)] = self.store.delivered
        want = checks.inspect(None, add_missing_headers(message, "mx.example.com", transaction.envelope.queue_id,
                                                        self.clock.seconds())).message
        self.assertTrue(stored.endswith(want))
        self.assertIn(b"X-Seen: yes\nSubject: big\n", stored)
        self.assertNotIn(b"X-Drop", stored)
        self.assertEqual(self.files(), [])

    def test_body_edits_stream_into_a_new_spool_file(self) -> None:
        self.patch(spool_edits, "EDIT_IN_MEMORY_LIMIT", 64)
        table = compile_regexp_table("/^secret (.*)/ REPLACE redacted $1\n", "body_checks")
        checks = ContentChecks(body_checks=table)
        message = b"Message-ID: <1@x>\nDate: now\n\n" + b"plain\n" * 50 + b"secret 42\n" + b"plain\n" * 50
        transaction = self.transaction(checks=[checks])
        transaction.write(message)
        self.successResultOf(transaction.commit())
        [(_, stored)] = self.store.delivered
        self.assertTrue(stored.endswith(message.replace(b"secret 42", b"redacted 42")))
        self.assertEqual(self.files(), [])


class HeaderTests(SpoolCase):
    def spooled(self, data: bytes) -> SpooledMessage:
        path = os.path.join(self.directory, "m")
        with open(path, "wb") as handle:
            handle.write(data)
        return SpooledMessage(b"", path, 0, len(data))

    def test_missing_headers_added_from_the_header_block_only(self) -> None:
        data = HEADER + b"x" * (1 << 20)
        message = self.spooled(data)
        added = spool_edits.add_headers(message, "mx.example.com", "ABC", 1_700_000_000, None)
        self.assertLess(len(added.head), 1 << 17)  # the body stays in the file
        self.assertEqual(added.read(), add_missing_headers(data, "mx.example.com", "ABC", 1_700_000_000))

    def test_header_longer_than_the_limit_left_alone(self) -> None:
        self.patch(spool_edits, "HEADER_READ_LIMIT", 1000)
        data = b"".join(b"X-H%d: v\n" % n for n in range(20000)) + b"\nbody\n"  # past one read
        message = self.spooled(data)
        self.assertTrue(spool_edits.add_headers(message, "mx.example.com", "ABC", 0, None) is message)

    def test_view_finds_across_the_seam(self) -> None:
        message = self.spooled(b"cd\nrest\n").prepend(b"ab")
        with message.view() as view:
            self.assertEqual(len(view), 10)
            self.assertEqual(view.find(b"bc"), 1)
            self.assertEqual(view.find(b"\n", 3), 4)
            self.assertEqual(view[1:6], b"bcd\nr")
            self.assertEqual(view[-1:0], b"")
            self.assertEqual(message.virtual_size(), 12)
        split_crlf = self.spooled(b"\nb").prepend(b"a\r")
        self.assertEqual(split_crlf.virtual_size(), 4)


class CopyFromSpoolTests(HeaderTests):
    """The store, the queue and the hold area copy a spooled message from its file, byte for byte."""

    def message(self) -> tuple[SpooledMessage, bytes]:
        body = b"".join(b"row %d\r\n" % n for n in range(30000))
        spooled = self.spooled(b"skip" + body).replace_start(4, b"Subject: x\n\n").prepend(b"Received: by us\n")
        return spooled, b"Received: by us\nSubject: x\n\n" + body

    def test_maildir_store(self) -> None:
        from mailserver.store.maildir import MaildirStore

        spooled, want = self.message()
        store = MaildirStore(self.clock, "mx.example.com")
        base = os.path.abspath(self.mktemp())
        copies = [(os.path.join(base, "a"), b"Delivered-To: a\n"), (os.path.join(base, "b"), b"Delivered-To: b\n")]
        names = self.successResultOf(store.deliver(spooled, copies))
        for (maildir, prefix), name in zip(copies, names):
            with open(os.path.join(maildir, "new", name), "rb") as handle:
                self.assertEqual(handle.read(), prefix + want)
            # CRLF rows count once, the four LF-only lines twice (IMAP RFC822.SIZE)
            self.assertIn(f",S={len(prefix) + len(want)},W={len(prefix) + len(want) + 4}", name)

    def test_queue_and_hold(self) -> None:
        from mailserver.queue.spool import SpoolDirectory
        from mailserver.store.hold import HoldArea

        spooled, want = self.message()
        queue = SpoolDirectory(os.path.abspath(self.mktemp()))
        queue_id = queue.store("a@remote.example", ["b@elsewhere.example"], spooled, 1_700_000_000)
        self.assertEqual(queue.read_message(queue_id), want)
        hold = HoldArea(os.path.abspath(self.mktemp()))
        held = hold.hold({"sender": "", "recipients": ["b@example.com"], "reason": "HOLD"}, spooled)
        self.assertEqual(hold.load(held)[1], want)
