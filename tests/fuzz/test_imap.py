"""Fuzz: IMAP command syntax (argument reader, sequence sets, FETCH items, SEARCH keys), LIST patterns, keywords."""

from __future__ import annotations

from hypothesis import given, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from mailserver.imap import listing, search
from mailserver.imap.syntax import Literal, ParseError, Reader, SequenceSet, parse_fetch_items
from mailserver.store.flags import parse_keywords
from tests.fuzz.bounds import bounded
from tests.fuzz.strategies import salted, salted_bytes

ARGUMENT_TOKENS = [b" ", b"(", b")", b"[", b"]", b"<", b">", b".", b'"', b"\\", b"{", b"}", b"*", b"%", b":", b",",
                   b"0", b"1", b"4294967295", b"4294967296", b"99999999999", b"\\Seen", b"$Work", b"BODY", b"BODY.PEEK",
                   b"HEADER.FIELDS", b"HEADER.FIELDS.NOT", b"TEXT", b"MIME", b"UID", b"FLAGS", b"ENVELOPE", b"RFC822",
                   b"BODYSTRUCTURE", b"ALL", b"FAST", b"FULL", b"NOT", b"OR", b"SEEN", b"CHARSET", b"UTF-8",
                   b"SUBJECT", b"HEADER", b"LARGER", b"SINCE", b"BEFORE", b"1-Jan-2020", b"17-Jul-1996 02:44:25 -0700",
                   b"INBOX", b"\r\n", b"\xff"]
SEGMENTS = st.lists(st.one_of(salted_bytes(ARGUMENT_TOKENS), st.binary(max_size=40).map(Literal)), min_size=1,
                    max_size=4)
READER_METHODS = ["atom", "astring", "string", "list_mailbox", "number", "seqset", "flag_list", "flag", "date",
                  "datetime", "take_literal"]


def read_all(segments: list[bytes], method: str) -> object:
    """C{method}, then as many arguments as there are, as a command handler would."""
    reader = Reader(segments)
    value = getattr(reader, method)()
    for _ in range(100):  # bounded: each step consumes input or raises
        if reader.at_end():
            break
        reader.sp()
        reader.astring()
    return value


class ReaderTests(SynchronousTestCase):
    @given(SEGMENTS, st.sampled_from(READER_METHODS))
    def test_reader_raises_only_parse_error(self, segments: list[bytes], method: str) -> None:
        bounded(read_all, segments, method, allowed=(ParseError,))

    @given(SEGMENTS)
    def test_fetch_items_raise_only_parse_error(self, segments: list[bytes]) -> None:
        bounded(lambda s: parse_fetch_items(Reader(s)), segments, allowed=(ParseError,))

    @given(SEGMENTS)
    def test_search_raises_only_parse_error_or_bad_charset(self, segments: list[bytes]) -> None:
        bounded(lambda s: search.parse_search(Reader(s)), segments, allowed=(ParseError, search.BadCharset))

    @given(salted_bytes([b"1", b"2", b"*", b":", b",", b"0", b"4294967295", b"4294967296", b"12345678901"]),
           st.integers(min_value=0, max_value=2**32))
    def test_sequence_sets(self, text: bytes, largest: int) -> None:
        parsed = bounded(SequenceSet.parse, text, allowed=(ParseError,))
        if parsed is not None:
            for low, high in parsed.resolve(largest):
                self.assertLessEqual(low, high)
            self.assertIsInstance(parsed.contains(1, largest), bool)


NAME_ALPHABET = st.sampled_from(list("ab/.xé*%"))


class ListPatternTests(SynchronousTestCase):
    @given(st.text(NAME_ALPHABET, max_size=30), salted(["*a", "%b", "*", "%", "a", "/", "INBOX"], NAME_ALPHABET),
           st.lists(st.text(NAME_ALPHABET, max_size=120), max_size=20))
    def test_list_patterns_are_linear(self, reference: str, pattern: str, names: list[str]) -> None:
        bounded(listing.list_folders, names, reference, pattern, {})
        bounded(listing.list_subscribed, names, names, reference, pattern, {})

    def test_regression_list_wildcards_linear(self) -> None:
        # Found while writing the property above: LIST "" "*a*a*...*ab" over a
        # folder of a's took seconds to minutes (the former regex .*a.*a...
        # backtracks exponentially); 12 stars and 30 a's is about 2-3 s.
        pattern = "*a" * 12 + "b"
        self.assertEqual(bounded(listing.list_folders, ["a" * 30], "", pattern, {}), [])
        self.assertEqual(bounded(listing.list_folders, ["a" * 30 + "b"], "", pattern, {}),
                         [("a" * 30 + "b", ["\\HasNoChildren"])])


class KeywordFileTests(SynchronousTestCase):
    @given(st.text(st.sampled_from(list("0123456789 \n\r\t$\\abcé²٣")) | st.characters(), max_size=400))
    def test_dovecot_keywords_never_raise(self, text: str) -> None:
        table = bounded(parse_keywords, text)
        self.assertLessEqual(len(table), 26)
