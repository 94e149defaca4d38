"""
Pure: LIST and LSUB (RFC 3501 6.3.8-9) with CHILDREN and SPECIAL-USE
attributes, over a list of existing folder names.

Wildcards are matched by L{Pattern} without backtracking (a backtracking
regex took 23 s for ``*a*a*a*a*ab`` against a 200-character name, and
froze the reactor).  Runs of wildcards collapse first.  Where ``%`` cannot
differ from ``*`` (no ``%``, or a name without a delimiter) the literal
pieces are found in order with C{str.find}, leftmost each, which is exact
for ``*``; otherwise the set of name positions a pattern prefix can end at
is kept as a bit mask and advanced token by token: O(len(name) · tokens)
bit operations.  A pattern needing more literal characters than a name
has fails at once, so the work per name is bounded by the name length
(255) whatever the pattern; the account runs the matching in a thread.
"""

from __future__ import annotations

from typing import Iterable

from mailserver.store.folder_names import DELIMITER, INBOX, parent_names


class Pattern:
    """
    A LIST pattern (reference and pattern joined): ``*`` matches anything,
    ``%`` anything but the delimiter; a leading INBOX is case-insensitive.
    """

    def __init__(self, reference: str, pattern: str) -> None:
        joined = reference + pattern
        if joined[:5].upper() == INBOX and (len(joined) == 5 or joined[5] in (DELIMITER, "*", "%")):
            joined = INBOX + joined[5:]
        self.tokens = _tokens(joined)
        self.literal_length = sum(len(t) for t in self.tokens if t not in ("*", "%"))

    def match(self, name: str) -> bool:
        """Whether C{name} matches; never backtracks."""
        if self.literal_length > len(name) or not _match_stars(self.tokens, name):
            return False  # a "%" match is also a "*" match: the cheap test first
        if "%" not in self.tokens or DELIMITER not in name:
            return True  # "%" is "*" here
        return self._match_levels(name)

    def _match_levels(self, name: str) -> bool:
        """The bit-mask walk, in O(len(name) · tokens) bit operations."""
        n = len(name)
        full = (1 << (n + 1)) - 1
        found: dict[str, int] = {}
        levels = _level_masks(name)
        state = 1  # bit i set: the tokens so far can end at name position i
        for token in self.tokens:
            if token == "*":
                state = full & ~((state & -state) - 1)
            elif token == "%":
                state = _percent(state, levels)
            else:
                where = found.get(token)
                if where is None:
                    where = found[token] = _occurrences(name, token)
                state = (where & state) << len(token)
            if not state:
                return False
        return bool(state >> n & 1)


def _match_stars(tokens: list[str], name: str) -> bool:
    """
    Tokens whose wildcards all match anything: the first literal must be a
    prefix, the last a suffix, and the ones between occur in order (the
    leftmost occurrence of each is the best choice, so no backtracking).
    """
    if not tokens:
        return name == ""
    if len(tokens) == 1 and tokens[0] not in ("*", "%"):
        return name == tokens[0]
    start, end = 0, len(name)
    pieces = list(tokens)
    if pieces[0] not in ("*", "%"):
        if not name.startswith(pieces[0]):
            return False
        start = len(pieces[0])
        pieces = pieces[1:]
    if pieces[-1] not in ("*", "%"):
        if not name.endswith(pieces[-1]) or end - len(pieces[-1]) < start:
            return False
        end -= len(pieces[-1])
        pieces = pieces[:-1]
    for piece in pieces:
        if piece in ("*", "%"):
            continue
        found = name.find(piece, start, end)
        if found < 0:
            return False
        start = found + len(piece)
    return True


def _tokens(joined: str) -> list[str]:
    """Literal runs and single wildcards; ``**``, ``*%``, ``%*`` become ``*``, ``%%`` ``%``."""
    tokens: list[str] = []
    literal: list[str] = []
    for ch in joined:
        if ch not in ("*", "%"):
            literal.append(ch)
            continue
        if literal:
            tokens.append("".join(literal))
            literal = []
        if tokens and tokens[-1] in ("*", "%"):
            if ch == "*":
                tokens[-1] = "*"
        else:
            tokens.append(ch)
    if literal:
        tokens.append("".join(literal))
    return tokens


def _occurrences(name: str, piece: str) -> int:
    """Bit i set where C{piece} occurs in C{name} at index i (overlaps included)."""
    mask = 0
    i = name.find(piece)
    while i >= 0:
        mask |= 1 << i
        i = name.find(piece, i + 1)
    return mask


def _level_masks(name: str) -> list[tuple[int, int]]:
    """
    For L{_percent}: the positions of the even and of the odd hierarchy
    levels of C{name}, each with a bit just past the end of every level.
    """
    masks = [[0, 0], [0, 0]]
    start, level, n = 0, 0, len(name)
    while True:
        end = name.find(DELIMITER, start)
        if end < 0:
            end = n
        # positions start..end lie in one level: "%" moves right within it
        masks[level % 2][0] |= ((1 << (end + 1)) - 1) ^ ((1 << start) - 1)
        masks[level % 2][1] |= 1 << (end + 1)
        if end == n:
            return [(levels, ends) for levels, ends in masks]
        start, level = end + 1, level + 1


def _percent(state: int, masks: list[tuple[int, int]]) -> int:
    """
    Positions reachable from C{state} over characters other than the
    delimiter: in each level, every position from its first set bit on.
    For one level ending at e with bits v, ``(2**(e+1) - v) | v`` is that
    fill (two's complement keeps the lowest bit and sets all above it);
    even and odd levels are done apart so a level with no bits, whose
    ``2**(e+1)`` spills into the next level, spills into a masked-out one.
    """
    out = 0
    for levels, ends in masks:
        out |= ((ends - (state & levels)) | state) & levels
    return out


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
    matcher = Pattern(reference, pattern)
    present = set(existing)
    candidates = set(present)
    for name in existing:
        candidates.update(parent_names(name))
    parents = {parent for name in candidates for parent in parent_names(name)}
    result = []
    for name in _sorted(candidates):
        if not matcher.match(name):
            continue
        attrs = []
        if name not in present:
            attrs.append("\\Noselect")
        attrs.append("\\HasChildren" if name in parents else "\\HasNoChildren")
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
    matcher = Pattern(reference, pattern)
    present = set(existing)
    chosen: dict[str, list[str]] = {}
    for name in subscribed:
        if matcher.match(name):
            attrs = [] if name in present else ["\\Noselect"]
            if name in special_use and name in present:
                attrs.append(special_use[name])
            chosen[name] = attrs
    for name in subscribed:
        if matcher.match(name):
            continue
        for parent in parent_names(name):
            if parent not in chosen and matcher.match(parent):
                chosen[parent] = ["\\Noselect"]
    return [(name, chosen[name]) for name in _sorted(chosen)]
