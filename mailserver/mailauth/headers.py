"""
Pure: the header block of a message as (name, raw field) pairs, and the
RFC 5322 From domain that DMARC and signing look at.
"""

from __future__ import annotations

import email.utils
import re

from mailserver.mailauth import memo

#: A header block bigger than this is not parsed further (bounded work on hostile input).
MAX_HEADER_BYTES = 1 << 20

#: Header fields as L{split_headers} gives them: (name as written, whole raw field).
Fields = list[tuple[str, bytes]]

#: One field: its name, its first line and its continuation lines (those starting with WSP), each up to LF.
_FIELD = re.compile(rb"([\x21-\x39\x3b-\x7e]+)[ \t]*:[^\n]*\n?(?:[ \t][^\n]*\n?)*")


def split_headers(message: bytes) -> tuple[Fields, int]:
    """
    The header fields (name as written, whole raw field including the
    name and the line end) and the offset where the body starts.  Lines
    that are neither a field nor a continuation end the header block, and
    so does a line starting past L{MAX_HEADER_BYTES}.
    """
    fields: list[tuple[str, bytes]] = []
    end = len(message)
    if end > MAX_HEADER_BYTES:  # lines starting past the limit are not looked at
        cut = message.find(b"\n", MAX_HEADER_BYTES - 1)
        end = end if cut < 0 else cut + 1
    position = 0
    match = _FIELD.match
    while position < end:
        found = match(message, position, end)
        if found is None:
            if message.startswith(b"\n", position):
                return fields, position + 1
            if message.startswith(b"\r\n", position):
                return fields, position + 2
            return fields, position
        fields.append((found.group(1).decode("ascii"), found.group()))
        position = found.end()
    return fields, position


def field_value(raw: bytes) -> str:
    """The unfolded value of a raw field, decoded leniently."""
    value = raw.split(b":", 1)[1] if b":" in raw else raw
    return re.sub(r"\r?\n(?=[ \t])", "", value.decode("utf-8", "replace")).strip()


def values(fields: list[tuple[str, bytes]], name: str) -> list[str]:
    lowered = name.lower()
    return [field_value(raw) for field, raw in fields if field.lower() == lowered]


def from_domains(fields: list[tuple[str, bytes]]) -> list[str]:
    """
    The domains of every address in every From field (lower-cased, in
    order).  DMARC wants exactly one; signing takes the first.
    """
    domains: list[str] = []
    for name, raw in fields:
        if name.lower() == "from":
            domains.extend(_field_domains(raw))
    return domains


def _domains_of(value: str) -> tuple[str, ...]:
    """The domains of the addresses of one From value ("" for an address without one)."""
    domains: list[str] = []
    for _name, address in email.utils.getaddresses([value]):
        if "@" in address:
            domain = address.rsplit("@", 1)[1].strip().strip(">").rstrip(".").lower()
            if domain:
                domains.append(domain)
        else:
            domains.append("")
    return tuple(domains)


def _raw_domains(raw: bytes) -> tuple[str, ...]:
    """The domains of the addresses of one raw From field."""
    return _domains_of(field_value(raw))


#: A sender's From field comes with each of its messages: parsed once.
_field_domains = memo.by_text(_raw_domains, longest=512)
