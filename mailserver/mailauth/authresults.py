"""
Pure: the Authentication-Results header (RFC 8601) and the removal of
forged ones carrying our authserv-id (RFC 8601 5).
"""

from __future__ import annotations

import re
from typing import Iterable

from mailserver.mailauth.headers import Fields, field_value, split_headers

#: Characters a property value may hold unquoted (RFC 2045 token, plus @ and . for addresses).
_TOKEN = re.compile(r"^[A-Za-z0-9!#$%&'*+\-.^_`{|}~@/=]+$")


def _value(text: str) -> str:
    """A property value: as is when it is a safe token, else a quoted-string."""
    if text and _TOKEN.match(text):
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + "".join(c for c in escaped if c >= " " and c != "\x7f") + '"'


def _comment(text: str) -> str:
    cleaned = "".join(c for c in text if c >= " " and c not in "()\\\x7f")[:120]
    return f" ({cleaned})" if cleaned else ""


def properties(**values: str) -> str:
    """C{ ptype.property=value ...} for the non-empty C{values} (C{header_b} is C{header.b})."""
    return "".join(f" {name.replace('_', '.', 1)}={_value(value)}" for name, value in values.items() if value)


def method_result(method: str, result: str, comment: str = "", **values: str) -> str:
    """One C{method=result (comment) ptype.property=value ...} clause."""
    return f"{method}={result}{_comment(comment)}{properties(**values)}"


def header(authserv_id: str, clauses: Iterable[str]) -> bytes:
    """The whole field, folded one clause a line, LF line ends; C{none} when there is nothing."""
    clauses = list(clauses)
    body = ";\n\t".join([authserv_id] + clauses) if clauses else f"{authserv_id}; none"
    return f"Authentication-Results: {body}\n".encode("utf-8")


def _strip_comments(text: str) -> str:
    """Drop RFC 5322 comments (nested, bounded by the text's length)."""
    out, depth, escaped = [], 0, False
    for char in text:
        if escaped:
            escaped = False
            if depth == 0:
                out.append(char)
            continue
        if char == "\\":
            escaped = True
            if depth == 0:
                out.append(char)
        elif char == "(":
            depth += 1
        elif char == ")" and depth:
            depth -= 1
        elif depth == 0:
            out.append(char)
    return "".join(out)


def authserv_id_of(raw: bytes) -> str:
    """The authserv-id of an Authentication-Results field (lower-cased), comments removed."""
    value = _strip_comments(field_value(raw)).split(";", 1)[0].strip()
    first = value.split(None, 1)[0] if value else ""
    return first.strip('"').lower()


def remove_forged(message: bytes, authserv_id: str, fields: Fields | None = None) -> tuple[bytes, int]:
    """
    C{message} without Authentication-Results fields claiming C{authserv_id}
    (ours), and how many were removed.  Other headers and the body are kept
    byte for byte.  C{fields}: the header fields of C{message}, already split.
    """
    if fields is None:
        fields, _ = split_headers(message)
    ours = authserv_id.lower()
    kept: list[bytes] = []
    removed = 0
    for name, raw in fields:
        if name.lower() == "authentication-results" and authserv_id_of(raw) == ours:
            removed += 1
            continue
        kept.append(raw)
    if not removed:
        return message, 0
    return b"".join(kept) + message[sum(len(raw) for _, raw in fields):], removed
