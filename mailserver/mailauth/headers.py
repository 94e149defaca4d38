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

_FIELD_NAME = re.compile(rb"^([\x21-\x39\x3b-\x7e]+)[ \t]*:")


def split_headers(message: bytes) -> tuple[Fields, int]:
    """
    The header fields (name as written, whole raw field including the
    name and the line end) and the offset where the body starts.  Lines
    that are neither a field nor a continuation end the header block.
    """
    fields: list[tuple[str, bytes]] = []
    position = 0
    limit = min(len(message), MAX_HEADER_BYTES)
    while position < limit:
        end = message.find(b"\n", position)
        end = len(message) if end < 0 else end + 1
        line = message[position:end]
        if line in (b"\n", b"\r\n"):
            return fields, end
        if line[:1] in (b" ", b"\t") and fields:
            name, raw = fields[-1]
            fields[-1] = (name, raw + line)
        else:
            match = _FIELD_NAME.match(line)
            if match is None:
                return fields, position
            fields.append((match.group(1).decode("ascii"), line))
        position = end
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
    for value in values(fields, "From"):
        domains.extend(_value_domains(value))
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


#: A sender's From value comes with each of its messages: parsed once.
_value_domains = memo.by_text(_domains_of, longest=512)
