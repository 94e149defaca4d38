"""
POP3 message transfer encoding (pure): stored bytes -> what goes on the wire.

Maildir files hold lines ending in LF.  POP3 sends lines ending in CRLF,
doubles a leading ``.`` (dot-stuffing, RFC 1939 section 3) and ends a
multi-line response with ``.`` on a line of its own.  Messages are streamed
in chunks, so every class here keeps the little state that lets a line end
or a leading dot fall across a chunk boundary.
"""

from __future__ import annotations

import hashlib
import re

_BARE_LF = re.compile(rb"(?<!\r)\n")
_LINE_START_DOT = re.compile(rb"\n\.")
_HEADER_END = re.compile(rb"\n\r?\n")

#: RFC 1939 section 7: a unique-id is 1 to 70 characters in 0x21..0x7E.
_UIDL_OK = re.compile(r"[\x21-\x7e]{1,70}")


class BodyEncoder:
    """
    Turn stored message bytes into POP3 multi-line response bytes.

    Bare LF becomes CRLF (an existing CRLF is kept as it is), a line that
    starts with ``.`` gets another ``.`` in front; every other byte passes
    unchanged.  Feed chunks to L{encode}, then send L{finish}.
    """

    def __init__(self) -> None:
        self._at_line_start = True
        self._after_cr = False

    def encode(self, chunk: bytes) -> bytes:
        """The wire bytes for the next C{chunk} of the stored message."""
        if not chunk:
            return b""
        if self._after_cr and chunk[:1] == b"\n":
            # The CR of a CRLF ended the previous chunk: this LF is not bare.
            head, chunk = b"\n", chunk[1:]
        else:
            head = b""
        body = head + _BARE_LF.sub(b"\r\n", chunk)
        if self._at_line_start and body[:1] == b".":
            body = b"." + body
        body = _LINE_START_DOT.sub(b"\n..", body)
        self._at_line_start = body.endswith(b"\n")
        self._after_cr = body.endswith(b"\r")
        return body

    def finish(self) -> bytes:
        """The end of the response: a line break if the message lacked one, then ``.``."""
        return (b"" if self._at_line_start else b"\r\n") + b".\r\n"


class TopFilter:
    """
    Keep the header and the first C{lines} body lines of a stored message
    (the POP3 C{TOP} command).

    Works on the stored bytes, before L{BodyEncoder}: L{feed} returns the
    part of each chunk to send; L{done} says when the rest can be skipped.
    A message without an empty line is all header and is kept whole.
    """

    def __init__(self, lines: int) -> None:
        if lines < 0:
            raise ValueError("line count must not be negative")
        self._lines_left = lines
        self._in_header = True
        # The last bytes seen; a message starts at the beginning of a line.
        self._tail = b"\n"
        self.done = False

    def feed(self, chunk: bytes) -> bytes:
        """The part of C{chunk} that belongs to the TOP response."""
        if self.done or not chunk:
            return b""
        start = 0
        if self._in_header:
            seen = self._tail + chunk
            match = _HEADER_END.search(seen)
            self._tail = seen[-2:]
            if match is None:
                return chunk
            self._in_header = False
            start = match.end() - (len(seen) - len(chunk))
        return chunk[:start] + self._body(chunk[start:])

    def _body(self, data: bytes) -> bytes:
        if self._lines_left == 0:
            self.done = True
            return b""
        position = 0
        while self._lines_left:
            found = data.find(b"\n", position)
            if found < 0:
                return data
            self._lines_left -= 1
            position = found + 1
        self.done = True
        return data[:position]


class VirtualSize:
    """
    The size of a message as sent (CRLF line ends, before dot-stuffing),
    counted chunk by chunk: RFC 1939 wants the exact size in LIST and STAT.
    """

    def __init__(self) -> None:
        self.size = 0
        self._after_cr = False

    def update(self, chunk: bytes) -> None:
        """Count one more chunk of the stored message."""
        if not chunk:
            return
        bare = chunk.count(b"\n") - chunk.count(b"\r\n")
        if self._after_cr and chunk[:1] == b"\n":
            bare -= 1
        self.size += len(chunk) + bare
        self._after_cr = chunk.endswith(b"\r")


def uidl_for(unique: str) -> str:
    """
    The UIDL of a message from its Maildir unique name.

    The unique part of a Maildir name never changes when the file moves from
    ``new/`` to ``cur/`` or gains flags, so the UIDL is stable.  A name that
    is not a valid unique-id (too long, spaces, non-ASCII) is replaced by a
    digest of itself, which is just as stable.
    """
    if _UIDL_OK.fullmatch(unique):
        return unique
    return hashlib.sha1(unique.encode("utf-8", "surrogateescape")).hexdigest()
