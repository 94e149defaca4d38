"""Tests for mailserver.delivery.mime: the cleanup-style message walk and header decoding."""

from __future__ import annotations

import ast
import os
import sys

from twisted.trial.unittest import SynchronousTestCase

import mailserver.delivery.mime as mime_module
from mailserver.delivery.mime import (
    BodyLine,
    BodyText,
    Header,
    HeaderEnd,
    HeaderKind,
    UnixFrom,
    body_lines,
    decode_header_text,
    line_end,
    parse_content_type,
    walk,
)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CORPUS = os.path.join(os.path.dirname(REPO), "shared", "corpus", "mail-fixtures")


def corpus_files() -> list[str]:
    paths = []
    for directory, _, names in os.walk(CORPUS):
        for name in names:
            paths.append(os.path.join(directory, name))
    return sorted(paths)


def summary(message: bytes, body_limit: int | None = None) -> list[tuple]:
    """(kind, text) for headers, ("body", text) per body line, ("boundary", text)."""
    out: list[tuple] = []
    for event in walk(message, body_limit):
        if isinstance(event, Header):
            out.append((event.kind.value, event.text))
        elif isinstance(event, BodyText):
            out.extend(("body", line.text) for line in body_lines(message, event))
        elif isinstance(event, BodyLine):
            out.append(("boundary", event.text))
        elif isinstance(event, UnixFrom):
            out.append(("from_", event.text))
    return out


def assert_tiles(case: SynchronousTestCase, message: bytes) -> None:
    """The events' spans cover the message exactly, in order."""
    position = 0
    for event in walk(message):
        case.assertEqual(event.start, position, event)
        position = event.end
        if isinstance(event, BodyText):
            line_position = event.start
            for line in body_lines(message, event):
                case.assertEqual(line.start, line_position)
                line_position = line.end
            case.assertEqual(line_position, event.end)
    case.assertEqual(position, len(message))


def nested_multiparts(levels: int) -> bytes:
    """C{levels} multiparts, each the first part of the one before."""
    parts = [b'Content-Type: multipart/mixed; boundary="b%d"\n\n--b%d\n' % (level, level) for level in range(levels)]
    return b"".join(parts) + b"\ntext\n"


MULTIPART = b"""\
From: a@example.com
Subject: report
MIME-Version: 1.0
Content-Type: multipart/mixed;
 boundary="outer"

preamble
--outer
Content-Type: multipart/alternative; boundary=inner

--inner
Content-Type: text/plain

plain text
--inner
Content-Type: text/html

<p>html</p>
--inner--
--outer
Content-Type: message/rfc822

From: b@example.net
Subject: forwarded
Content-Type: text/plain

nested body
--outer
Content-Type: application/pdf; name="report.pdf"
Content-Transfer-Encoding: base64

JVBERi0=
--outer--
epilogue
"""


