"""
Pure: apply a milter's end-of-message modifications to a message and its
envelope, and cut a message into what the milter is sent.

Header indexes follow sendmail and Postfix: SMFIR_CHGHEADER's index counts
the headers of that name from 1 (an empty value deletes it; a missing one
is added at the end); SMFIR_INSHEADER's index is a position among all
headers from 0 (0 = first; past the end = appended); SMFIR_ADDHEADER
appends.  Indexes count the headers the milter was sent.  Header values
carry their leading space (the client adds it); folded lines get a tab
when the milter forgot one, and empty lines are dropped, so a milter cannot
end the header section early.  The message keeps its line ending (LF or
CRLF); the body the milter sees, and SMFIR_REPLBODY, use CRLF.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from mailserver.milter import codec

_HEADER_NAME = re.compile(rb"([!-9;-~]+)[ \t]*:")
_FIELD_NAME = re.compile(r"[!-9;-~]{1,997}\Z")


def valid_header_name(name: str) -> bool:
    """RFC 5322 field name: printable US-ASCII but the colon, no space (and bounded)."""
    return bool(_FIELD_NAME.match(name))


@dataclass
class _Field:
    name: str
    raw: bytes  # the whole field, continuation lines and line ends included


@dataclass(frozen=True)
class Applied:
    """The message and envelope after the modifications."""

    message: bytes
    sender: str
    sender_args: str
    recipients: tuple[str, ...]
    added: tuple[tuple[str, str], ...]  # (recipient, ESMTP arguments)
    deleted: tuple[str, ...]
    body_replaced: bool
    quarantine: str | None


def _eol(message: bytes) -> bytes:
    first = message.find(b"\n")
    return b"\r\n" if first > 0 and message[first - 1 : first] == b"\r" else b"\n"


def _split(message: bytes) -> tuple[list[_Field], bytes, bytes]:
    """(header fields, body, line ending).  The blank separator line belongs to neither."""
    eol = _eol(message)
    fields: list[_Field] = []
    position = 0
    length = len(message)
    while position < length:  # bounded: each turn consumes a line
        end = message.find(b"\n", position)
        end = length if end < 0 else end + 1
        line = message[position:end]
        if line.rstrip(b"\r\n") == b"":
            return fields, message[end:], eol
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1].raw += line
        else:
            match = _HEADER_NAME.match(line)
            if match is None:  # not a header: the body starts here, without a separator
                return fields, message[position:], eol
            fields.append(_Field(match.group(1).decode("ascii"), line))
        position = end
    return fields, b"", eol


def _value(raw: bytes) -> str:
    """A field's text after the colon, folded lines joined by LF, without the final line end."""
    text = raw.split(b":", 1)[1].replace(b"\r\n", b"\n").rstrip(b"\n")
    return text.decode("utf-8", "surrogateescape")


def milter_headers(message: bytes) -> list[tuple[str, str]]:
    """The (name, value) pairs sent with SMFIC_HEADER; values keep their leading space."""
    fields, _, _ = _split(message)
    return [(f.name, _value(f.raw)) for f in fields]


def milter_body(message: bytes) -> bytes:
    """The body as sent with SMFIC_BODY: CRLF line ends."""
    _, body, eol = _split(message)
    return body if eol == b"\r\n" else body.replace(b"\n", b"\r\n")


def _field(name: str, value: str, eol: bytes) -> bytes:
    lines = value.replace("\r\n", "\n").split("\n")
    kept = [lines[0]] + [
        line if line[:1] in (" ", "\t") else "\t" + line for line in lines[1:] if line.strip()
    ]
    text = f"{name}:" + "\n".join(kept)
    return text.encode("utf-8", "surrogateescape").replace(b"\n", eol) + eol


def _same(a: str, b: str) -> bool:
    return a.strip("<>").casefold() == b.strip("<>").casefold()


