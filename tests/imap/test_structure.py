"""Pure parts of the IMAP package: MIME offsets, ENVELOPE/BODYSTRUCTURE, wire formats, sections."""

from __future__ import annotations

import os

from twisted.mail.imap4 import parseNestedParens
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from mailserver.imap import fetch, parts, structure, wire
from mailserver.imap.syntax import Reader, Section, parse_fetch_items
from tests.imap.support import corpus_directory, crlf

NESTED = crlf(
    b"From: \"Joe Q. Public\" <john.q.public@example.com>\n"
    b"To: Mary Smith <mary@x.test>, jdoe@example.org\n"
    b"Cc: Undisclosed recipients:;\n"
    b"Subject: =?utf-8?q?h=C3=A9llo?=\n"
    b"Date: Tue, 1 Jul 2003 10:52:37 +0200\n"
    b"Message-ID: <1234@local.machine.example>\n"
    b"MIME-Version: 1.0\n"
    b"Content-Type: multipart/mixed; boundary=\"outer\"\n"
    b"\n"
    b"preamble\n"
    b"--outer\n"
    b"Content-Type: multipart/alternative; boundary=inner\n"
    b"\n"
    b"--inner\n"
    b"Content-Type: text/plain; charset=utf-8\n"
    b"\n"
    b"plain text\n"
    b"--inner\n"
    b"Content-Type: text/html\n"
    b"\n"
    b"<p>html</p>\n"
    b"--inner--\n"
    b"--outer\n"
    b"Content-Type: message/rfc822\n"
    b"Content-Disposition: attachment; filename=\"fwd.eml\"\n"
    b"\n"
    b"Subject: inner\n"
    b"From: x@y.test\n"
    b"\n"
    b"inner body\n"
    b"--outer--\n"
    b"epilogue\n"
)


class PartsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.root = parts.parse(NESTED)

    def body(self, numbers: tuple[int, ...]) -> bytes:
        entity, _ = parts.resolve(self.root, numbers)
        return NESTED[entity.body_start:entity.end]

    def test_tree(self) -> None:
        self.assertEqual(len(self.root.children), 2)
        self.assertEqual([c.subtype for c in self.root.children[0].children], ["plain", "html"])
        self.assertIsNotNone(self.root.children[1].message)

    def test_part_bodies(self) -> None:
        self.assertEqual(self.body((1, 1)), b"plain text")
        self.assertEqual(self.body((1, 2)), b"<p>html</p>")
        self.assertEqual(self.body((2,)), b"Subject: inner\r\nFrom: x@y.test\r\n\r\ninner body")
        # part 1 of the encapsulated (single part) message is its body
        self.assertEqual(self.body((2, 1)), b"inner body")

    def test_missing_parts(self) -> None:
        for numbers in [(3,), (1, 3), (1, 1, 1), (2, 2)]:
            self.assertRaises(parts.SectionError, parts.resolve, self.root, numbers)

    def test_single_part_message(self) -> None:
        data = crlf(b"Subject: x\n\nhello\n")
        root = parts.parse(data)
        entity, is_message = parts.resolve(root, (1,))
        self.assertFalse(is_message)
        self.assertEqual(data[entity.body_start:entity.end], b"hello\r\n")

    def test_malformed_never_raises(self) -> None:
        for data in [b"", b"\r\n", b"no header end", b"Content-Type: multipart/mixed\r\n\r\nno boundary",
                     b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\nunterminated",
                     b"Content-Type: message/rfc822\r\n\r\n", b"Content-Type: /\r\n\r\nx"]:
            root = parts.parse(data)
            structure.describe(data)
            fetch.section_bytes(data, root, Section(part=(1,)))

    def test_deep_nesting_is_bounded(self) -> None:
        data = b"".join(b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i) for i in range(200))
        root = parts.parse(data + b"x\r\n")
        depth = 0
        while root.children:
            root = root.children[0]
            depth += 1
        self.assertLessEqual(depth, parts.MAX_DEPTH + 1)

    def test_header_fields(self) -> None:
        data = crlf(b"Subject: a\n b\nTo: x\nsubject: again\n\nbody\n")
        root = parts.parse(data)
        self.assertEqual(parts.header_fields(root, ["SUBJECT"], False), b"Subject: a\r\n b\r\nsubject: again\r\n\r\n")
        self.assertEqual(parts.header_fields(root, ["Subject"], True), b"To: x\r\n\r\n")
        self.assertEqual(parts.header_fields(root, ["nothing"], False), b"\r\n")


