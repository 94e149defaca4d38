"""
Fuzz: addresses and SMTP paths; the MIME walk, Content-Type and RFC
2047/2231 decoding, the content checks; IMAP's MIME tree and message
description.
"""

from __future__ import annotations

from hypothesis import given, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from mailserver.address import parse_mailbox, parse_path
from mailserver.delivery.checks import ContentChecks
from mailserver.delivery.mime import BodyText, body_lines, decode_header_text, parse_content_type, walk
from mailserver.errors import MailError
from mailserver.imap.parts import parse as parse_parts
from mailserver.imap.structure import describe
from tests.fuzz.bounds import bounded
from tests.fuzz.strategies import salted, salted_bytes, sample_table
ADDRESS_TOKENS = ["@", ".", '"', "\\", "<", ">", ":", ",", " ", "[", "]", "IPv6:", "::1", "192.0.2.1", "@a.example:",
                  "bob", "example.com", "-", "+", "=", "SIZE=100", "BODY=8BITMIME", "é", "\x00", "a" * 64, "b" * 255]
MIME_TOKENS = [b"\n", b"\r\n", b" ", b"\t", b":", b";", b"=", b'"', b"(", b")", b"\\", b"--", b"--b", b"--b--",
               b"--bb", b"From ", b"Subject: x", b"Content-Type: ", b"multipart/mixed", b"multipart/digest",
               b"message/rfc822", b"message/global", b"text/plain", b"boundary=", b'boundary="b"', b"boundary=bb",
               b"Content-Transfer-Encoding: ", b"base64", b"7bit", b"name=", b"filename*=utf-8''a%2Eexe",
               b"name*0=a", b"name*1*=%2E", b"=?utf-8?b?", b"=?utf-8?q?", b"?=", b"=?x-unknown?b?", b"\xff\xfe",
               b"MIME-Version: 1.0", b".exe", b"lottery", b"I love you"]


CHECKS = ContentChecks(header_checks=sample_table("header_checks"),
                       mime_header_checks=sample_table("mime_header_checks"),
                       nested_header_checks=sample_table("header_checks"), body_checks=sample_table("body_checks"))
SHALLOW_CHECKS = ContentChecks(mime_header_checks=sample_table("mime_header_checks"),
                               body_checks=sample_table("body_checks"),
                               body_checks_size_limit=10, mime_nesting_limit=2)


class AddressTests(SynchronousTestCase):
    @given(salted(ADDRESS_TOKENS))
    def test_parse_mailbox_raises_only_mail_error(self, text: str) -> None:
        address = bounded(parse_mailbox, text, allowed=(MailError,))
        if address is not None:
            self.assertEqual(parse_mailbox(str(address)), address)

    @given(st.sampled_from(["FROM", "TO"]), st.booleans(),
           salted(ADDRESS_TOKENS + ["FROM:", "TO:", "from:<", "To:<>", "<>"]))
    def test_parse_path_raises_only_mail_error(self, keyword: str, allow_null: bool, text: str) -> None:
        bounded(parse_path, text, keyword, allow_null, allowed=(MailError,))


def tiled(message: bytes) -> int:
    """Walk C{message}; check that the events tile it; the number of events."""
    position = count = 0
    for event in walk(message):
        count += 1
        assert event.start == position, (event, position)
        position = event.end
        if isinstance(event, BodyText):
            for line in body_lines(message, event):
                assert event.start <= line.start <= line.end <= event.end
    assert position == len(message), (position, len(message))
    return count


class MimeTests(SynchronousTestCase):
    @given(salted_bytes(MIME_TOKENS))
    def test_walk_tiles_the_message(self, message: bytes) -> None:
        bounded(tiled, message)
        bounded(lambda m: list(walk(m, 5, 1)), message)

    @given(salted_bytes(MIME_TOKENS))
    def test_content_type_and_decoding_never_raise(self, value: bytes) -> None:
        media, params = bounded(parse_content_type, value)
        self.assertEqual(media, media.lower())
        bounded(decode_header_text, value.decode("utf-8", "surrogateescape"))
        bounded(decode_header_text, value.decode("latin-1"))

    @given(salted_bytes(MIME_TOKENS))
    def test_content_checks_never_raise(self, message: bytes) -> None:
        for checks in (CHECKS, SHALLOW_CHECKS):
            verdict = bounded(checks.inspect, None, message)
            if verdict.error is not None:
                self.assertIsInstance(verdict.error, MailError)
                self.assertIn(verdict.error.code, (451, 550))
            self.assertIs(verdict.message, message)  # the sample tables only REJECT: nothing is rewritten


class ImapStructureTests(SynchronousTestCase):
    """The IMAP side of MIME: the part tree with offsets, ENVELOPE, BODYSTRUCTURE, search fields."""

    @given(salted_bytes(MIME_TOKENS + [b"Date: ", b"Mon, 1 Jan 2024 00:00:00 +0000", b"To: ", b"a@b, c <d@e>",
                                       b"undisclosed-recipients:;", b"From: \"x\" <y@z>"]))
    def test_describe_never_raises(self, message: bytes) -> None:
        crlf = message.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        bounded(parse_parts, crlf)
        description = bounded(describe, crlf)
        self.assertIsInstance(description, dict)
