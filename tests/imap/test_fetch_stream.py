"""
Full-body FETCH throughput (issue 15): thread trips, reads and copies per
message, read-ahead and flow control.  Figures: bench/imap_read.py.
"""

from __future__ import annotations

import os
import re

from twisted.trial.unittest import SynchronousTestCase

from mailserver.imap import binary, message_commands, parts
from mailserver.imap.fetch import Renderer
from mailserver.imap.syntax import FetchItem, Section
from mailserver.store.index import MessageRecord
from tests.imap.support import MemorySession, crlf, deliver
from tests.imap.test_protocol import tagged
from tests.reactors import ThreadedClock


def message(n: int) -> bytes:
    body = b"".join(b"line %d of message %d\n" % (i, n) for i in range(150))
    return b"From: a@example.org\nSubject: m%d\n\n" % n + body


def fetched_bodies(out: bytes) -> list[bytes]:
    """The literals of ``* n FETCH (BODY[] {size}`` responses, in order."""
    bodies, at = [], 0
    for _ in range(out.count(b"FETCH (")):
        m = re.compile(rb"\* \d+ FETCH \(BODY\[\] \{(\d+)\}\r\n").search(out, at)
        if m is None:
            break
        size = int(m.group(1))
        bodies.append(out[m.end():m.end() + size])
        at = m.end() + size
    return bodies


class FetchStreamTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = ThreadedClock()
        self.s = MemorySession(self, reactor=self.reactor)
        self.messages = [message(n) for n in range(30)]
        for data in self.messages:
            deliver(self.s.maildir(), data)
        self.s.send(b"L LOGIN alice secret\r\n")
        self.s.send(b"s SELECT INBOX\r\n")
        self.patch(message_commands, "BATCH_MESSAGES", 10)
        self.reactor.pool.calls.clear()

    def reads(self) -> list[tuple]:
        return [args for f, args in self.reactor.pool.calls if getattr(f, "__name__", "") == "read_many"]

    def test_regression_fetch_bodies_batched_thread_trips(self) -> None:
        """30 messages in batches of 10: 3 thread trips, byte-identical CRLF bodies."""
        out = self.s.send(b"f FETCH 1:* BODY.PEEK[]\r\n")
        self.assertEqual(tagged(out, b"f"), b"f OK FETCH completed")
        self.assertEqual(len(self.reads()), 3)  # besides them: the refresh after the command
        self.assertEqual(sum(len(uids) for (uids,) in self.reads()), 30)
        self.assertEqual(fetched_bodies(out), [crlf(m) for m in self.messages])

    def test_regression_fetch_one_read_per_message(self) -> None:
        """Each file is opened once and read with one os.read of its known size."""
        calls = []
        real_read, real_open = os.read, os.open
        self.patch(os, "read", lambda fd, n: calls.append(("read", n)) or real_read(fd, n))
        self.patch(os, "open", lambda *a, **kw: calls.append(("open", a[0])) or real_open(*a, **kw))
        out = self.s.send(b"f FETCH 1:* BODY.PEEK[]\r\n")
        self.assertEqual(tagged(out, b"f"), b"f OK FETCH completed")
        self.assertEqual(sum(1 for c in calls if c[0] == "read"), len(self.messages))
        self.assertEqual(sum(1 for c in calls if c[0] == "open"), len(self.messages))

    def test_regression_fetch_reads_ahead_and_stops_when_paused(self) -> None:
        """
        The next batch is read while this one is written; while the client
        does not read, no more than that one batch ahead is read (memory stays
        bounded).
        """
        self.reactor.pool.synchronous = False
        self.s.send(b"f FETCH 1:* BODY.PEEK[]\r\n")
        self.assertEqual(len(self.reactor.pool.pending), 1)
        self.s.transport.producer.pauseProducing()  # the client stops reading
        self.reactor.pool.run_next()
        out = self.s.output()
        self.assertEqual(len(fetched_bodies(out)), 10)
        self.assertEqual(len(self.reactor.pool.pending), 1)  # batch 2 read ahead
        self.reactor.pool.run_next()
        self.assertEqual(self.s.output(), b"")  # paused: batch 2 waits, batch 3 is not read
        self.assertEqual(self.reactor.pool.pending, [])
        self.s.transport.producer.resumeProducing()
        out = self.s.output()
        self.assertEqual(len(fetched_bodies(out)), 10)
        self.assertEqual(len(self.reactor.pool.pending), 1)  # batch 3
        self.reactor.pool.run()
        self.assertEqual(tagged(self.s.output(), b"f"), b"f OK FETCH completed")
        self.assertEqual(len(self.reads()), 3)

    def test_regression_moved_file_found_again(self) -> None:
        """A file renamed under the snapshot (flags set elsewhere) is read from its new name."""
        index = self.s.server.selected.index
        record = index.snapshot.records[0]
        os.rename(os.path.join(index.path, record.subdir, record.name),
                  os.path.join(index.path, "cur", record.base + ":2,S"))
        self.assertEqual(index.read_many([record.uid, 999]), {record.uid: crlf(self.messages[0]), 999: None})


