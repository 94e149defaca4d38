"""Pure: command argument parsing, sequence sets, SEARCH keys, LIST patterns."""

from __future__ import annotations

from datetime import date

from twisted.trial.unittest import SynchronousTestCase

from mailserver.imap import listing, search
from mailserver.imap.syntax import Literal, ParseError, Reader, SequenceSet


class ReaderTests(SynchronousTestCase):
    def test_astring_forms(self) -> None:
        r = Reader([b'atom "quo\\"ted" ', Literal(b"lit\r\neral"), b" end]"])
        self.assertEqual(r.astring(), b"atom")
        r.sp()
        self.assertEqual(r.astring(), b'quo"ted')
        r.sp()
        self.assertEqual(r.astring(), b"lit\r\neral")
        r.sp()
        self.assertEqual(r.astring(), b"end]")
        r.end()

    def test_errors(self) -> None:
        for segments, action in [
            ([b'"open'], "astring"), ([b""], "astring"), ([b'"a\\b"'], "astring"), ([b"x y"], "end"),
            ([b"(a"], "flag_list"), ([b"abc"], "number"), ([b"99999999999"], "number"),
        ]:
            r = Reader(segments)
            self.assertRaises(ParseError, getattr(r, action))

    def test_flag_list(self) -> None:
        self.assertEqual(Reader([b"(\\Seen $Work)"]).flag_list(), ["\\Seen", "$Work"])
        self.assertEqual(Reader([b"\\Deleted \\Seen"]).flag_list(), ["\\Deleted", "\\Seen"])
        self.assertEqual(Reader([b"()"]).flag_list(), [])

    def test_datetime(self) -> None:
        self.assertEqual(Reader([b'"17-Jul-1996 02:44:25 -0700"']).datetime(), 837596665)
        self.assertRaises(ParseError, Reader([b'"17-Jul-1996"']).datetime)


class SequenceSetTests(SynchronousTestCase):
    def test_parse_and_resolve(self) -> None:
        s = SequenceSet.parse(b"1:3,7,9:*")
        self.assertEqual(s.resolve(12), [(1, 3), (7, 7), (9, 12)])
        self.assertEqual(SequenceSet.parse(b"*:4").resolve(2), [(2, 4)])
        self.assertTrue(SequenceSet.parse(b"5:2").contains(3, 10))

    def test_invalid(self) -> None:
        for text in [b"", b"0", b"1:0", b"a", b"1,,2", b"01", b"4294967296", b"1:"]:
            self.assertRaises(ParseError, SequenceSet.parse, text)


def facts(seq: int, uid: int, flags=(), internal=1_700_000_000.0, size=100, fields=None, sent=None, content=None):
    return search.Facts(seq, uid, frozenset(flags), internal, size, {"fields": fields or {}, "sent": sent},
                        lambda uid: content)