class WalkTests(SynchronousTestCase):
    def test_multipart_structure(self) -> None:
        self.assertEqual(
            summary(MULTIPART),
            [
                ("primary", "From: a@example.com"),
                ("primary", "Subject: report"),
                ("primary", "MIME-Version: 1.0"),
                ("primary", 'Content-Type: multipart/mixed; boundary="outer"'),
                ("body", "preamble"),
                ("boundary", "--outer"),
                ("multipart", "Content-Type: multipart/alternative; boundary=inner"),
                ("boundary", "--inner"),
                ("multipart", "Content-Type: text/plain"),
                ("body", "plain text"),
                ("boundary", "--inner"),
                ("multipart", "Content-Type: text/html"),
                ("body", "<p>html</p>"),
                ("boundary", "--inner--"),
                ("boundary", "--outer"),
                ("multipart", "Content-Type: message/rfc822"),
                ("nested", "From: b@example.net"),
                ("nested", "Subject: forwarded"),
                ("nested", "Content-Type: text/plain"),
                ("body", "nested body"),
                ("boundary", "--outer"),
                ("multipart", 'Content-Type: application/pdf; name="report.pdf"'),
                ("multipart", "Content-Transfer-Encoding: base64"),
                ("body", "JVBERi0="),
                ("boundary", "--outer--"),
                ("body", "epilogue"),
            ],
        )
        assert_tiles(self, MULTIPART)

    def test_header_details(self) -> None:
        message = b"Subject: one\r\n two\r\nX-Y : z\r\n\r\nbody\r\n"
        headers = [e for e in walk(message) if isinstance(e, Header)]
        self.assertEqual([h.text for h in headers], ["Subject: one two", "X-Y : z"])
        self.assertEqual([h.name for h in headers], ["Subject", "X-Y"])
        self.assertEqual(message[headers[0].start : headers[0].end], b"Subject: one\r\n two\r\n")
        self.assertEqual(headers[0].value, " one two")
        self.assertEqual(line_end(message, headers[0].end), b"\r\n")
        [end] = [e for e in walk(message) if isinstance(e, HeaderEnd)]
        self.assertEqual(message[end.start : end.end], b"\r\n")
        [end] = [e for e in walk(b"Subject: x\nnot a header\n") if isinstance(e, HeaderEnd)]
        self.assertEqual(end.start, end.end)
        self.assertEqual(line_end(b"a\nb", 2), b"\n")
        self.assertEqual(line_end(b"a\nb", 3), b"")

    def test_mime_header_names(self) -> None:
        message = b"Content-Type: text/plain\nContent-Language: en\nMIME-Version: 1.0\nSubject: x\n\n"
        flags = [(e.name, e.is_mime) for e in walk(message) if isinstance(e, Header)]
        self.assertEqual(
            flags, [("Content-Type", True), ("Content-Language", False), ("MIME-Version", True), ("Subject", False)]
        )

    def test_crlf_and_lf_give_the_same_text(self) -> None:
        self.assertEqual(summary(MULTIPART), summary(MULTIPART.replace(b"\n", b"\r\n")))
        assert_tiles(self, MULTIPART.replace(b"\n", b"\r\n"))

    def test_depth(self) -> None:
        depths = {(e.kind, e.text): e.depth for e in walk(MULTIPART) if isinstance(e, Header)}
        self.assertEqual(depths[(HeaderKind.PRIMARY, "Subject: report")], 0)
        self.assertEqual(depths[(HeaderKind.MULTIPART, "Content-Type: text/plain")], 2)
        self.assertEqual(depths[(HeaderKind.NESTED, "Subject: forwarded")], 2)
        self.assertEqual(depths[(HeaderKind.MULTIPART, "Content-Transfer-Encoding: base64")], 1)

    def test_digest_parts_default_to_messages(self) -> None:
        message = (
            b'Content-Type: multipart/digest; boundary="d"\n\n--d\n\nSubject: first\n\nbody one\n--d--\n'
        )
        self.assertIn(("nested", "Subject: first"), summary(message))

    def test_base64_message_rfc822_is_not_parsed_as_headers(self) -> None:
        message = (
            b'Content-Type: multipart/mixed; boundary="b"\n\n--b\nContent-Type: message/rfc822\n'
            b"Content-Transfer-Encoding: base64\n\nU3ViamVjdDogeA==\n--b--\n"
        )
        self.assertIn(("body", "U3ViamVjdDogeA=="), summary(message))

    def test_unix_from_line_is_skipped(self) -> None:
        message = b"From alice@example.com Thu Feb 22 11:20:31 2007\nSubject: hi\n\nFrom here on\n"
        self.assertEqual(
            summary(message),
            [("from_", "From alice@example.com Thu Feb 22 11:20:31 2007"), ("primary", "Subject: hi"), ("body", "From here on")],
        )

    def test_body_limit(self) -> None:
        message = b"Subject: x\n\n" + b"".join(b"line %03d\n" % i for i in range(100))
        lines = [t for k, t in summary(message, body_limit=45) if k == "body"]
        # Lines start at 0, 9, 18, 27, 36, 45: those before byte 45 are checked.
        self.assertEqual(lines, ["line 000", "line 001", "line 002", "line 003", "line 004"])
        self.assertEqual([k for k, _ in summary(message, body_limit=0)], ["primary"])

    def test_body_limit_applies_to_each_part(self) -> None:
        big = b"x" * 30 + b"\n"
        message = (
            b'Content-Type: multipart/mixed; boundary="b"\n\n--b\n\n' + big * 5 + b"--b\n\n"
            + big * 5 + b"--b\nContent-Type: text/plain; name=\"a.exe\"\n\nend\n--b--\n"
        )
        result = summary(message, body_limit=40)
        self.assertEqual(sum(1 for k, _ in result if k == "body"), 2 + 2 + 1)
        self.assertIn(("multipart", 'Content-Type: text/plain; name="a.exe"'), result)

    def test_boundaries_that_are_prefixes_of_each_other(self) -> None:
        message = (
            b'Content-Type: multipart/mixed; boundary="ab"\n\n--ab\n'
            b'Content-Type: multipart/alternative; boundary="ab-c"\n\n--ab-c\n\ntext\n--ab-c--\n--ab--\n'
        )
        self.assertEqual(
            [k for k, _ in summary(message)],
            ["primary", "boundary", "multipart", "boundary", "body", "boundary", "boundary"],
        )

    def test_outer_boundary_closes_inner_parts(self) -> None:
        message = (
            b'Content-Type: multipart/mixed; boundary="o"\n\n--o\n'
            b'Content-Type: multipart/alternative; boundary="i"\n\n--i\n\nunterminated\n--o\n'
            b"Content-Type: text/plain\n\nafter\n--o--\n"
        )
        result = summary(message)
        self.assertIn(("multipart", "Content-Type: text/plain"), result)
        self.assertEqual(result[-2:], [("body", "after"), ("boundary", "--o--")])

    def test_malformed_messages_never_raise(self) -> None:
        samples = [
            b"",
            b"\n",
            b"no headers at all\njust text\n",
            b"Subject: no blank line and no end",
            b"Subject: x\n continued\n\tmore",
            b" leading continuation\nSubject: x\n\n",
            b'Content-Type: multipart/mixed; boundary="never"\n\nno boundary ever\n',
            b'Content-Type: multipart/mixed; boundary="b"\n\n--b\nContent-Type: text/plain\n',
            b'Content-Type: multipart/mixed; boundary=""\n\n--\n',
            b"Content-Type: multipart/mixed\n\n--\n",
            b'Content-Type: multipart/mixed; boundary="b"\n\n--b\n--b\n--b--\n--b--\n--b\n',
            b"Content-Type: text/plain; charset=\xff\xfe\n\n\x80\x81\x00\r\r\n",
            b"Content-Type: (comment (nested) \"q\" \\x) multipart/mixed; boundary=\"z\" (c)\n\n--z\n\nx\n--z--\n",
            b'Content-Type: message/rfc822\n\nContent-Type: message/rfc822\n\nSubject: deep\n\nx',
            b"\x00\x01\x02: \xff\n\n",
            b"--\n--\n",
            b"Subject: x\r\n\r\n--boundary\r\n",
        ]
        for sample in samples:
            assert_tiles(self, sample)
            summary(sample, body_limit=3)

    def test_deep_nesting_is_bounded(self) -> None:
        message = nested_multiparts(300)
        assert_tiles(self, message)
        depths = [e.depth for e in walk(message) if isinstance(e, Header)]
        self.assertLessEqual(max(depths), mime_module.NESTING_LIMIT)

    def test_nesting_exceeded_is_reported_once(self) -> None:
        message = nested_multiparts(103)
        assert_tiles(self, message)
        [found] = [e for e in walk(message) if isinstance(e, mime_module.Uninspectable)]
        self.assertEqual(found.error, "MIME nesting exceeds safety limit")
        self.assertEqual(found.depth, mime_module.NESTING_LIMIT + 1)
        self.assertEqual(found.text, 'Content-Type: multipart/mixed; boundary="b100"')
        self.assertEqual(found.start, found.end)
        shallow = nested_multiparts(100)
        self.assertFalse([e for e in walk(shallow) if isinstance(e, mime_module.Uninspectable)])
        self.assertTrue([e for e in walk(shallow, nesting_limit=99) if isinstance(e, mime_module.Uninspectable)])

    def test_corpus(self) -> None:
        files = corpus_files()
        if not files:
            raise self.skipTest(f"corpus not found at {CORPUS}")
        nested = mime_headers = 0
        for path in files:
            with open(path, "rb") as f:
                message = f.read()
            assert_tiles(self, message)
            events = list(walk(message, body_limit=51200))
            nested += sum(1 for e in events if isinstance(e, Header) and e.kind is HeaderKind.NESTED)
            mime_headers += sum(1 for e in events if isinstance(e, Header) and e.kind is HeaderKind.MULTIPART)
            for event in events:
                if isinstance(event, Header):
                    decode_header_text(event.text)
        self.assertGreater(nested, 0)
        self.assertGreater(mime_headers, 0)


