"""
Pure: SORT (RFC 5256) and what it and THREAD need from a message.

L{base_subject} is RFC 5256's base-subject extraction (section 2.1);
L{sort_fields} is what the folder index caches per message for SORT and
THREAD (computed once, by C{structure.describe}); L{sort} orders
messages by a list of criteria, ties broken by sequence number.
"""

from __future__ import annotations

import email.utils
import re
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

CRITERIA = frozenset({"ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO"})

_WSP_RUN = re.compile(r"[ \t\r\n]+")
_TRAILER = re.compile(r"(?:\(fwd\)|[ \t])\Z", re.IGNORECASE)
_BLOB = r"\[[^\[\]]*\][ \t]*"
_LEADER_REFWD = re.compile(r"(?:" + _BLOB + r")*(?:re|fwd?)[ \t]*(?:" + _BLOB + r")?:", re.IGNORECASE)
_LEADER_WSP = re.compile(r"[ \t]+")
_LEADING_BLOB = re.compile(_BLOB)
_FWD_HEADER = "[fwd:"
_MSGID = re.compile(r"<([^<>\s]+)>")
_ASCII_UPPER = {c: c - 32 for c in range(ord("a"), ord("z") + 1)}


def ascii_upper(text: str) -> str:
    """i;ascii-casemap: ASCII letters upper-cased, everything else as it is."""
    return text.translate(_ASCII_UPPER)


def base_subject(subject: str) -> tuple[str, bool]:
    """
    RFC 5256 2.1: the base subject of a (decoded) subject, and whether
    something marking a reply or forward (``Re:``, ``Fwd:``, ``(fwd)``,
    ``[fwd: ...]``) was removed.  Every loop removes text, so each is
    bounded by the subject's length.
    """
    text = _WSP_RUN.sub(" ", subject)
    reply = False
    while True:
        # (2) trailers
        while True:
            match = _TRAILER.search(text)
            if match is None or not text:
                break
            if match.group(0) != " " and match.group(0) != "\t":
                reply = True
            text = text[:match.start()]
        # (3)-(5) leaders and blobs
        while True:
            before = text
            while True:
                match = _LEADER_REFWD.match(text)
                if match is not None:
                    reply = True
                else:
                    match = _LEADER_WSP.match(text)
                if match is None or not match.end():
                    break
                text = text[match.end():]
            match = _LEADING_BLOB.match(text)
            if match is not None and text[match.end():]:
                text = text[match.end():]
            if text == before:
                break
        # (6) [fwd: ...]
        if text[:len(_FWD_HEADER)].lower() == _FWD_HEADER and text.endswith("]"):
            text = text[len(_FWD_HEADER):-1]
            reply = True
            continue
        return text, reply


def message_ids(value: str | None) -> list[str]:
    """The ``<id>``s of a Message-ID, In-Reply-To or References field, in order."""
    return _MSGID.findall(value or "")


def sort_fields(
    header: Callable[[str], bytes | None],
    decode: Callable[[bytes], str],
    first_mailbox: Callable[[bytes], str],
) -> dict[str, Any]:
    """
    What SORT and THREAD use, from a message's header: sent date (UTC
    seconds or None), base subject (case-folded) and whether it is a reply,
    the first From/To/Cc mailbox (local part), Message-ID and references
    (References, else the first ID of In-Reply-To).
    """
    raw_subject = header("subject")
    base, reply = base_subject(decode(raw_subject)) if raw_subject is not None else ("", False)
    date_value = header("date")
    sent = None
    if date_value is not None:
        parsed = email.utils.parsedate_tz(date_value.decode("latin-1"))
        if parsed is not None:
            try:
                sent = float(email.utils.mktime_tz(parsed))
            except (ValueError, OverflowError):
                sent = None
    ids = message_ids((header("message-id") or b"").decode("latin-1"))
    refs = message_ids((header("references") or b"").decode("latin-1"))
    if not refs:
        refs = message_ids((header("in-reply-to") or b"").decode("latin-1"))[:1]
    fields: dict[str, Any] = {
        "date": sent,
        "subject": ascii_upper(base),
        "reply": reply,
        "id": ids[0] if ids else None,
        "refs": refs,
    }
    for name in ("from", "to", "cc"):
        value = header(name)
        fields[name] = ascii_upper(first_mailbox(value)) if value is not None else ""
    return fields


@dataclass(frozen=True)
class Criterion:
    key: str
    reverse: bool = False


def parse_criteria(words: Sequence[str]) -> list[Criterion]:
    """``REVERSE DATE SUBJECT`` -> criteria; ValueError on an unknown key or a dangling REVERSE."""
    out = []
    reverse = False
    for word in words:
        word = word.upper()
        if word == "REVERSE" and not reverse:
            reverse = True
            continue
        if word not in CRITERIA:
            raise ValueError(f"unknown sort criterion {word}")
        out.append(Criterion(word, reverse))
        reverse = False
    if reverse or not out:
        raise ValueError("incomplete sort criteria")
    return out


class Message(Protocol):
    """What SORT and THREAD read of a message (C{search.Facts} has it, and L{Sortable})."""

    seq: int
    uid: int
    internal: float  # INTERNALDATE: arrival
    size: int
    summary: dict[str, Any]  # its "sort" entry comes from L{sort_fields}


@dataclass(frozen=True)
class Sortable:
    """A L{Message} made from parts (tests, and callers without search facts)."""

    seq: int
    uid: int
    internal: float
    size: int
    summary: dict[str, Any]


def fields_of(message: Message) -> dict[str, Any]:
    return message.summary.get("sort") or {}


def sent_of(message: Message) -> float:
    """The sent date, or the internal date when the Date: field is missing or broken."""
    value = fields_of(message).get("date")
    return message.internal if value is None else value


def _key(criterion: str) -> Callable[[Message], Any]:
    if criterion == "ARRIVAL":
        return lambda m: m.internal
    if criterion == "DATE":
        return sent_of
    if criterion == "SIZE":
        return lambda m: m.size
    name = criterion.lower()
    return lambda m: fields_of(m).get(name) or ""


def sort(messages: Sequence[Message], criteria: Sequence[Criterion]) -> list[Message]:
    """Messages in the order C{criteria} give; ties in sequence order."""
    ordered = sorted(messages, key=lambda m: m.seq)
    for criterion in reversed(criteria):
        ordered.sort(key=_key(criterion.key), reverse=criterion.reverse)
    return ordered
