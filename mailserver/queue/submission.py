"""
Pure: what sendmail does to a message before it enters the maildrop.

Read lines until end of input (or a lone C{.} unless C{-i}), LF line ends,
drop a leading mbox C{From } line; for C{-t}, take recipients from
C{To:}/C{Cc:}/C{Bcc:} (the C{Resent-} ones if present) and remove
C{Bcc:}; add C{From:}, C{Date:} and C{Message-ID:} when missing; qualify
bare local names with C{myorigin}.
"""

from __future__ import annotations

import email.utils
import re
from typing import Iterable

from mailserver.header_block import header_end


class MessageTooLarge(ValueError):
    """The message exceeds C{message_size_limit}."""


def collect_message(lines: Iterable[bytes], ignore_dots: bool, max_size: int = 0) -> bytes:
    """
    The message from C{lines} (as read from stdin), LF line ends.

    Without C{ignore_dots}, a line holding only C{.} ends the input, as
    sendmail does without C{-i}/C{-oi}.  C{max_size} 0 means no limit.

    @raise MessageTooLarge: past C{max_size} bytes.
    """
    out: list[bytes] = []
    size = 0
    first = True
    for line in lines:
        if line.endswith(b"\r\n"):
            line = line[:-2] + b"\n"
        elif not line.endswith(b"\n"):
            line += b"\n"
        if not ignore_dots and line == b".\n":
            break
        if first:
            first = False
            if line.startswith(b"From "):
                continue  # an mbox separator is not part of the message
        size += len(line)
        if max_size and size > max_size:
            raise MessageTooLarge(f"message larger than {max_size} bytes")
        out.append(line)
    return b"".join(out)


def _fields(message: bytes) -> list[tuple[str, str, int, int]]:
    """The header fields: (lower-case name, unfolded value, start, end offsets)."""
    end = header_end(message)
    fields: list[tuple[str, str, int, int]] = []
    offset = 0
    while offset < end:
        stop = offset
        while True:
            nl = message.find(b"\n", stop, end)
            stop = end if nl < 0 else nl + 1
            if stop >= end or message[stop : stop + 1] not in (b" ", b"\t"):
                break
        raw = message[offset:stop].decode("utf-8", "replace")
        name, _, value = raw.partition(":")
        fields.append((name.strip().lower(), " ".join(value.split()), offset, stop))
        offset = stop
    return fields


def has_header(message: bytes, name: str) -> bool:
    name = name.lower()
    return any(field == name for field, _, _, _ in _fields(message))


def extract_recipients(message: bytes) -> list[str]:
    """
    The addresses in C{To:}, C{Cc:} and C{Bcc:}, or in the C{Resent-}
    versions when the message has any (a resent message), in order, without
    duplicates.
    """
    fields = _fields(message)
    names = {"to", "cc", "bcc"}
    if any(name.startswith("resent-") for name, _, _, _ in fields):
        names = {"resent-to", "resent-cc", "resent-bcc"}
    values = [value for name, value, _, _ in fields if name in names]
    addresses = [address for _, address in email.utils.getaddresses(values) if address]
    return list(dict.fromkeys(addresses))


def remove_headers(message: bytes, names: Iterable[str]) -> bytes:
    """C{message} without the named header fields (continuation lines included)."""
    drop = {n.lower() for n in names}
    fields = _fields(message)
    if not any(name in drop for name, _, _, _ in fields):
        return message
    kept = [message[start:stop] for name, _, start, stop in fields if name not in drop]
    return b"".join(kept) + message[header_end(message) :]


def add_missing_headers(message: bytes, headers: list[tuple[str, str]]) -> bytes:
    """Append each C{(name, value)} whose name the header lacks, at the end of the header."""
    end = header_end(message)
    present = {name for name, _, _, _ in _fields(message)}
    extra = b"".join(
        f"{name}: {value}\n".encode("utf-8") for name, value in headers if name.lower() not in present
    )
    if not extra:
        return message
    if end == 0:
        # No header at all: the input is all body.
        return extra + b"\n" + message
    head = message[:end]
    if not head.endswith(b"\n"):
        head += b"\n"
    return head + extra + message[end:]


#: Header fields whose bare local names are qualified, as Postfix's cleanup does.
ADDRESS_FIELDS = frozenset(
    {"from", "to", "cc", "reply-to", "sender", "resent-from", "resent-to", "resent-cc", "resent-sender"}
)
_BARE_LIST = re.compile(r"\s*[A-Za-z0-9._+-]+(?:\s*,\s*[A-Za-z0-9._+-]+)*\s*\Z")


def qualify_header_addresses(message: bytes, myorigin: str) -> bytes:
    """
    C{To: root, alice} becomes C{To: root@myorigin, alice@myorigin}.

    Only fields made of nothing but bare local names are touched: anything
    with a domain, a display name, a comment or a quote is left as written.
    """
    fields = _fields(message)
    changed = False
    out: list[bytes] = []
    for name, value, start, stop in fields:
        if name in ADDRESS_FIELDS and _BARE_LIST.match(value):
            label = message[start:stop].split(b":", 1)[0]
            names = [part.strip() for part in value.split(",")]
            out.append(label + b": " + ", ".join(f"{n}@{myorigin}" for n in names).encode("ascii") + b"\n")
            changed = True
        else:
            out.append(message[start:stop])
    if not changed:
        return message
    return b"".join(out) + message[header_end(message) :]


def qualify(address: str, myorigin: str) -> str:
    """C{root} becomes C{root@myorigin}; anything with a domain is left alone."""
    if address == "" or "@" in address:
        return address
    return f"{address}@{myorigin}"


def split_addresses(arguments: Iterable[str]) -> list[str]:
    """Command-line recipients: each argument may hold a comma-separated list."""
    found: list[str] = []
    for argument in arguments:
        parsed = [address for _, address in email.utils.getaddresses([argument]) if address]
        found.extend(parsed or ([argument.strip()] if argument.strip() else []))
    return found
