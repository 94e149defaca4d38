"""Tests for streaming RETR/TOP bodies: thread trips per message (issue 15)."""

from __future__ import annotations

import io
import os

from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from mailserver.pop3.mailbox import MaildirMailbox, _open_message
from mailserver.pop3.lock import SessionRegistry
from mailserver.pop3.stream import CHUNK_SIZE, MessageStreamer
from mailserver.store.reader import MaildirReader
from mailserver.pop3.wire import TopFilter
from tests.pop3.support import ManualThreads, deliver, make_maildir


class StreamerTests(SynchronousTestCase):
    def stream(self, fp, chunk_size: int = 64, top=None) -> tuple[bytes, int]:
        threads = ManualThreads()
        transport = StringTransport()
        d = MessageStreamer(fp, transport, threads, top, chunk_size=chunk_size).start()
        trips = 0
        for _ in range(1000):
            if not threads.calls:
                break
            threads.run_one()
            trips += 1
        self.successResultOf(d)
        return transport.value(), trips

    def stream_file(self, content: bytes) -> tuple[bytes, int]:
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(content)
        with open(path, "rb") as fp:
            return self.stream(fp)

    def test_regression_short_read_ends_without_a_trip_for_eof(self) -> None:
        """Issue 15: a file of 100 bytes in 64-byte chunks took 3 trips (the last read b"")."""
        data, trips = self.stream_file(b"x" * 98 + b"\r\n")
        self.assertEqual(trips, 2)
        self.assertEqual(data, b"x" * 98 + b"\r\n.\r\n")

    def test_exact_multiple_of_chunk_reads_to_eof(self) -> None:
        data, trips = self.stream_file(b"y" * 62 + b"\r\n")
        self.assertEqual(trips, 2)
        self.assertEqual(data, b"y" * 62 + b"\r\n.\r\n")

    def test_in_memory_message_needs_no_trip(self) -> None:
        data, trips = self.stream(io.BytesIO(b"a\n.b\n" * 40))
        self.assertEqual(trips, 0)
        self.assertEqual(data, b"a\r\n..b\r\n" * 40 + b".\r\n")

    def test_top_of_in_memory_message(self) -> None:
        data, trips = self.stream(io.BytesIO(b"H: v\n\nl1\nl2\nl3\n"), top=TopFilter(1))
        self.assertEqual(trips, 0)
        self.assertEqual(data, b"H: v\r\n\r\nl1\r\n.\r\n")


class OpenTests(SynchronousTestCase):
    def test_regression_small_message_read_with_its_open(self) -> None:
        """Issue 15: RETR of a small message is one thread trip (open and read), then memory."""
        maildir = make_maildir(self.mktemp())
        name = deliver(maildir, b"small body\n")
        threads = ManualThreads()
        mailbox = MaildirMailbox(MaildirReader(maildir), SessionRegistry(), threads)
        d = mailbox.open()
        threads.run_all()
        self.successResultOf(d)
        got = mailbox.getMessage(0)
        self.assertEqual(threads.run_all(), 1)
        fp = self.successResultOf(got)
        self.assertIsInstance(fp, io.BytesIO)
        self.assertEqual(fp.read(), b"small body\n")
        mailbox.logout()
        self.assertTrue(os.path.exists(os.path.join(maildir, "new", name)))

    def test_large_message_stays_a_file(self) -> None:
        maildir = make_maildir(self.mktemp())
        name = deliver(maildir, b"z" * (CHUNK_SIZE + 1))
        fp, path = _open_message(MaildirReader(maildir), os.path.join(maildir, "new", name), name.split(":")[0])
        with fp:
            self.assertNotIsInstance(fp, io.BytesIO)
            self.assertEqual(len(fp.read()), CHUNK_SIZE + 1)