class RendererPiecesTests(SynchronousTestCase):
    def test_regression_body_literal_not_copied(self) -> None:
        """BODY[]'s content is handed to the transport as it is: no per-message copy."""
        data = crlf(message(1))
        record = MessageRecord(7, "b", "new", "b", "", 0.0, len(data), {"size": len(data)})
        renderer = Renderer([FetchItem("BODY", Section(peek=True))], uid_command=True)
        pieces = renderer.render_pieces(3, record, [], data)
        self.assertTrue(any(p is data for p in pieces))
        self.assertEqual(b"".join(pieces), b"* 3 FETCH (UID 7 BODY[] {%d}\r\n" % len(data) + data + b")")


class ReaderThreadWorkTests(SynchronousTestCase):
    """Issue 15: MIME parsing and BINARY decoding happen in the reader's thread trip, never on the reactor."""

    def setUp(self) -> None:
        self.reactor = ThreadedClock()
        self.s = MemorySession(self, reactor=self.reactor)
        for _ in range(3):
            deliver(self.s.maildir(), B64_MESSAGE)
        self.s.send(b"L LOGIN alice secret\r\n")
        self.s.send(b"s SELECT INBOX\r\n")
        pool, self.in_pool = self.reactor.pool, [False]
        real = pool.callInThreadWithCallback

        def marked(onResult, func, *args, **kwargs):
            """The injected pool: C{in_pool} is true while a job runs, false while its result is handled."""
            def job(*a, **kw):
                self.in_pool[0] = True
                try:
                    return func(*a, **kw)
                finally:
                    self.in_pool[0] = False
            return real(onResult, job, *args, **kwargs)

        self.patch(pool, "callInThreadWithCallback", marked)

    def record(self, module, name: str) -> list[bool]:
        calls: list[bool] = []
        real = getattr(module, name)
        self.patch(module, name, lambda *a, **kw: calls.append(self.in_pool[0]) or real(*a, **kw))
        return calls

    def test_regression_binary_decoded_in_reader_thread(self) -> None:
        """BINARY[1] and BINARY.SIZE[1]: base64 is undone in the pool job that read the file."""
        decodes = self.record(binary, "decode")
        parses = self.record(parts, "parse")
        out = self.s.send(b"f FETCH 1:* (BINARY.PEEK[1] BINARY.SIZE[1] BODY.PEEK[1.MIME])\r\n")
        self.assertEqual(tagged(out, b"f"), b"f OK FETCH completed")
        self.assertEqual(out.count(b"BINARY[1] ~{6}\r\n\x00\x01bin\xff"), 3)
        self.assertEqual(out.count(b"BINARY.SIZE[1] 6"), 3)
        self.assertEqual(decodes, [True] * 3)  # once per message (BINARY and BINARY.SIZE share it), in the pool
        self.assertEqual(parses, [True] * 3)

    def test_regression_unknown_cte_found_in_reader_reported_in_order(self) -> None:
        """An encoding the reader could not undo is reported after the messages before it."""
        deliver(self.s.maildir(), B64_MESSAGE.replace(b"base64", b"x-uuencode"))
        self.s.send(b"n NOOP\r\n")
        out = self.s.send(b"f FETCH 1:* BINARY.PEEK[1]\r\n")
        self.assertEqual(out.count(b"BINARY[1] ~{6}"), 3)
        self.assertIn(b"f NO [UNKNOWN-CTE]", out)
        self.assertNotIn(b"* 4 FETCH", out)


