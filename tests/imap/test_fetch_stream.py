"""
Full-body FETCH throughput (issue 15): thread trips, reads and copies per
message, read-ahead and flow control.  Figures: bench/imap_read.py.
"""

from __future__ import annotations

import os
import re

from twisted.trial.unittest import SynchronousTestCase

from mailserver.imap import message_commands
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