class ContentTypeTests(SynchronousTestCase):
    def test_parse(self) -> None:
        self.assertEqual(
            parse_content_type(b' Multipart/Mixed; charset=x; BOUNDARY="a \\"b\\" c"; other=y'),
            ("multipart/mixed", {"charset": b"x", "boundary": b'a "b" c', "other": b"y"}),
        )
        self.assertEqual(parse_content_type(b"text/plain (a comment)"), ("text/plain", {}))
        self.assertEqual(parse_content_type(b""), ("", {}))
        self.assertEqual(parse_content_type(b'multipart/mixed; boundary="unterminated'),
                         ("multipart/mixed", {"boundary": b"unterminated"}))


class DecodeTests(SynchronousTestCase):
    def test_rfc2047(self) -> None:
        self.assertEqual(decode_header_text("Subject: =?utf-8?b?V2luIHRoZSBsb3R0ZXJ5?="), "Subject: Win the lottery")
        self.assertEqual(decode_header_text("Subject: =?ISO-8859-1?Q?caf=E9_au_lait?="), "Subject: café au lait")
        self.assertEqual(
            decode_header_text("Subject: =?utf-8?q?a?= =?utf-8?q?b?= c =?utf-8*en?Q?d?="), "Subject: ab c d"
        )

    def test_bad_encodings_are_left_alone(self) -> None:
        for text in (
            "Subject: =?x-unknown?b?V2lu?=",
            "Subject: =?utf-8?b?V?=",
            "Subject: =?base64?b?V2lu?=",
            "Subject: =?rot13?q?abc?=",
            "Subject: =?utf-8?x?abc?=",
            "Subject: plain",
        ):
            self.assertEqual(decode_header_text(text), text)
        self.assertEqual(decode_header_text("Subject: =?utf-8?b?/w==?="), "Subject: \ufffd")

    def test_rfc2231_parameters(self) -> None:
        self.assertEqual(
            decode_header_text("Content-Disposition: attachment; filename*=UTF-8''evil%2Eexe"),
            "Content-Disposition: attachment; filename*=UTF-8''evil%2Eexe; filename=\"evil.exe\"",
        )
        self.assertTrue(
            decode_header_text(
                "Content-Type: application/x; name*0*=us-ascii'en'ev; name*1=\"il.e\"; name*2*=%78e"
            ).endswith('; name="evil.exe"')
        )

    def test_regression_rfc2231_lone_surrogate_never_raises(self) -> None:
        # Found by tests/fuzz (HYPOTHESIS_PROFILE=long): a str with a lone
        # surrogate in an RFC 2231 value raised UnicodeEncodeError.
        decoded = decode_header_text("Content-Type: x; name*=\udc80a%2Eexe")
        self.assertTrue(decoded.endswith('; name="?a.exe"'), decoded)


class PurityTests(SynchronousTestCase):
    def test_stdlib_only(self) -> None:
        with open(mime_module.__file__, encoding="utf-8") as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                self.assertIn(name.split(".")[0], sys.stdlib_module_names)
