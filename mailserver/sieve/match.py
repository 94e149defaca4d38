"""
Pure: comparators (RFC 4790 names), match types (:is :contains :matches,
:regex, RFC 5231 :count/:value) and the bounds that keep :regex cheap.
"""

from __future__ import annotations

import re
from typing import Sequence

import re2  # google-re2: linear-time matching for :regex

from mailserver.sieve.parser import SieveError

COMPARATORS = ("i;octet", "i;ascii-casemap", "i;ascii-numeric")
RELATIONS = ("gt", "ge", "lt", "le", "eq", "ne")
#: Longest :regex pattern, and the longest value a :regex is run against (RE2 is
#: linear in it; the bound keeps a script with many tests cheap too).
MAX_REGEX_PATTERN = 512
MAX_REGEX_INPUT = 4096
#: Longest value a :matches glob runs against (its backtracking is bounded by this).
MAX_GLOB_INPUT = 65536
_ASCII_UPPER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def fold(text: str, comparator: str) -> str:
    """The form a comparator compares: ASCII letters folded for i;ascii-casemap."""
    return text.translate(_ASCII_UPPER) if comparator == "i;ascii-casemap" else text


def _numeric(text: str) -> float:
    """i;ascii-numeric: the leading digits; no digits is positive infinity."""
    digits = re.match(r"[0-9]*", text).group(0)  # type: ignore[union-attr]
    return float(int(digits)) if digits else float("inf")


def relate(value: str, key: str, relation: str, comparator: str) -> bool:
    """C{value RELATION key} under C{comparator}."""
    if comparator == "i;ascii-numeric":
        left: object = _numeric(value)
        right: object = _numeric(key)
    else:
        left, right = fold(value, comparator), fold(key, comparator)
    return {
        "gt": lambda: left > right, "ge": lambda: left >= right,  # type: ignore[operator]
        "lt": lambda: left < right, "le": lambda: left <= right,  # type: ignore[operator]
        "eq": lambda: left == right, "ne": lambda: left != right,
    }[relation]()


def glob_to_regex(pattern: str) -> str:
    """A :matches pattern (``*``, ``?``, backslash escapes) as a Python regex with a group per wildcard."""
    out = []
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\" and index + 1 < len(pattern):
            index += 1
            out.append(re.escape(pattern[index]))
        elif char == "*":
            out.append("(.*?)")
        elif char == "?":
            out.append("(.)")
        else:
            out.append(re.escape(char))
        index += 1
    return "".join(out)


_STAR, _ONE = object(), object()


def _glob_tokens(pattern: str) -> list[object]:
    tokens: list[object] = []
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\" and index + 1 < len(pattern):
            index += 1
            tokens.append(pattern[index])
        else:
            tokens.append(_STAR if char == "*" else _ONE if char == "?" else char)
        index += 1
    return tokens


def glob_match(pattern: str, value: str) -> bool:
    """
    Whether C{value} matches the :matches C{pattern}, in O(len(pattern) x
    len(value)) steps: on a mismatch only the last ``*`` takes one more
    character (a backtracking regex is exponential in the number of stars).
    """
    tokens = _glob_tokens(pattern)
    text = position = 0
    star, mark = -1, 0
    while text < len(value):
        if position < len(tokens) and tokens[position] is not _STAR and (
            tokens[position] is _ONE or tokens[position] == value[text]
        ):
            text += 1
            position += 1
        elif position < len(tokens) and tokens[position] is _STAR:
            star, mark = position, text
            position += 1
        elif star >= 0:
            position = star + 1
            mark += 1
            text = mark
        else:
            return False
    while position < len(tokens) and tokens[position] is _STAR:
        position += 1
    return position == len(tokens)


def _options(case_sensitive: bool) -> re2.Options:
    options = re2.Options()
    options.log_errors = False  # a bad user pattern is our SieveError, not a line on stderr
    options.dot_nl = True
    options.case_sensitive = case_sensitive
    options.max_mem = 8 << 20  # RE2's bound on the compiled program
    return options


_CASE_SENSITIVE, _CASE_INSENSITIVE = _options(True), _options(False)


def check_regex(pattern: str, line: int = 0, case_sensitive: bool = True, limit: int = MAX_REGEX_PATTERN) -> re2._Regexp:
    """
    Compile a :regex key (POSIX ERE) with RE2, which matches in time linear
    in the input (no backtracking); back-references and look-arounds, which
    RE2 lacks, are refused as errors.
    """
    if len(pattern) > limit:
        raise SieveError(line, f"regex longer than {limit} characters")
    try:
        return re2.compile(pattern, _CASE_SENSITIVE if case_sensitive else _CASE_INSENSITIVE)
    except re2.error as error:
        detail = error.args[0].decode("utf-8", "replace") if error.args and isinstance(error.args[0], bytes) else error
        raise SieveError(line, f"bad regex {pattern!r}: {detail}") from None


class Matcher:
    """One test's comparator and match type; C{captures} holds the last match variables."""

    def __init__(self, comparator: str = "i;ascii-casemap", match_type: str = "is", relation: str = "") -> None:
        self.comparator = comparator
        self.match_type = match_type
        self.relation = relation
        self.captures: list[str] | None = None

    def matches(self, values: Sequence[str], keys: Sequence[str]) -> bool:
        """True if any value matches any key (for :count, the number of values)."""
        if self.match_type == "count":
            count = str(len([value for value in values if value != ""]))
            return any(relate(count, key, self.relation, "i;ascii-numeric") for key in keys)
        for value in values:
            for key in keys:
                if self.one(value, key):
                    return True
        return False

    def one(self, value: str, key: str) -> bool:
        comparator, kind = self.comparator, self.match_type
        if kind == "value":
            return relate(value, key, self.relation, comparator)
        if kind == "is":
            if comparator == "i;ascii-numeric":
                return _numeric(value) == _numeric(key)
            return fold(value, comparator) == fold(key, comparator)
        if comparator == "i;ascii-numeric":
            raise SieveError(0, f"comparator i;ascii-numeric does not support :{kind}")
        if kind == "contains":
            return fold(key, comparator) in fold(value, comparator)
        sensitive = comparator != "i;ascii-casemap"
        if kind == "matches":
            value = value[:MAX_GLOB_INPUT]
            if not glob_match(fold(key, comparator), fold(value, comparator)):
                return False  # decided in linear steps; the regex below only fills the match variables
            found = check_regex(glob_to_regex(key), case_sensitive=sensitive, limit=8 * MAX_GLOB_INPUT).fullmatch(value)
            if found is not None:
                self.captures = [found.group(0)] + [group or "" for group in found.groups()]
            return found is not None
        found = check_regex(key, case_sensitive=sensitive).search(value[:MAX_REGEX_INPUT])
        if found is not None:
            self.captures = [found.group(0)] + [group or "" for group in found.groups()]
        return found is not None
