"""Inputs shared by the fuzz modules: random text salted with the tokens a parser cares about; the sample tables."""

from __future__ import annotations

import os
from typing import Sequence

from hypothesis import strategies as st

from mailserver.tables.regexp import RuleTable, compile_regexp_table

ETC = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "etc")

#: Most generated inputs stay well under tests.fuzz.bounds.SMALL_INPUT.
MAX_PIECES = 120


def salted(tokens: Sequence[str], alphabet: st.SearchStrategy[str] | None = None) -> st.SearchStrategy[str]:
    """Text made of C{tokens} and short random runs (from C{alphabet}, default any character)."""
    noise = st.text(alphabet=alphabet, max_size=6) if alphabet is not None else st.text(max_size=6)
    return st.lists(st.one_of(st.sampled_from(list(tokens)), noise), max_size=MAX_PIECES).map("".join)


def salted_bytes(tokens: Sequence[bytes]) -> st.SearchStrategy[bytes]:
    """Bytes made of C{tokens} and short random runs."""
    return st.lists(st.one_of(st.sampled_from(list(tokens)), st.binary(max_size=6)), max_size=MAX_PIECES).map(
        b"".join
    )


#: Digits to str.isdigit() that int() refuses ("²") or that only \\d and int() take ("٣").
UNICODE_DIGITS = ["²", "٣", "₁"]
#: Characters that are not white space in any sense (Unicode Z*, C0/C1 controls).
NOT_SPACE = st.characters(blacklist_categories=("Zs", "Zl", "Zp", "Cc", "Cs"))
#: Printable ASCII, space, tab and line feed: the plain configuration file alphabet.
ASCII_TEXT = st.characters(min_codepoint=0x20, max_codepoint=0x7E) | st.sampled_from(["\t", "\n"])


def sample_table(name: str) -> RuleTable:
    """One of the sample check tables shipped in C{etc/}."""
    with open(os.path.join(ETC, name), encoding="utf-8") as handle:
        return compile_regexp_table(handle.read(), name)
