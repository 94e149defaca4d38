"""The IMAP command failures that handlers raise and the server turns into replies."""

from __future__ import annotations


class Refused(Exception):
    """A command that fails with NO and an optional response code (TRYCREATE, READ-ONLY...)."""

    def __init__(self, text: str, code: str | None = None) -> None:
        super().__init__(text)
        self.text = text
        self.code = code


def reply_text(error: Exception) -> bytes:
    """An exception's message made safe for one response line."""
    text = str(error) or error.__class__.__name__
    return "".join(c if c.isprintable() else "?" for c in text).encode("utf-8", "replace")[:500]


def printable(value: bytes | str) -> str:
    """Client-supplied text (a user name, an ID field) made safe for one log line."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return "".join(c if c.isprintable() else "?" for c in value[:256])