class StructureTests(SynchronousTestCase):
    def test_envelope(self) -> None:
        env = structure.envelope(parts.parse(NESTED))
        self.assertEqual(
            env,
            b'("Tue, 1 Jul 2003 10:52:37 +0200" "=?utf-8?q?h=C3=A9llo?=" '
            b'(("Joe Q. Public" NIL "john.q.public" "example.com")) '
            b'(("Joe Q. Public" NIL "john.q.public" "example.com")) '
            b'(("Joe Q. Public" NIL "john.q.public" "example.com")) '
            b'(("Mary Smith" NIL "mary" "x.test") (NIL NIL "jdoe" "example.org")) '
            b'((NIL NIL "Undisclosed recipients" NIL) (NIL NIL NIL NIL)) NIL NIL "<1234@local.machine.example>")',
        )

    def test_address_forms(self) -> None:
        self.assertEqual(
            structure.parse_addresses(b'"a, b" <x@y>, (comment) z@w (c), <@r1,@r2:q@e>, bare'),
            [("a, b", None, "x", "y"), ("c", None, "z", "w"), (None, "@r1,@r2", "q", "e"), (None, None, "bare", "")],
        )

    def test_regression_envelope_comment_is_the_name(self) -> None:
        """``From: user@domain (Real Name)`` had NIL as name: the (last) comment is the name, as in Dovecot."""
        root = parts.parse(b"From: user@domain (Real Name)\r\nTo: <a (x)@b>, \"Q\" <c@d> (ignored)\r\n\r\nx\r\n")
        env = structure.envelope(root)
        self.assertIn(b'(("Real Name" NIL "user" "domain"))', env)
        self.assertIn(b'((NIL NIL "a" "b") ("Q" NIL "c" "d"))', env)
        self.assertEqual(structure.parse_addresses(b"a@b (outer (inner) \\) x)"), [("outer (inner) ) x", None, "a", "b")])

    def test_bodystructure(self) -> None:
        root = parts.parse(NESTED)
        bs = structure.body_structure(NESTED, root, True)
        self.assertTrue(bs.startswith(
            b'((("text" "plain" ("charset" "utf-8") NIL NIL "7bit" 10 1 NIL NIL NIL NIL)'
            b'("text" "html" ("charset" "us-ascii") NIL NIL "7bit" 11 1 NIL NIL NIL NIL) "alternative" ("boundary" "inner") NIL NIL NIL)'
        ), bs)
        self.assertIn(b'("attachment" ("filename" "fwd.eml"))', bs)
        self.assertTrue(bs.endswith(b' "mixed" ("boundary" "outer") NIL NIL NIL)'), bs)
        body = structure.body_structure(NESTED, root, False)
        self.assertNotIn(b"attachment", body)

    def test_8bit_values_become_literals(self) -> None:
        data = crlf("Subject: S\u00e4ying\n\nx\n".encode("utf-8"))
        env = structure.envelope(parts.parse(data))
        self.assertIn(b"{7}\r\nS\xc3\xa4ying", env)

    def test_describe_search_fields(self) -> None:
        summary = structure.describe(NESTED)
        self.assertEqual(summary["fields"]["subject"], "h\u00e9llo")
        self.assertEqual(summary["size"], len(NESTED))
        self.assertIsNotNone(summary["sent"])

    def test_corpus(self) -> None:
        directory = corpus_directory()
        if not os.path.isdir(directory):
            raise SkipTest("corpus not found")
        count = 0
        for folder, _, names in os.walk(directory):
            for name in names:
                with open(os.path.join(folder, name), "rb") as f:
                    data = crlf(f.read())
                summary = structure.describe(data)
                # every value must be well-formed IMAP: twisted's client parser reads it back
                envelope = parseNestedParens(summary["envelope"].encode("latin-1"))
                self.assertEqual(len(envelope[0]), 10, name)
                for key in ("body", "bodystructure"):
                    [value] = parseNestedParens(summary[key].encode("latin-1"))
                    self.assertIsInstance(value, list)
                count += 1
        self.assertGreater(count, 100)