B64_MESSAGE = (b"From: a@example.org\nContent-Type: multipart/mixed; boundary=x\n\n--x\n"
               b"Content-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\nAAFiaW7/\n--x--\n")


class BoundedFetchTests(SynchronousTestCase):
    def test_regression_fetch_bounded_queue_and_trips(self) -> None:
        """
        A FETCH BODY.PEEK[] of 100 batches to a client that reads one batch
        at a time: never more than one read ahead, one batch queued at a time,
        every byte in order, one thread trip per batch.
        """
        self.patch(message_commands, "BATCH_MESSAGES", 30)
        count = 3000
        reactor = ThreadedClock(synchronous=False)
        s = MemorySession(self, reactor=reactor)
        data = b"From: a@example.org\nSubject: s\n\nbody\n"
        for _ in range(count):
            deliver(s.maildir(), data)
        s.send(b"L LOGIN alice secret\r\n")
        reactor.pool.run()
        s.send(b"s SELECT INBOX\r\n")
        reactor.pool.run()
        s.output()
        reactor.pool.calls.clear()
        s.send(b"f FETCH 1:* BODY.PEEK[]\r\n")
        received, biggest = [], 0
        for _ in range(10 * count):  # bounded: one turn per batch
            self.assertLessEqual(len(reactor.pool.pending), 1)  # at most one batch read ahead
            if s.transport.producer is not None:  # None: the batches are done, the refresh before OK runs
                s.transport.producer.pauseProducing()  # the socket is full once a batch is written
            if reactor.pool.pending:
                reactor.pool.run_next()
            out = s.output()  # the client reads it
            biggest = max(biggest, len(out))
            received.append(out)
            if b"f OK" in out:
                break
            if s.transport.producer is not None:
                s.transport.producer.resumeProducing()
        text = crlf(data)
        expected = b"".join(b"* %d FETCH (BODY[] {%d}\r\n" % (n, len(text)) + text + b")\r\n"
                            for n in range(1, count + 1))
        self.assertEqual(b"".join(received), expected + b"f OK FETCH completed\r\n")
        self.assertLessEqual(biggest, len(expected) // 100 + 200)  # one batch, and the tagged reply
        trips = [f for f, _ in reactor.pool.calls if getattr(f, "__name__", "") == "read_many"]
        self.assertEqual(len(trips), 100)

    def test_regression_render_batch_without_literals_piece_per_message(self) -> None:
        """
        2,000 envelope responses are 2,000 pieces: the text is not one buffer
        growing (and copied again) with every message of the batch.
        """
        record = MessageRecord(7, "b", "new", "b", "", 0.0, 10, {"size": 10, "envelope": "(NIL)"})
        renderer = Renderer([FetchItem("UID"), FetchItem("ENVELOPE")], uid_command=True)
        pieces = renderer.render_batch([(n, record, frozenset(), [], False, 0) for n in range(1, 2001)])
        self.assertEqual(len(pieces), 2000)
        self.assertEqual(pieces[1], b"* 2 FETCH (UID 7 ENVELOPE (NIL))\r\n")

    def test_regression_closing_text_joins_next_literal_header(self) -> None:
        """With literals, a message's ``)`` CRLF goes with the next header: two pieces per message."""
        data = crlf(message(1))
        record = MessageRecord(7, "b", "new", "b", "", 0.0, len(data), {"size": len(data)})
        renderer = Renderer([FetchItem("BODY", Section(peek=True))], uid_command=False)
        pieces = renderer.render_batch([(n, record, frozenset(), [data], False, 0) for n in (1, 2)])
        self.assertEqual(pieces, [b"* 1 FETCH (BODY[] {%d}\r\n" % len(data), data,
                                  b")\r\n* 2 FETCH (BODY[] {%d}\r\n" % len(data), data, b")\r\n"])
