"""
Pure: IMAP data formatting (strings, lists, dates) and date parsing.
"""

from __future__ import annotations

import calendar
import re
import time
from datetime import date, datetime, timedelta, timezone
from typing import Iterable, Sequence

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTH_NUMBER = {m.lower(): i + 1 for i, m in enumerate(MONTHS)}

#: Longest string sent quoted; longer ones go as literals.
_QUOTED_MAX = 1024
_ATOM_SPECIALS = frozenset(b'(){ %*"\\]')


class Raw(bytes):
    """Bytes already in wire form (an atom, a list, NIL): sent as they are."""


NIL = Raw(b"NIL")


def literal(data: bytes) -> bytes:
    return b"{%d}\r\n" % len(data) + data


def quoted(data: bytes) -> bytes:
    return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def string(value: bytes | str) -> bytes:
    """An IMAP string: quoted when it can be, else a literal."""
    if isinstance(value, str):
        value = value.encode("utf-8", "surrogateescape")
    if len(value) <= _QUOTED_MAX and all(0 < b < 0x80 and b not in (10, 13) for b in value):
        return quoted(value)
    return literal(value)


def nstring(value: bytes | str | None) -> bytes:
    return NIL if value is None else string(value)


def astring(value: bytes | str) -> bytes:
    """An atom when possible (mailbox names), else a string."""
    if isinstance(value, str):
        value = value.encode("utf-8", "surrogateescape")
    if value and all(0x20 < b < 0x7F and b not in _ATOM_SPECIALS for b in value):
        return value
    return string(value)


def plist(items: Iterable[bytes]) -> bytes:
    """A parenthesised list of items already in wire form."""
    return b"(" + b" ".join(items) + b")"


def flag_list(flags: Iterable[str]) -> bytes:
    return plist(f.encode("ascii", "replace") for f in _ordered_flags(flags))


def _ordered_flags(flags: Iterable[str]) -> list[str]:
    """System flags, then keywords, then ``\\*``: a stable order for responses."""
    flags = list(flags)
    system = sorted(f for f in flags if f.startswith("\\") and f != "\\*")
    return system + sorted(f for f in flags if not f.startswith("\\")) + [f for f in flags if f == "\\*"]


def sequence_set(numbers: Sequence[int]) -> bytes:
    """[1, 2, 3, 5] -> b"1:3,5" (in the order given, runs compressed)."""
    out: list[str] = []
    i = 0
    while i < len(numbers):
        j = i
        while j + 1 < len(numbers) and numbers[j + 1] == numbers[j] + 1:
            j += 1
        out.append(str(numbers[i]) if i == j else f"{numbers[i]}:{numbers[j]}")
        i = j + 1
    return ",".join(out).encode("ascii")


def internal_date(timestamp: float) -> bytes:
    """``"17-Jul-1996 02:44:25 -0700"`` in the server's local time zone."""
    local = time.localtime(timestamp)
    offset = local.tm_gmtoff // 60
    sign = "+" if offset >= 0 else "-"
    offset = abs(offset)
    text = "%02d-%s-%04d %02d:%02d:%02d %s%02d%02d" % (
        local.tm_mday,
        MONTHS[local.tm_mon - 1],
        local.tm_year,
        local.tm_hour,
        local.tm_min,
        local.tm_sec,
        sign,
        offset // 60,
        offset % 60,
    )
    return b'"' + text.encode("ascii") + b'"'


def local_date(timestamp: float) -> date:
    """The calendar date of C{timestamp} in the server's time zone (SEARCH SINCE/ON/BEFORE)."""
    local = time.localtime(timestamp)
    return date(local.tm_year, local.tm_mon, local.tm_mday)


_DATE = re.compile(r"^(\d{1,2})-([A-Za-z]{3})-(\d{4})$")
_DATETIME = re.compile(r"^ ?(\d{1,2})-([A-Za-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)$")


def parse_date(text: str) -> date:
    """IMAP ``date`` (``1-Feb-1994``); raises ValueError."""
    m = _DATE.match(text)
    if not m or m.group(2).lower() not in _MONTH_NUMBER:
        raise ValueError(f"bad date {text!r}")
    return date(int(m.group(3)), _MONTH_NUMBER[m.group(2).lower()], int(m.group(1)))


def parse_datetime(text: str) -> float:
    """IMAP ``date-time`` (``17-Jul-1996 02:44:25 -0700``) -> POSIX time; raises ValueError."""
    m = _DATETIME.match(text)
    if not m or m.group(2).lower() not in _MONTH_NUMBER:
        raise ValueError(f"bad date-time {text!r}")
    day, _, year, hh, mm, ss, sign, zh, zm = m.groups()
    zone = timezone((1 if sign == "+" else -1) * timedelta(hours=int(zh), minutes=int(zm)))
    moment = datetime(int(year), _MONTH_NUMBER[m.group(2).lower()], int(day), int(hh), int(mm), int(ss), tzinfo=zone)
    return calendar.timegm(moment.utctimetuple())
