"""
Pure: a literal prefilter that lets a regexp table skip, in one C-level
search per line, every rule whose pattern cannot match.

Most patterns contain literals that any match must contain (C{subject:} and
C{lottery} in C{/^Subject:.*\\blottery\\b/}).  L{required_literals} finds
them with Python's own regular expression parser; L{LiteralFilter} joins the
most selective literal of each pattern into one trie-shaped expression and
checks a pattern's other literals only when that one occurs.  A line none of
the literals occurs in is matched by none of those rules, so only the rules
without a literal (negated ones, alternations at the top level) still run.

Case-insensitive literals are compared on L{fold}ed text.  The fold maps
every pair of characters that C{re.IGNORECASE} treats as equal to the same
character, so the filter never hides a match (it may let extra lines
through, which the real pattern then rejects).
"""

from __future__ import annotations

import re
import warnings
from typing import Sequence

try:  # Python 3.11+: the parser behind re.compile, and its opcodes.
    from re import _constants as _sre_constants
    from re import _parser as _sre_parse
except ImportError:  # pragma: no cover - older Pythons
    _sre_parse = _sre_constants = None  # type: ignore[assignment]

try:  # The extra case equivalences re.IGNORECASE honours (s/ſ, µ/μ, ...).
    from re._casefix import _EXTRA_CASES
except ImportError:  # pragma: no cover - then case-insensitive rules are not prefiltered
    _EXTRA_CASES = None

MIN_LITERAL = 3  # shorter literals occur in nearly every line: not worth it
MAX_LITERAL = 64  # a prefix of a required literal is required too

_FOLD_TABLE: dict[int, int] = {}
if _EXTRA_CASES is not None:
    for _char, _others in _EXTRA_CASES.items():
        _group = {_char, *_others}
        for _member in _group:
            for _other in _EXTRA_CASES.get(_member, ()):
                _group.add(_other)
        _canonical = min(_group)
        for _member in _group:
            if _member != _canonical:
                _FOLD_TABLE[_member] = _canonical


def fold(text: str) -> str:
    """
    C{text} with each character replaced by a representative of its
    C{re.IGNORECASE} class: simple lower case, then the extra equivalences.
    """
    if text.isascii():
        return text.lower()
    # U+0130 is the one character whose full lower case (str.lower) is two
    # characters; re uses the simple mapping, "i".
    return text.replace("\u0130", "i").lower().translate(_FOLD_TABLE)


def required_literals(regex: re.Pattern[str]) -> tuple[tuple[str, ...], bool] | None:
    """
    C{(literals, folded)}: strings every match of C{regex} contains (folded
    with L{fold} when the pattern ignores case), the most selective first,
    or None if there is none worth using.
    """
    if _sre_parse is None:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. FutureWarning "possible nested set"
            parsed = _sre_parse.parse(regex.pattern, regex.flags)
    except (re.error, RecursionError, OverflowError, TypeError, ValueError):
        return None
    ignore_case = bool(parsed.state.flags & re.IGNORECASE)
    if ignore_case and _EXTRA_CASES is None:
        return None
    runs: list[str] = []
    try:
        _collect(parsed, runs)
    except RecursionError:
        return None
    words = {fold(run[:MAX_LITERAL]) if ignore_case else run[:MAX_LITERAL] for run in runs}
    words = {word for word in words if len(word) >= MIN_LITERAL}
    if not words:
        return None
    # Header names ("subject:") occur in every header of that name: put a
    # word that says more first, the longest one.
    ordered = sorted(words, key=lambda w: (w.endswith(":"), -len(w), w))
    return tuple(ordered), ignore_case


def _collect(sequence, runs: list[str]) -> None:
    """Append to C{runs} each literal run that every match of C{sequence} contains."""
    c = _sre_constants
    current: list[str] = []
    for op, av in sequence:
        if op is c.LITERAL:
            current.append(chr(av))
            continue
        if current:
            runs.append("".join(current))
            current = []
        if op is c.SUBPATTERN:
            _group, add_flags, del_flags, inner = av
            if not (add_flags or del_flags):  # scoped flags could change the case rules
                _collect(inner, runs)
        elif op in (c.MAX_REPEAT, c.MIN_REPEAT, getattr(c, "POSSESSIVE_REPEAT", None)):
            low, _high, inner = av
            if low >= 1:
                _collect(inner, runs)
        elif op is getattr(c, "ATOMIC_GROUP", None):
            _collect(av, runs)
        # Anything else (classes, anchors, alternations, lookarounds, group
        # references) ends the run and contributes nothing.
    if current:
        runs.append("".join(current))


def _trie_pattern(words: Sequence[str]) -> str:
    """One expression matching any of C{words}, shaped as a trie so that re
    rejects a position after one character comparison per branch."""
    trie: dict = {}
    for word in words:
        node = trie
        for char in word:
            node = node.setdefault(char, {})
        node[""] = {}

    def build(node: dict) -> str:
        ends = "" in node
        branches = [re.escape(char) + build(child) for char, child in sorted(node.items()) if char]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        if ends:  # a shorter word already ends here: that is a match
            return ""
        return body

    return build(trie)


class LiteralFilter:
    """
    For a sequence of patterns (None for those that cannot be filtered),
    L{possible} names those that might match a text.
    """

    def __init__(self, literals: Sequence[tuple[tuple[str, ...], bool] | None]) -> None:
        self.literals = tuple(literals)
        self.covered = tuple(literal is not None for literal in self.literals)
        folded = sorted({words[0] for words, f in filter(None, self.literals) if f})
        exact = sorted({words[0] for words, f in filter(None, self.literals) if not f})
        self._folded = _compile_trie(folded)
        self._exact = _compile_trie(exact)
        self.active = any(self.covered) and (
            (self._folded is not None or not folded) and (self._exact is not None or not exact)
        )
        if not self.active:
            self.covered = tuple(False for _ in self.literals)

    def present(self, text: str) -> bool:
        """Whether any covered pattern's literal occurs in C{text}."""
        if self._folded is not None and self._folded.search(fold(text)) is not None:
            return True
        return self._exact is not None and self._exact.search(text) is not None

    def possible(self, text: str) -> frozenset[int]:
        """Indexes of covered patterns whose literal occurs in C{text}."""
        folded_text = fold(text) if self._folded is not None else ""
        folded_hit = self._folded is not None and self._folded.search(folded_text) is not None
        exact_hit = self._exact is not None and self._exact.search(text) is not None
        if not (folded_hit or exact_hit):
            return frozenset()
        found = set()
        for index, literal in enumerate(self.literals):
            if literal is None:
                continue
            words, is_folded = literal
            haystack = folded_text if is_folded else text
            if all(word in haystack for word in words):
                found.add(index)
        return frozenset(found)


def _compile_trie(words: Sequence[str]) -> re.Pattern[str] | None:
    if not words:
        return None
    try:
        return re.compile(_trie_pattern(words))
    except (re.error, RecursionError, OverflowError):
        return None
