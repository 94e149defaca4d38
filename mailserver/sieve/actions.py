"""Pure: what a Sieve run decided for one recipient (RFC 5228 section 4 and extensions)."""

from __future__ import annotations

from dataclasses import dataclass

INBOX = "INBOX"


@dataclass(frozen=True)
class FileInto:
    """Store a copy in C{folder} (INBOX for keep and the implicit keep) with IMAP C{flags}."""

    folder: str = INBOX
    flags: tuple[str, ...] = ()
    create: bool = False


@dataclass(frozen=True)
class Redirect:
    address: str


@dataclass(frozen=True)
class Reject:
    """Refuse the message with C{reason} (C{extended}: ereject)."""

    reason: str
    extended: bool = False


@dataclass(frozen=True)
class Discard:
    pass


@dataclass(frozen=True)
class Vacation:
    """An auto-reply (RFC 5230/6131); C{period} in seconds, C{handle} keys the once-per-period memory."""

    reason: str
    period: int
    handle: str
    subject: str | None = None
    sender: str | None = None
    addresses: tuple[str, ...] = ()
    mime: bool = False


Action = FileInto | Redirect | Reject | Discard | Vacation