class WireTests(SynchronousTestCase):
    def test_strings(self) -> None:
        self.assertEqual(wire.string(b'a "b" \\c'), b'"a \\"b\\" \\\\c"')
        self.assertEqual(wire.string(b"line\r\nbreak"), b"{11}\r\nline\r\nbreak")
        self.assertEqual(wire.nstring(None), b"NIL")
        self.assertEqual(wire.astring(b"INBOX"), b"INBOX")
        self.assertEqual(wire.astring(b"My Folder"), b'"My Folder"')

    def test_sequence_set(self) -> None:
        self.assertEqual(wire.sequence_set([1, 2, 3, 5, 7, 8]), b"1:3,5,7:8")
        self.assertEqual(wire.sequence_set([3, 1]), b"3,1")

    def test_dates(self) -> None:
        self.assertEqual(wire.parse_datetime("17-Jul-1996 02:44:25 -0700"), 837596665)
        self.assertEqual(wire.parse_date("1-Feb-1994").isoformat(), "1994-02-01")
        self.assertRaises(ValueError, wire.parse_date, "1-Foo-1994")
        self.assertRegex(wire.internal_date(837596665).decode(), r'^"\d\d-Jul-1996 \d\d:44:25 [+-]\d{4}"$')


class FetchTests(SynchronousTestCase):
    def items(self, text: bytes):
        return parse_fetch_items(Reader([text]))

    def test_parse_items(self) -> None:
        items = self.items(b"(UID BODY.PEEK[1.2.HEADER.FIELDS (To \"From\")]<10.20> BODY RFC822.SIZE)")
        self.assertEqual([i.name for i in items], ["UID", "BODY", "BODY", "RFC822.SIZE"])
        section = items[1].section
        self.assertEqual((section.peek, section.part, section.text, section.fields, section.partial),
                         (True, (1, 2), "HEADER.FIELDS", (b"To", b"From"), (10, 20)))
        self.assertEqual(section.label(), b"BODY[1.2.HEADER.FIELDS (To From)]<10>")
        self.assertEqual([i.name for i in self.items(b"ALL")], ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"])

    def test_seen_and_content(self) -> None:
        self.assertTrue(fetch.sets_seen(self.items(b"BODY[]")))
        self.assertFalse(fetch.sets_seen(self.items(b"(BODY.PEEK[] RFC822.HEADER)")))
        self.assertTrue(fetch.sets_seen(self.items(b"RFC822.TEXT")))
        self.assertFalse(fetch.needs_content(self.items(b"(FLAGS ENVELOPE BODYSTRUCTURE BODY)")))
        self.assertTrue(fetch.needs_content(self.items(b"RFC822.HEADER")))

    def test_section_bytes(self) -> None:
        root = parts.parse(NESTED)
        get = lambda **kw: fetch.section_bytes(NESTED, root, Section(**kw))
        self.assertEqual(get(), NESTED)
        self.assertEqual(get(part=(2,), text="HEADER"), b"Subject: inner\r\nFrom: x@y.test\r\n\r\n")
        self.assertEqual(get(part=(2,), text="TEXT"), b"inner body")
        self.assertEqual(get(part=(1, 1), text="MIME"), b"Content-Type: text/plain; charset=utf-8\r\n\r\n")
        self.assertIsNone(get(part=(1, 1), text="HEADER"))
        self.assertIsNone(get(part=(9,)))
        self.assertTrue(get(text="TEXT").startswith(b"preamble\r\n--outer"))


class AddressLexerRegressionTests(SynchronousTestCase):
    def test_regression_stray_parenthesis_in_address_terminates(self) -> None:
        # Found by tests/fuzz (long profile): a ")" outside a comment made the
        # address lexer loop for ever, appending empty tokens until the
        # process ran out of memory; any sender could put one in From:.
        from mailserver.imap.structure import parse_addresses
        from tests.fuzz.bounds import bounded

        self.assertEqual(bounded(parse_addresses, b'"x" <y@z>)', hard_limit=0.5), [("x", None, "y", "z")])
        self.assertEqual(bounded(parse_addresses, b"a@b.example), c@d.example", hard_limit=0.5),
                         [(None, None, "a", "b.example"), (None, None, "c", "d.example")])
