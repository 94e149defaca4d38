"""
Pure: comparators (RFC 4790 names), match types (:is :contains :matches,
:regex, RFC 5231 :count/:value) and the bounds that keep :regex cheap.
"""

from __future__ import annotations

import re
from typing import Sequence

from mailserver.sieve.parser import SieveError

COMPARATORS = ("i;octet", "i;ascii-casemap", "i;ascii-numeric")
RELATIONS = ("gt", "ge", "lt", "le", "eq", "ne")
#: Longest :regex pattern, and the longest value a :regex is run against.
MAX_REGEX_PATTERN = 512
MAX_REGEX_INPUT = 4096
#: Longest value a :matches glob runs against (its backtracking is bounded by this).
MAX_GLOB_INPUT = 65536
# A quantified group whose body is itself quantified: (a+)+, (a*)*, (a|aa)+ ...
_NESTED_QUANTIFIER = re.compile(r"\((?:[^()\\]|\\.)*[+*}](?:[^()\\]|\\.)*\)\s*[+*{]")
_BACKREFERENCE = re.compile(r"\\[1-9]")
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


def check_regex(pattern: str, line: int = 0) -> re.Pattern[str]:
    """Compile a :regex key (POSIX ERE, used as Python re); refuse what could backtrack badly."""
    if len(pattern) > MAX_REGEX_PATTERN:
        raise SieveError(line, f"regex longer than {MAX_REGEX_PATTERN} characters")
    if _NESTED_QUANTIFIER.search(pattern) or _BACKREFERENCE.search(pattern):
        raise SieveError(line, f"regex {pattern!r} has nested quantifiers or back-references")
    try:
        return re.compile(pattern, re.DOTALL)
    except re.error as error:
        raise SieveError(line, f"bad regex {pattern!r}: {error}") from None


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
        flags = re.IGNORECASE if comparator == "i;ascii-casemap" else 0
        if kind == "matches":
            value = value[:MAX_GLOB_INPUT]
            if not glob_match(fold(key, comparator), fold(value, comparator)):
                return False  # decided in linear steps; the regex below only fills the match variables
            found = re.fullmatch(glob_to_regex(key), value, flags | re.DOTALL | re.ASCII)
            if found is not None:
                self.captures = [found.group(0)] + list(found.groups())
            return found is not None
        compiled = check_regex(key)
        found = re.compile(compiled.pattern, compiled.flags | flags).search(value[:MAX_REGEX_INPUT])
        if found is not None:
            self.captures = [found.group(0)] + [group or "" for group in found.groups()]
        return found is not None
