"""
Pure: the message and envelope a Sieve script looks at.

Headers are parsed with the stdlib C{email} package in compat32 mode from
bytes; header values are unfolded and RFC 2047-decoded (RFC 5228 2.7.2).
The body is what the caller read, bounded (L{MAX_BODY}).
"""

from __future__ import annotations

import email.errors
import email.header
import email.utils
from dataclasses import dataclass
from email import message_from_bytes
from email.message import Message
from email.policy import compat32

#: Most bytes of a message a script sees (headers and body); the rest is not tested.
MAX_BODY = 1 << 20


@dataclass(frozen=True)
class SieveEnvelope:
    """RFC 5228 envelope parts: C{from} ("" for <>), C{to} (this recipient), auth user."""

    sender: str
    recipient: str
    auth: str = ""


class SieveMessage:
    """A message as tests see it: C{size} is the whole size, C{raw} at most L{MAX_BODY} bytes of it."""

    def __init__(self, raw: bytes, size: int | None = None) -> None:
        self.raw = raw[:MAX_BODY]
        self.size = len(raw) if size is None else size
        self.parsed: Message = message_from_bytes(self.raw, policy=compat32)

    def header_values(self, name: str) -> list[str]:
        """Every value of header C{name}, unfolded and decoded, in order."""
        return [decode_header(value) for value in self.parsed.get_all(name, []) or []]

    def raw_header_values(self, name: str) -> list[str]:
        return [unfold(str(value)) for value in self.parsed.get_all(name, []) or []]

    def has_header(self, name: str) -> bool:
        return name in self.parsed

    def body_raw(self) -> str:
        """The body undecoded (``body :raw``)."""
        head_end = self.raw.find(b"\n\n")
        crlf_end = self.raw.find(b"\r\n\r\n")
        if crlf_end >= 0 and (head_end < 0 or crlf_end < head_end):
            body = self.raw[crlf_end + 4:]
        elif head_end >= 0:
            body = self.raw[head_end + 2:]
        else:
            body = b""
        return body.decode("utf-8", "replace")

    def body_parts(self, types: tuple[str, ...] | None) -> list[str]:
        """
        The decoded bodies of the parts whose content type matches C{types}
        (RFC 5173 ``:content``: ``""`` matches all, ``text`` a type,
        ``text/html`` a type/subtype); None is ``:text`` (``text/*`` parts).
        """
        wanted = ("text",) if types is None else types
        out = []
        for part in self.parsed.walk():
            if part.is_multipart() and types is None:
                continue
            content_type = part.get_content_type().lower()
            main = content_type.split("/")[0]
            if not any(key == "" or key.lower() in (content_type, main) for key in wanted):
                continue
            if part.is_multipart():
                continue  # a multipart's own text is only its preamble/epilogue
            payload = part.get_payload(decode=True) or b""
            charset = part.get_content_charset() or "us-ascii"
            try:
                out.append(payload.decode(charset, "replace"))
            except LookupError:
                out.append(payload.decode("utf-8", "replace"))
        return out


def unfold(value: str) -> str:
    return value.replace("\r\n", "\n").replace("\n\t", " ").replace("\n ", " ").replace("\n", "").strip()


def decode_header(value: object) -> str:
    """Unfold and decode RFC 2047 words; undecodable bytes become U+FFFD."""
    text = unfold(str(value))
    if "=?" not in text:
        return text
    try:
        return str(email.header.make_header(email.header.decode_header(text)))
    except (ValueError, LookupError, email.errors.HeaderParseError):
        return text


def addresses(values: list[str]) -> list[str]:
    """The addresses (``local@domain``) in address header values; group names are skipped."""
    found = []
    for _, address in email.utils.getaddresses(values):
        if address:
            found.append(address)
    return found


def address_part(address: str, part: str, delimiter: str) -> str | None:
    """RFC 5228 2.7.4 / RFC 5233: a part of C{address}; None when it has no such part (:detail)."""
    local, at, domain = address.rpartition("@")
    if not at:
        local, domain = address, ""
    if part == "all":
        return address
    if part == "localpart":
        return local
    if part == "domain":
        return domain
    positions = [local.find(d) for d in delimiter if d and d in local] if delimiter else []
    cut = min(positions) if positions else -1
    if part == "user":
        return local if cut < 0 else local[:cut]
    if part == "detail":
        return None if cut < 0 else local[cut + 1:]
    raise ValueError(part)
