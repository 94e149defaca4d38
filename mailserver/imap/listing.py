"""
Pure: LIST and LSUB (RFC 3501 6.3.8-9) with CHILDREN and SPECIAL-USE
attributes, over a list of existing folder names.
"""

from __future__ import annotations

import re
from typing import Iterable

from mailserver.store.folders import DELIMITER, INBOX, parent_names


def pattern_regex(reference: str, pattern: str) -> re.Pattern[str]:
    """
    The reference and pattern joined, as a regex: ``*`` matches anything,
    ``%`` anything but the delimiter; a leading INBOX is case-insensitive.
    """
    joined = reference + pattern
    if joined[:5].upper() == INBOX and (len(joined) == 5 or joined[5] in (DELIMITER, "*", "%")):
        joined = INBOX + joined[5:]
    out = []
    for ch in joined:
        if ch == "*":
            out.append(".*")
        elif ch == "%":
            out.append("[^" + re.escape(DELIMITER) + "]*")
        else:
            out.append(re.escape(ch))
    return re.compile("".join(out) + r"\Z", re.DOTALL)


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
    regex = pattern_regex(reference, pattern)
    present = set(existing)
    candidates = set(present)
    for name in existing:
        candidates.update(parent_names(name))
    result = []
    for name in _sorted(candidates):
        if not regex.match(name):
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
    regex = pattern_regex(reference, pattern)
    present = set(existing)
    chosen: dict[str, list[str]] = {}
    for name in subscribed:
        if regex.match(name):
            attrs = [] if name in present else ["\\Noselect"]
            if name in special_use and name in present:
                attrs.append(special_use[name])
            chosen[name] = attrs
    for name in subscribed:
        if regex.match(name):
            continue
        for parent in parent_names(name):
            if parent not in chosen and regex.match(parent):
                chosen[parent] = ["\\Noselect"]
    return [(name, chosen[name]) for name in _sorted(chosen)]
