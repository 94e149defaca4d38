"""
Pure: the line and white-space rules shared by main.cf and the lookup
tables (aliases(5), virtual(5), regexp/pcre tables, Dovecot passwd-file).

Postfix and Dovecot read bytes in the C locale: a line ends at LF (a CR
before it is dropped) and white space is ASCII space, tab and the other C
C{isspace} characters.  Python's C{str.strip}, C{str.split}, C{splitlines}
and C{re}'s C{\\s} also take U+00A0, U+3000, U+2028 and C{\\x1c}-C{\\x1f}
for white space or line ends; parsers that mix the two disagree with
themselves (a line "starts with white space" for one test and not for the
next).  Every config parser uses these helpers instead.
"""

from __future__ import annotations

import re

#: White space as Postfix's ISSPACE and Dovecot see it (C locale).
SPACE = " \t\r\n\v\f"
#: Characters that start a continuation line.
CONTINUATION = " \t"

_WORDS = re.compile(f"[^{re.escape(SPACE)}]+")
_UNICODE_SPACE = re.compile(r"[^\S" + re.escape(SPACE) + r"]|[\x1c-\x1f\x85\u200b\ufeff]")


def split_lines(text: str) -> list[str]:
    """The lines of C{text}, split at LF only, a CR before the LF dropped."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def strip(text: str) -> str:
    """C{text} without leading and trailing ASCII white space."""
    return text.strip(SPACE)


def rstrip(text: str) -> str:
    """C{text} without trailing ASCII white space."""
    return text.rstrip(SPACE)


def lstrip(text: str) -> str:
    """C{text} without leading ASCII white space."""
    return text.lstrip(SPACE)


def words(text: str) -> list[str]:
    """C{text} split at runs of ASCII white space."""
    return _WORDS.findall(text)


def has_space(text: str) -> bool:
    """True if C{text} holds ASCII white space."""
    return any(char in SPACE for char in text)


def unicode_space(text: str) -> str | None:
    """
    The first character of C{text} that looks like white space but is not
    one for Postfix (U+00A0, U+3000, C{\\x1c}-C{\\x1f}...), as C{"U+00A0"};
    None if there is none.  Used to explain an error, not to split.
    """
    match = _UNICODE_SPACE.search(text)
    return None if match is None else f"U+{ord(match.group()):04X}"
