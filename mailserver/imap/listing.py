"""
Pure: LIST and LSUB (RFC 3501 6.3.8-9) with CHILDREN and SPECIAL-USE
attributes, over a list of existing folder names.
"""

from __future__ import annotations

from typing import Iterable

from mailserver.store.folders import DELIMITER, INBOX, parent_names


class Wildcard:
    """
    A LIST pattern (reference + pattern joined): C{*} matches anything,
    C{%} anything but the delimiter; a leading INBOX is case-insensitive.

    Matched as a bit-parallel automaton (one bit per pattern position, a few
    integer operations per character of the name), so the cost is linear
    in the name whatever the pattern: a regex of C{.*a.*a.*a...} backtracks
    exponentially.
    """

    def __init__(self, reference: str, pattern: str) -> None:
        joined = reference + pattern
        if joined[:5].upper() == INBOX and (len(joined) == 5 or joined[5] in (DELIMITER, "*", "%")):
            joined = INBOX + joined[5:]
        tokens: list[str] = []
        for char in joined:
            if char in "*%" and tokens and tokens[-1] in "*%":
                # A run of wildcards is one: "*" if it holds a "*", else "%".
                tokens[-1] = "*" if "*" in (char, tokens[-1]) else "%"
            else:
                tokens.append(char)
        self._literals: dict[str, int] = {}
        self._any = self._local = 0
        for index, token in enumerate(tokens):
            bit = 1 << index
            if token == "*":
                self._any |= bit
            elif token == "%":
                self._local |= bit
            else:
                self._literals[token] = self._literals.get(token, 0) | bit
        self._wild = self._any | self._local
        self._accept = 1 << len(tokens)

    def _closure(self, states: int) -> int:
        # A wildcard may match nothing; runs were merged, so one step suffices.
        return states | ((states & self._wild) << 1)

    def match(self, name: str) -> bool:
        """Whether the whole of C{name} matches."""
        states = self._closure(1)
        literals, any_, local = self._literals, self._any, self._local
        for char in name:
            moved = ((states & literals.get(char, 0)) << 1) | (states & any_)
            if char != DELIMITER:
                moved |= states & local
            states = self._closure(moved)
            if not states:
                return False
        return bool(states & self._accept)


def _sorted(names: Iterable[str]) -> list[str]:
    names = set(names)
    rest = sorted(n for n in names if n != INBOX)
    return ([INBOX] if INBOX in names else []) + rest


def list_folders(
    existing: list[str],
    reference: str,
    pattern: str,
    special_use: dict[str, str],
) -> list[tuple[str, list[str]]]:
    """LIST: matching names with their attributes (parents without a folder are \\Noselect)."""
    wanted = Wildcard(reference, pattern)
    present = set(existing)
    candidates = set(present)
    for name in existing:
        candidates.update(parent_names(name))
    result = []
    for name in _sorted(candidates):
        if not wanted.match(name):
            continue
        attrs = []
        if name not in present:
            attrs.append("\\Noselect")
        has_children = any(other.startswith(name + DELIMITER) for other in candidates)
        attrs.append("\\HasChildren" if has_children else "\\HasNoChildren")
        if name in special_use and name in present:
            attrs.append(special_use[name])
        result.append((name, attrs))
    return result


def list_subscribed(
    subscribed: list[str],
    existing: list[str],
    reference: str,
    pattern: str,
    special_use: dict[str, str],
) -> list[tuple[str, list[str]]]:
    """
    LSUB: subscribed names that match; a parent matched only through ``%``
    whose child is subscribed is returned with \\Noselect (RFC 3501 6.3.9).
    """
    wanted = Wildcard(reference, pattern)
    present = set(existing)
    chosen: dict[str, list[str]] = {}
    for name in subscribed:
        if wanted.match(name):
            attrs = [] if name in present else ["\\Noselect"]
            if name in special_use and name in present:
                attrs.append(special_use[name])
            chosen[name] = attrs
    for name in subscribed:
        if wanted.match(name):
            continue
        for parent in parent_names(name):
            if parent not in chosen and wanted.match(parent):
                chosen[parent] = ["\\Noselect"]
    return [(name, chosen[name]) for name in _sorted(chosen)]
