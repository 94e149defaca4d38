"""Tests for mailserver.pop3.wire: CRLF, dot-stuffing and TOP across chunk boundaries."""

from __future__ import annotations

import re

from twisted.trial.unittest import SynchronousTestCase

from mailserver.pop3.wire import BodyEncoder, TopFilter, VirtualSize, uidl_for

SAMPLES = [
    b"Subject: a\n\nbody\n.\n..two\n.",
    b".starts with a dot\n\n.\r\n.\rx\r\n",
    b"H: v\r\n\r\nCRLF body\r\n.\r\nend",
    b"no newline at all",
    b"\n\nempty header\n",
    b"",
    b"a\r",
    b"\r\n.\n\r\r\n",
]


def reference(data: bytes) -> bytes:
    """What RFC 1939 wants on the wire, computed on the whole message at once."""
    crlf = re.sub(rb"(?<!\r)\n", b"\r\n", data)
    lines = crlf.split(b"\r\n")
    stuffed = b"\r\n".join(b"." + line if line.startswith(b".") else line for line in lines)
    if stuffed and not stuffed.endswith(b"\r\n"):
        stuffed += b"\r\n"
    return stuffed + b".\r\n"


def encode(chunks: list[bytes]) -> bytes:
    encoder = BodyEncoder()
    return b"".join(encoder.encode(c) for c in chunks) + encoder.finish()


def splits(data: bytes):
    """The message whole, in two at every position, and byte by byte."""
    yield [data]
    for i in range(len(data) + 1):
        yield [data[:i], data[i:]]
    yield [data[i : i + 1] for i in range(len(data))]


class BodyEncoderTests(SynchronousTestCase):
    def test_matches_reference_at_every_split(self) -> None:
        for data in SAMPLES:
            for chunks in splits(data):
                self.assertEqual(encode(chunks), reference(data), (data, chunks))

    def test_bare_lf_becomes_crlf_and_crlf_is_not_doubled(self) -> None:
        self.assertEqual(encode([b"a\nb\r\nc\n"]), b"a\r\nb\r\nc\r\n.\r\n")

    def test_dot_stuffing_across_chunk_boundary(self) -> None:
        # Twisted's transformChunk misses this one.
        self.assertEqual(encode([b"x\n", b".\n"]), b"x\r\n..\r\n.\r\n")

    def test_missing_final_newline_gets_one(self) -> None:
        self.assertEqual(encode([b"x"]), b"x\r\n.\r\n")


def top_reference(data: bytes, n: int) -> bytes:
    match = re.search(rb"\n\r?\n", b"\n" + data)
    if match is None:
        return data
    header_end = match.end() - 1
    body = data[header_end:]
    lines = body.split(b"\n")
    kept = b"\n".join(lines[:n])
    if n < len(lines):
        kept += b"\n"
    return data[:header_end] + (kept if n else b"")


class TopFilterTests(SynchronousTestCase):
    def test_matches_reference_at_every_split(self) -> None:
        messages = SAMPLES + [b"A: 1\nB: 2\n\nl1\nl2\nl3\n", b"A: 1\r\n\r\nl1\r\nl2"]
        for data in messages:
            for n in (0, 1, 2, 5):
                for chunks in splits(data):
                    top = TopFilter(n)
                    got = b""
                    for chunk in chunks:
                        got += top.feed(chunk)
                    self.assertEqual(got, top_reference(data, n), (data, n, chunks))

    def test_header_and_lines(self) -> None:
        top = TopFilter(1)
        self.assertEqual(top.feed(b"A: 1\n\nl1\nl2\n"), b"A: 1\n\nl1\n")
        self.assertTrue(top.done)

    def test_zero_lines_is_header_only(self) -> None:
        top = TopFilter(0)
        self.assertEqual(top.feed(b"A: 1\n\nbody\n"), b"A: 1\n\n")
        self.assertTrue(top.done)

    def test_header_end_split_between_chunks(self) -> None:
        # Twisted's _HeadersPlusNLines never finds a header end split like this.
        top = TopFilter(0)
        self.assertEqual(top.feed(b"A: 1\n") + top.feed(b"\nbody\n"), b"A: 1\n\n")

    def test_negative(self) -> None:
        self.assertRaises(ValueError, TopFilter, -1)


class VirtualSizeTests(SynchronousTestCase):
    def test_size_is_encoded_length_before_stuffing(self) -> None:
        for data in SAMPLES:
            for chunks in splits(data):
                counter = VirtualSize()
                for chunk in chunks:
                    counter.update(chunk)
                self.assertEqual(counter.size, len(re.sub(rb"(?<!\r)\n", b"\r\n", data)))


class UidlTests(SynchronousTestCase):
    def test_unique_name_is_the_uidl(self) -> None:
        self.assertEqual(uidl_for("1700000000.M1P2Q3.host"), "1700000000.M1P2Q3.host")

    def test_invalid_names_become_a_stable_digest(self) -> None:
        for bad in ("with space", "x" * 71, "caf\u00e9", ""):
            uidl = uidl_for(bad)
            self.assertRegex(uidl, r"^[0-9a-f]{40}$")
            self.assertEqual(uidl, uidl_for(bad))
        self.assertNotEqual(uidl_for("a b"), uidl_for("a  b"))
