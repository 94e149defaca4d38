"""The header block scan of L{mailserver.delivery.received}: one regular expression, the old line loop's answers."""

from __future__ import annotations

import random
import re

from twisted.trial.unittest import SynchronousTestCase

from mailserver.delivery.received import add_missing_headers, has_header, header_end, header_names
from mailserver.queue.bounce import original_headers

PIECES = [b"Subject: hi\n", b"Date: x\n", b"From: a@b\n", b" folded\n", b"\tfolded\n", b"\n", b"\r\n",
          b"body line\n", b"Message-ID: <1@x>\n", b"message-id:<2@x>\n", b"X-Y:z", b"Bad header: x\n",
          b"From a@b Mon\n", b":\n", b"DATE :x\n", b"K:\r\n", b" ", b"", b"\xff\xfe: x\n", b"A:\n\n"]

_HEADER_LINE = re.compile(rb"[!-9;-~]+:")


def line_by_line(message: bytes) -> int:
    """queue/submission.py's former header_end, one line at a time: the reference."""
    offset = 0
    while offset < len(message):
        end = message.find(b"\n", offset)
        end = len(message) if end < 0 else end + 1
        line = message[offset:end]
        if line == b"\n":
            return offset
        if not (_HEADER_LINE.match(line) or (offset and line[:1] in (b" ", b"\t"))):
            return offset
        offset = end
    return offset


def former_original_headers(message: bytes) -> bytes:
    """bounce.original_headers before it used the one-regex scan."""
    message = message.replace(b"\r\n", b"\n")
    offset = 0
    while offset < len(message):
        end = message.find(b"\n", offset)
        end = len(message) if end < 0 else end + 1
        line = message[offset:end]
        if line.strip(b"\r\n") == b"":
            break
        if not (_HEADER_LINE.match(line) or (offset and line[:1] in (b" ", b"\t"))):
            break
        offset = end
    headers = message[:offset]
    if headers and not headers.endswith(b"\n"):
        headers += b"\n"
    return headers


class HeaderScanTests(SynchronousTestCase):
    def test_regression_same_end_as_line_by_line(self) -> None:
        rng = random.Random(15)
        for _ in range(5000):
            message = b"".join(rng.choice(PIECES) for _ in range(rng.randrange(0, 8)))
            end = header_end(message)
            self.assertEqual(end, line_by_line(message), message)
            self.assertEqual(original_headers(message), former_original_headers(message), message)
            names = header_names(message, end)
            for name in (b"Message-ID", b"Date", b"From", b"Subject"):
                self.assertEqual(name.lower() in names, has_header(message, end, name), (message, name))

    def test_missing_headers_added(self) -> None:
        out = add_missing_headers(b"Subject: x\nmessage-id: <a@b>\n\nbody\n", "mx", "Q1", 1700000000.0, "s@x")
        self.assertTrue(out.startswith(b"Subject: x\nmessage-id: <a@b>\nDate: "), out)
        self.assertIn(b"\nFrom: s@x\n\nbody\n", out)
        self.assertEqual(add_missing_headers(b"From x Mon\nSubject: y\n", "mx", "Q1", 0.0), b"From x Mon\nSubject: y\n")

    def test_message_id_stamp_as_strftime(self) -> None:
        """The Message-ID stamp, cached per second, is the UTC time of the (fractional) second."""
        import time

        for now in (0.0, 1700000000.0, 1700000000.999, 1700000001.5, 2000000000.25):
            out = add_missing_headers(b"Subject: x\n\nbody\n", "mx", "Q1", now)
            stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(now))
            self.assertIn(f"Message-ID: <{stamp}.Q1@mx>\n".encode(), out)


class ReceivedHeloTests(SynchronousTestCase):
    def test_helo_name_made_printable(self) -> None:
        """The HELO name in Received: non-printable characters as "?", none as "unknown" (asked twice: remembered)."""
        from mailserver.delivery.received import received_header

        for helo in ("c.example", "", "a b\tc", "caf\u00e9.example", "x\x00y", " "):
            expected = re.sub(r"[^\x21-\x7e]", "?", helo) or "unknown"
            for _ in range(2):
                header = received_header(helo, "192.0.2.1", "mx.example.com", "ESMTP", "Q1", None, 1_700_000_000)
                self.assertTrue(header.startswith(f"Received: from {expected} (unknown [192.0.2.1])\n".encode()),
                                header)
