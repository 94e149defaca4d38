"""
Pure TLS-RPT (RFC 8460 section 3): the C{_smtp._tls} TXT record, whose
C{rua} names where senders report TLS failures (C{mailto:} or C{https:}).
"""

from __future__ import annotations


class TLSRPTRecordError(ValueError):
    """The record cannot be used: senders send no reports."""


def select_records(texts: list[str]) -> list[str]:
    """The C{v=TLSRPTv1} records among TXT strings (exactly one is usable)."""
    return [text for text in texts if text.strip().startswith("v=TLSRPTv1")]


def parse_record(text: str) -> tuple[str, ...]:
    """The C{rua} URIs of one record: C{v=TLSRPTv1} first, C{rua} required, mailto: or https: each."""
    fields: dict[str, str] = {}
    for index, part in enumerate(text.split(";")):
        name, sep, value = part.strip().partition("=")
        if not part.strip():
            continue
        if not sep:
            raise TLSRPTRecordError(f"bad field {part.strip()!r}")
        if index == 0 and (name.strip() != "v" or value.strip() != "TLSRPTv1"):
            raise TLSRPTRecordError("record does not start with v=TLSRPTv1")
        fields.setdefault(name.strip(), value.strip())
    uris = tuple(uri.strip() for uri in fields.get("rua", "").split(",") if uri.strip())
    if not uris:
        raise TLSRPTRecordError("no rua= (where to send reports)")
    for uri in uris:
        scheme, colon, rest = uri.partition(":")
        if not colon or scheme.lower() not in ("mailto", "https") or not rest:
            raise TLSRPTRecordError(f"rua {uri!r} is neither mailto: nor https:")
    return uris
