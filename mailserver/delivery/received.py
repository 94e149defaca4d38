"""Pure: the trace and delivery headers Postfix writes (Received, Return-Path, Delivered-To)."""

from __future__ import annotations

import email.utils
import functools
import re
import time

from mailserver.header_block import header_end

_HEADER_NAME = re.compile(rb"(?m)^([!-9;-~]+):")
_NOT_PRINTABLE = re.compile(r"[^\x21-\x7e]")

def header_date(now: float) -> str:
    """C{now} as an RFC 5322 date in local time (C{formatdate(now, localtime=True)})."""
    return _date_of_second(int(now))


@functools.lru_cache(maxsize=4)
def _date_of_second(second: int) -> str:
    # Every message of a busy second carries the same stamp; formatdate() is slow.
    return email.utils.formatdate(second, localtime=True)


@functools.lru_cache(maxsize=4)
def _stamp_of_second(second: int) -> str:
    """The UTC time stamp of a made-up Message-ID, once per second."""
    return time.strftime("%Y%m%d%H%M%S", time.gmtime(second))


def received_header(
    helo: str, ip: str, hostname: str, protocol: str, queue_id: str, recipient: str | None, now: float
) -> bytes:
    """C{Received:} as Postfix's smtpd writes it (no reverse DNS: C{unknown})."""
    for_clause = f"\n\tfor <{recipient}>" if recipient else ""
    date = header_date(now)
    if protocol == "local":  # picked up from the maildrop (sendmail), or made here (bounces)
        return f"Received: by {hostname} (mailserver) id {queue_id}{for_clause};\n\t{date}\n".encode("ascii", "replace")
    helo = _printable_helo(helo)
    return (
        f"Received: from {helo} (unknown [{ip}])\n"
        f"\tby {hostname} (mailserver) with {protocol} id {queue_id}{for_clause};\n"
        f"\t{date}\n"
    ).encode("ascii", "replace")


@functools.lru_cache(maxsize=256)  # a session's HELO name, for each of its messages
def _printable_helo(helo: str) -> str:
    return _NOT_PRINTABLE.sub("?", helo) or "unknown"


def delivery_prefix(sender: str, original: str | None, delivered_to: str) -> bytes:
    """C{Return-Path}, C{X-Original-To} and C{Delivered-To}, as Postfix local(8) prepends them."""
    lines = [f"Return-Path: <{sender}>\n"]
    if original is not None:
        lines.append(f"X-Original-To: {original}\n")
    lines.append(f"Delivered-To: {delivered_to}\n")
    return "".join(lines).encode("utf-8", "replace")


def has_header(message: bytes, end: int, name: bytes) -> bool:
    """True if a header called C{name} is among the first C{end} bytes."""
    return _header_pattern(name).search(message, 0, end) is not None


def header_names(message: bytes, end: int) -> set[bytes]:
    """The lower-cased names of the headers in C{message[:end]} (a block found by L{header_end})."""
    return {name.lower() for name in _HEADER_NAME.findall(message, 0, end)}


@functools.lru_cache(maxsize=64)
def _header_pattern(name: bytes) -> re.Pattern[bytes]:
    return re.compile(rb"(?im)^" + re.escape(name) + rb"[ \t]*:")


def add_missing_headers(
    message: bytes, hostname: str, queue_id: str, now: float, sender: str | None = None
) -> bytes:
    """
    Append C{Message-ID} and C{Date} to the header when missing (Postfix
    cleanup), and C{From} when C{sender} is given (submitted mail).  A message that does not start with a header (an mbox
    C{From } line, garbage) is left byte-for-byte alone.
    """
    end = header_end(message)
    if end == 0:
        return message
    extra = b""
    names = header_names(message, end)  # inside the block every line is "name:" or a continuation
    if b"message-id" not in names:
        stamp = _stamp_of_second(int(now))
        extra += f"Message-ID: <{stamp}.{queue_id}@{hostname}>\n".encode()
    if b"date" not in names:
        extra += f"Date: {header_date(now)}\n".encode()
    if sender is not None and b"from" not in names:
        extra += f"From: {sender}\n".encode("utf-8", "replace")
    if not extra:
        return message
    if not message[:end].endswith(b"\n"):
        extra = b"\n" + extra
    return message[:end] + extra + message[end:]