def apply(
    message: bytes,
    sender: str,
    recipients: Sequence[str],
    modifications: Iterable[Any],
    quarantine: str | None = None,
) -> Applied:
    """Apply SMFIR_* modifications (codec types) in the order the milter sent them."""
    fields, body, eol = _split(message)
    new_body: list[bytes] | None = None
    sender_args = ""
    current = list(recipients)
    added: list[tuple[str, str]] = []
    deleted: list[str] = []
    for change in modifications:
        if isinstance(change, codec.AddHeader):
            fields.append(_Field(change.name, _field(change.name, change.value, eol)))
        elif isinstance(change, codec.InsertHeader):
            index = min(change.index, len(fields))
            fields.insert(index, _Field(change.name, _field(change.name, change.value, eol)))
        elif isinstance(change, codec.ChangeHeader):
            _change_header(fields, change, eol)
        elif isinstance(change, codec.ReplaceBody):
            new_body = (new_body or []) + [change.chunk]
        elif isinstance(change, (codec.AddRecipient, codec.AddRecipientPar)):
            args = getattr(change, "args", "")
            address = change.recipient.strip("<>")
            if not any(_same(address, r) for r in current):
                current.append(address)
                added.append((address, args))
        elif isinstance(change, codec.DeleteRecipient):
            gone = [r for r in current if _same(change.recipient, r)]
            current = [r for r in current if not _same(change.recipient, r)]
            deleted.extend(gone)
        elif isinstance(change, codec.ChangeFrom):
            sender, sender_args = change.sender.strip("<>"), change.args
        elif isinstance(change, codec.Quarantine):
            quarantine = change.reason
        else:
            raise TypeError(f"not a milter modification: {change!r}")
    if new_body is not None:
        body = b"".join(new_body)
        if eol == b"\n":
            body = body.replace(b"\r\n", b"\n")
    head = b"".join(f.raw for f in fields)
    return Applied(
        head + eol + body, sender, sender_args, tuple(current), tuple(added), tuple(deleted),
        new_body is not None, quarantine,
    )  # fmt: skip


def _change_header(fields: list[_Field], change: codec.ChangeHeader, eol: bytes) -> None:
    wanted = change.name.casefold()
    seen = 0
    for position, f in enumerate(fields):
        if f.name.casefold() == wanted:
            seen += 1
            if seen == max(change.index, 1):
                if change.value.strip():
                    fields[position] = _Field(f.name, _field(f.name, change.value, eol))
                else:
                    del fields[position]
                return
    if change.value.strip():
        fields.append(_Field(change.name, _field(change.name, change.value, eol)))


#: Headers a milter sets to say "spam" (rspamd's milter: X-Spam: Yes on "add header").
SPAM_HEADERS = ("X-Spam", "X-Spam-Flag")


def spam_folder(
    modifications: Iterable[Any], folder: str, spam_headers: Sequence[str] = SPAM_HEADERS
) -> str | None:
    """
    C{folder} (C{junk_folder}) if a milter marked the message as spam
    by adding or changing one of C{spam_headers} to yes/true, else None (INBOX).
    """
    wanted = {name.casefold() for name in spam_headers}
    for change in modifications:
        if isinstance(change, (codec.AddHeader, codec.InsertHeader, codec.ChangeHeader)):
            if change.name.casefold() in wanted and change.value.strip().lower() in ("yes", "true"):
                return folder or None
    return None


@dataclass(frozen=True)
class Outcome:
    """
    What the end-of-message verdict means for the transaction: refuse with
    C{error}, drop (C{discard}), or deliver C{applied} -- into the hold area
    if C{hold} is a reason, local copies into C{folder} if it is set.
    """

    error: Any = None  # MailError
    discard: bool = False
    applied: Applied | None = None
    hold: str | None = None
    folder: str | None = None


def outcome(verdict: Any, message: bytes, sender: str, recipients: Sequence[str], folder: str) -> Outcome:
    """Turn a L{mailserver.milter.client.Verdict} at end of message into an L{Outcome}."""
    if verdict.error is not None:
        return Outcome(error=verdict.error)
    if verdict.action == "discard":
        return Outcome(discard=True)
    applied = apply(message, sender, recipients, verdict.modifications, verdict.quarantine)
    return Outcome(
        applied=applied, hold=applied.quarantine, folder=spam_folder(verdict.modifications, folder)
    )
