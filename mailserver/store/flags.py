"""
Pure: Maildir info (``:2,DFRST`` and keyword letters) <-> IMAP flags.

A Maildir file name carries its flags after ``:2,`` as single letters in
ASCII order: ``D`` draft, ``F`` flagged, ``P`` passed, ``R`` replied,
``S`` seen, ``T`` trashed.  Lower-case letters ``a`` to ``z`` are custom
keywords, numbered through the folder's ``dovecot-keywords`` file (line
``0 $Forwarded`` gives ``a``), as Dovecot does, so both servers read the
same flags.  Letters with no IMAP meaning (``P``, unknown ones) are kept
when flags are rewritten.
"""

from __future__ import annotations

from typing import Iterable, Sequence

#: The Maildir letter of each IMAP system flag that a file name can carry.
SYSTEM_FLAGS: dict[str, str] = {
    "\\Draft": "D",
    "\\Flagged": "F",
    "\\Answered": "R",
    "\\Seen": "S",
    "\\Deleted": "T",
}
_LETTER_TO_FLAG = {letter: flag for flag, letter in SYSTEM_FLAGS.items()}
_CANONICAL = {flag.lower(): flag for flag in SYSTEM_FLAGS}

#: \Recent is per session, never stored.
RECENT = "\\Recent"

#: Letters ``a``..``z``: at most 26 keywords per folder.
MAX_KEYWORDS = 26

#: Longest keyword we accept (Dovecot has no fixed limit; we keep lines short).
MAX_KEYWORD_LENGTH = 128

#: The info prefix of the Maildir "experimental semantics" version 2.
INFO_PREFIX = "2,"

# IMAP atom characters, minus "\" which only starts system flags.
_ATOM_SPECIALS = set('(){ %*"\\]')


class FlagError(ValueError):
    """A flag the folder cannot store (bad name, or no keyword letter left)."""


def canonical_flag(flag: str) -> str:
    """C{\\seen} -> C{\\Seen}; keywords are returned unchanged."""
    return _CANONICAL.get(flag.lower(), flag)


def is_system_flag(flag: str) -> bool:
    return flag.startswith("\\")


def is_valid_keyword(keyword: str) -> bool:
    """True for an IMAP atom that may be stored as a keyword."""
    if not keyword or len(keyword) > MAX_KEYWORD_LENGTH:
        return False
    return all(0x20 < ord(c) < 0x7F and c not in _ATOM_SPECIALS for c in keyword)


def info_letters(info: str | None) -> str:
    """The flag letters of an info part (``"2,FS"`` -> ``"FS"``); "" otherwise."""
    if info is None or not info.startswith(INFO_PREFIX):
        return ""
    return info[len(INFO_PREFIX):]


def make_info(letters: str) -> str:
    """The info part for C{letters}: ``2,`` then each letter once, in ASCII order."""
    return INFO_PREFIX + "".join(sorted(set(letters)))


def letters_to_flags(letters: str, keywords: Sequence[str | None]) -> frozenset[str]:
    """
    The IMAP flags of a message whose info has C{letters}.

    @param keywords: the folder's keyword table (index 0 is letter ``a``);
        a letter past its end, or at an empty slot, is not reported.
    """
    flags = set()
    for letter in letters:
        flag = _LETTER_TO_FLAG.get(letter)
        if flag is not None:
            flags.add(flag)
        elif "a" <= letter <= "z":
            index = ord(letter) - ord("a")
            if index < len(keywords) and keywords[index]:
                flags.add(keywords[index])
    return frozenset(flags)


def keyword_index(keywords: Sequence[str | None], keyword: str) -> int | None:
    """Position of C{keyword} in the table, matched case-insensitively."""
    folded = keyword.lower()
    for index, known in enumerate(keywords):
        if known is not None and known.lower() == folded:
            return index
    return None


def flags_to_letters(
    flags: Iterable[str], keywords: Sequence[str | None], keep: str = ""
) -> str:
    """
    The info letters for C{flags}, keeping the letters of C{keep} that have
    no IMAP meaning (``P`` and unknown upper-case letters).

    @raise FlagError: a keyword is not in the table (call L{add_keywords} first).
    """
    letters = {c for c in keep if c.isupper() and c not in _LETTER_TO_FLAG}
    for flag in flags:
        flag = canonical_flag(flag)
        if flag == RECENT:
            continue
        if is_system_flag(flag):
            letter = SYSTEM_FLAGS.get(flag)
            if letter is None:
                raise FlagError(f"unknown system flag {flag}")
            letters.add(letter)
            continue
        index = keyword_index(keywords, flag)
        if index is None or index >= MAX_KEYWORDS:
            raise FlagError(f"keyword {flag} has no letter in this folder")
        letters.add(chr(ord("a") + index))
    return "".join(sorted(letters))


def add_keywords(keywords: Sequence[str | None], wanted: Iterable[str]) -> list[str | None]:
    """
    The keyword table with every keyword of C{wanted} present.

    System flags in C{wanted} are ignored.  Existing entries never move, so
    letters already in file names keep their meaning.

    @raise FlagError: a keyword is malformed, or there are more than 26.
    """
    table = list(keywords)
    for flag in wanted:
        if is_system_flag(flag):
            continue
        if not is_valid_keyword(flag):
            raise FlagError(f"invalid keyword {flag!r}")
        if keyword_index(table, flag) is not None:
            continue
        try:
            free = table.index(None)
        except ValueError:
            free = len(table)
            table.append(None)
        if free >= MAX_KEYWORDS:
            raise FlagError(f"too many keywords in this folder (at most {MAX_KEYWORDS})")
        table[free] = flag
    return table


def parse_keywords(text: str) -> list[str | None]:
    """
    Parse a ``dovecot-keywords`` file: lines ``<index> <keyword>``.

    Malformed lines and out-of-range indexes are skipped (the file is
    written by other programs too); the result has C{None} in unused slots.
    """
    table: list[str | None] = []
    for line in text.splitlines():
        number, _, keyword = line.strip().partition(" ")
        if not (number.isascii() and number.isdigit()) or not is_valid_keyword(keyword):
            continue
        index = int(number)
        if index >= MAX_KEYWORDS:
            continue
        while len(table) <= index:
            table.append(None)
        table[index] = keyword
    return table


def format_keywords(keywords: Sequence[str | None]) -> str:
    """The ``dovecot-keywords`` text for a keyword table."""
    return "".join(f"{i} {k}\n" for i, k in enumerate(keywords) if k)


def apply_store(current: frozenset[str], flags: Iterable[str], mode: int) -> frozenset[str]:
    """
    The flags after a STORE: C{mode} 0 replaces, 1 adds, -1 removes.

    \\Recent cannot be stored and is ignored; system flag names are
    canonicalised.
    """
    wanted = {canonical_flag(f) for f in flags} - {RECENT}
    if mode > 0:
        return frozenset(current | wanted)
    if mode < 0:
        folded = {f.lower() for f in wanted}
        return frozenset(f for f in current if f.lower() not in folded)
    return frozenset(wanted)
