"""
ESEARCH (RFC 4731) and SEARCHRES (RFC 5182): ``SEARCH RETURN (...)``
options and the ``* ESEARCH`` response; ``RETURN (SAVE)`` keeps the
result for ``$``.

Pure: the command handler gives the matching messages; L{respond} says
what to send and what to save.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from mailserver.imap.syntax import ParseError, Reader
from mailserver.imap.wire import quoted, sequence_set

OPTIONS = ("MIN", "MAX", "ALL", "COUNT", "SAVE")


def parse_return(reader: Reader) -> frozenset[str] | None:
    """``RETURN (opts) SP`` before the search keys, or None; ``RETURN ()`` means ALL."""
    if reader.peek().upper() != b"R":
        return None
    mark = (reader._i, reader._j)
    if reader.atom("search key").upper() != "RETURN":
        reader._i, reader._j = mark
        return None
    reader.sp()
    options = list(reader.names("search return option"))
    for option in options:
        if option not in OPTIONS:
            raise ParseError(f"unknown search return option {option}")
    reader.sp()
    return frozenset(options or ["ALL"])


@dataclass(frozen=True)
class Found:
    """One matching message."""

    seq: int
    uid: int
    modseq: int


@dataclass(frozen=True)
class Result:
    line: bytes | None  # the untagged response, if any
    saved: list[int] | None  # UIDs for ``$``, if SAVE was asked


def respond(tag: bytes, uid: bool, options: frozenset[str], found: Sequence[Found], with_modseq: bool) -> Result:
    """
    The ``* ESEARCH`` line for C{found} (in sequence order) and the UIDs
    to save.  SAVE alone sends nothing; SAVE with MIN and/or MAX saves
    just those (RFC 5182 2.1).
    """
    number = (lambda f: f.uid) if uid else (lambda f: f.seq)
    parts = [b"ESEARCH (TAG " + quoted(tag) + b")"]
    if uid:
        parts.append(b"UID")
    shown: list[Found] = []
    if found:
        if "MIN" in options:
            parts.append(b"MIN %d" % number(found[0]))
            shown.append(found[0])
        if "MAX" in options:
            parts.append(b"MAX %d" % number(found[-1]))
            shown.append(found[-1])
        if "ALL" in options:
            parts.append(b"ALL " + sequence_set(sorted(number(f) for f in found)))
    if "COUNT" in options:
        parts.append(b"COUNT %d" % len(found))
    if ("ALL" in options or "COUNT" in options) and found:
        shown = list(found)
    if with_modseq and shown:
        parts.append(b"MODSEQ %d" % max(f.modseq for f in shown))
    saved = None
    if "SAVE" in options:
        if options & {"MIN", "MAX"} and not options & {"ALL", "COUNT"}:
            kept = []
            if found and "MIN" in options:
                kept.append(found[0].uid)
            if found and "MAX" in options:
                kept.append(found[-1].uid)
            saved = sorted(set(kept))
        else:
            saved = [f.uid for f in found]
    line = None if options == {"SAVE"} else b"* " + b" ".join(parts)
    return Result(line, saved)
