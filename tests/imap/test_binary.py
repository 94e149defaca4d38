"""
BINARY (RFC 3516): decoding of base64 and quoted-printable parts, literal8
APPEND stored 7-bit clean, FETCH BINARY[]/BINARY.PEEK[]/BINARY.SIZE[].
"""

from __future__ import annotations

import base64
import re

from twisted.trial.unittest import SynchronousTestCase

from mailserver.imap import parts as mime
from mailserver.imap.binary import UnknownCte, decode, decode_qp, decoded, encode_binary_parts
from tests.imap.support import MemorySession, deliver

MULTIPART = (
    b"From: a@b\r\nMime-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n"
    b"--x\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    + base64.encodebytes(b"\x00binary\r\nbytes\xff").replace(b"\n", b"\r\n")
    + b"\r\n--x\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
    b"caf=C3=A9 =\r\nsoft  \r\n"
    b"\r\n--x\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\nbegin\r\n"
    b"\r\n--x--\r\n"
)


class DecodeTests(SynchronousTestCase):
    def test_quoted_printable(self) -> None:
        self.assertEqual(decode_qp(b"a  \r\nb=\r\nc=41=4a =\r\n=zz\r\n"), b"a\r\nbcAJ =zz\r\n")
        self.assertEqual(decode_qp(b"end="), b"end")

    def test_base64_lenient(self) -> None:
        self.assertEqual(decode(b"aGVs\r\nbG8=\r\n", "base64"), b"hello")
        self.assertEqual(decode(b"aGVsbG8", "base64"), b"hel")  # broken padding: whole quanta
        self.assertEqual(decode(b"raw", "8BIT".lower()), b"raw")
        self.assertRaises(UnknownCte, decode, b"x", "x-uuencode")

    def test_parts(self) -> None:
        root = mime.parse(MULTIPART)
        self.assertEqual(decoded(MULTIPART, root, (1,)), b"\x00binary\r\nbytes\xff")
        self.assertEqual(decoded(MULTIPART, root, (2,)), "café soft\r\n".encode())
        self.assertEqual(decoded(MULTIPART, root, ()), MULTIPART)
        self.assertIsNone(decoded(MULTIPART, root, (9,)))
        self.assertRaises(UnknownCte, decoded, MULTIPART, root, (3,))

    def test_encode_binary_parts(self) -> None:
        message = (b"From: a@b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n\r\n"
                   b"\x00\xad\r\n\r\n")
        stored = encode_binary_parts(message)
        self.assertNotIn(b"\x00", stored)
        self.assertIn(b"Content-Transfer-Encoding: base64\r\n", stored)
        self.assertNotIn(b"binary", stored)
        self.assertEqual(decoded(stored, mime.parse(stored), (1,)), b"\x00\xad\r\n\r\n")
        self.assertIs(encode_binary_parts(MULTIPART), MULTIPART)  # no NUL: untouched


class SessionTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.s = MemorySession(self)
        self.s.output()
        deliver(self.s.maildir(), MULTIPART.replace(b"\r\n", b"\n"))
        self.s.send(b"a LOGIN alice secret\r\ns SELECT INBOX\r\n")

    def test_capability(self) -> None:
        self.assertIn(b" BINARY", self.s.send(b"c CAPABILITY\r\n"))

    def test_fetch_binary(self) -> None:
        out = self.s.send(b"f FETCH 1 (BINARY.SIZE[1] BINARY.PEEK[1])\r\n")
        self.assertIn(b"BINARY.SIZE[1] 15 BINARY[1] ~{15}\r\n\x00binary\r\nbytes\xff)", out)
        out = self.s.send(b"f FETCH 1 (BINARY.PEEK[2]<0.4> FLAGS)\r\n")
        self.assertIn(b"BINARY[2]<0> ", out)
        self.assertNotIn(b"\\Seen", out)
        out = self.s.send(b"f FETCH 1 (BINARY[2])\r\n")
        self.assertIn("café".encode(), out)
        self.assertIn(b"\\Seen", out)  # BINARY without PEEK sets \Seen
        self.assertIn(b"f NO [UNKNOWN-CTE]", self.s.send(b"f FETCH 1 (BINARY.PEEK[3])\r\n"))
        self.assertIn(b"f BAD", self.s.send(b"f FETCH 1 (BINARY.PEEK[1.TEXT])\r\n"))
        self.assertIn(b"f BAD", self.s.send(b"f FETCH 1 (BINARY.SIZE[1]<0.1>)\r\n"))

    def test_literal8_append_round_trip(self) -> None:
        body = b"\x00\xad\r\nend"
        message = (b"From: a@b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n\r\n"
                   + body)
        out = self.s.send(b"p APPEND INBOX ~{%d+}\r\n" % len(message) + message + b"\r\n")
        uid = int(re.search(rb"APPENDUID \d+ (\d+)", out).group(1))
        out = self.s.send(b"f UID FETCH %d (BODY.PEEK[1] BINARY.PEEK[1])\r\n" % uid)
        self.assertIn(base64.encodebytes(body).replace(b"\n", b"\r\n").rstrip(b"\r\n"), out)
        self.assertIn(b"BINARY[1] ~{%d}\r\n" % len(body) + body, out)