class SearchTests(SynchronousTestCase):
    def run_search(self, text: bytes, messages, literals=()) -> list[int]:
        segments = [text] + [Literal(l) for l in literals]
        _, tree = search.parse_search(Reader(segments))
        ctx = search.Context(len(messages), max(m.uid for m in messages))
        return [f.seq for f in search.search(tree, messages, ctx)]

    def setUp(self) -> None:
        self.messages = [
            facts(1, 10, ["\\Seen", "\\Answered"], size=50, fields={"from": "Ann <ann@x>", "subject": "Caf\u00e9"},
                  sent=date(2003, 7, 1).toordinal(), content=b"X-Tag: red\r\n\r\nhello world\r\n"),
            facts(2, 20, ["\\Recent"], internal=1_500_000_000.0, size=5000, fields={"from": "bob@y"},
                  content=b"Subject: s\r\n\r\nsecret\r\n"),
            facts(3, 30, ["$Work", "\\Deleted"], size=200, content=None),
        ]

    def test_flags_and_keywords(self) -> None:
        self.assertEqual(self.run_search(b"SEEN", self.messages), [1])
        self.assertEqual(self.run_search(b"UNSEEN", self.messages), [2, 3])
        self.assertEqual(self.run_search(b"NEW", self.messages), [2])
        self.assertEqual(self.run_search(b"OLD", self.messages), [1, 3])
        self.assertEqual(self.run_search(b"KEYWORD $work", self.messages), [3])
        self.assertEqual(self.run_search(b"UNKEYWORD $Work DELETED", self.messages), [])

    def test_boolean(self) -> None:
        self.assertEqual(self.run_search(b"OR SEEN LARGER 1000", self.messages), [1, 2])
        self.assertEqual(self.run_search(b"NOT (SEEN) SMALLER 1000", self.messages), [3])
        self.assertEqual(self.run_search(b"(OR 1 3) UID 25:*", self.messages), [3])
        self.assertEqual(self.run_search(b"2:*", self.messages), [2, 3])

    def test_strings(self) -> None:
        self.assertEqual(self.run_search(b"FROM ANN", self.messages), [1])
        self.assertEqual(self.run_search(b"CHARSET UTF-8 SUBJECT ", self.messages, ["caf\u00e9".encode()]), [1])
        self.assertEqual(self.run_search(b"BODY secret", self.messages), [2])
        self.assertEqual(self.run_search(b'TEXT "x-tag"', self.messages), [1])
        self.assertEqual(self.run_search(b"HEADER X-Tag red", self.messages), [1])
        self.assertEqual(self.run_search(b'HEADER X-Tag ""', self.messages), [1])

    def test_dates(self) -> None:
        self.assertEqual(self.run_search(b"BEFORE 1-Jan-2020", self.messages), [2])
        self.assertEqual(self.run_search(b"SENTON 1-Jul-2003", self.messages), [1])
        self.assertEqual(self.run_search(b"SENTSINCE 1-Jan-2010", self.messages), [2, 3])  # no Date: internal date

    def test_needs_content(self) -> None:
        def tree(text):
            return search.parse_search(Reader([text]))[1]

        self.assertFalse(search.needs_content(tree(b"OR FROM x SUBJECT y")))
        self.assertTrue(search.needs_content(tree(b"NOT BODY x")))
        self.assertTrue(search.needs_content(tree(b"HEADER X-Spam yes")))

    def test_bad_keys(self) -> None:
        for text in [b"FOO", b"LARGER x", b"OR SEEN", b"(SEEN", b"BEFORE 2020-01-01", b"SEEN )"]:
            self.assertRaises(ParseError, search.parse_search, Reader([text]))
        self.assertRaises(search.BadCharset, search.parse_search, Reader([b"CHARSET BIG5 ALL"]))
        deep = b"NOT " * 60 + b"SEEN"
        self.assertRaises(ParseError, search.parse_search, Reader([deep]))


class ListingTests(SynchronousTestCase):
    existing = ["INBOX", "Sent", "a/b/c", "a/x", "INBOX/sub"]

    def names(self, reference: str, pattern: str):
        return listing.list_folders(self.existing, reference, pattern, {"Sent": "\\Sent"})

    def test_star_and_percent(self) -> None:
        self.assertEqual([n for n, _ in self.names("", "*")], ["INBOX", "INBOX/sub", "Sent", "a", "a/b", "a/b/c", "a/x"])
        self.assertEqual(self.names("", "%"), [
            ("INBOX", ["\\HasChildren"]), ("Sent", ["\\HasNoChildren", "\\Sent"]), ("a", ["\\Noselect", "\\HasChildren"]),
        ])
        self.assertEqual([n for n, _ in self.names("a/", "%")], ["a/b", "a/x"])
        self.assertEqual([n for n, _ in self.names("", "inbox")], ["INBOX"])
        self.assertEqual([n for n, _ in self.names("", "a/%/c")], ["a/b/c"])

    def test_lsub(self) -> None:
        subscribed = ["a/b/c", "Sent", "gone"]
        out = listing.list_subscribed(subscribed, self.existing, "", "%", {})
        self.assertEqual(out, [("Sent", []), ("a", ["\\Noselect"]), ("gone", ["\\Noselect"])])
        out = listing.list_subscribed(subscribed, self.existing, "", "*", {})
        self.assertEqual([n for n, _ in out], ["Sent", "a/b/c", "gone"])


class WildcardTests(SynchronousTestCase):
    def test_same_answers_as_a_regex(self) -> None:
        import itertools
        import re

        names = ["", "a", "b", "/", "a/", "/a", "ab", "a/b", "aa/b", "a/ba", "INBOX", "INBOX/x", "xa/ab/b"]
        for length in range(5):
            for pattern in map("".join, itertools.product("ab/*%", repeat=length)):
                regex = re.compile("".join(".*" if c == "*" else "[^/]*" if c == "%" else re.escape(c)
                                           for c in pattern) + r"\Z", re.DOTALL)
                wildcard = listing.Pattern("", pattern)
                for name in names:
                    self.assertEqual(wildcard.match(name), bool(regex.match(name)), (pattern, name))
