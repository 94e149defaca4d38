"""
SMTP AUTH (RFC 4954) wire syntax: the command's arguments and each base64
response, checked before the SASL exchange sees them.  Replies are
Postfix's; a L{BadExchange} is a malformed attempt that the session counts
as a failed login (throttled and logged like a wrong password), a plain
L{MailError} is not.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Callable

from mailserver.errors import MailError


class BadExchange(MailError):
    """A malformed AUTH exchange: refused with this reply and counted as a failed login."""

    def __init__(self, code: int, enhanced: str, text: str, reason: str) -> None:
        super().__init__(code, enhanced, text)
        self.reason = reason  # for the "auth failed" log line


#: The reply to a failed or malformed login (Postfix's code and enhanced code).
AUTH_FAILED = MailError(535, "5.7.8", "Authentication failed")
#: The reply to C{*} (RFC 4954 4: the client cancels the exchange).
AUTH_ABORTED = MailError(501, "5.7.0", "Authentication aborted")


def start(rest: bytes, challengers: dict[bytes, Callable[[], Any]]) -> tuple[Any, bytes | None]:
    """
    C{AUTH mechanism [initial-response]}: a new challenger and the decoded
    initial response (C{b""} for C{=}), or None when the client sent none.
    """
    parts = rest.split()
    if len(parts) not in (1, 2):
        raise BadExchange(501, "5.5.4", "Syntax: AUTH mechanism", "malformed AUTH command")
    factory = challengers.get(parts[0].upper())
    if factory is None:
        raise MailError(504, "5.5.4", "Unsupported authentication mechanism")
    initial = decode(parts[1], "initial response") if len(parts) == 2 else None
    return factory(), initial


def decode(response: bytes, what: str = "response") -> bytes:
    """One client response: base64 (strictly), or C{=} for an empty initial response."""
    if what == "initial response" and response == b"=":
        return b""
    try:
        return base64.b64decode(response.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise BadExchange(501, "5.5.2", f"Invalid base64 data in {what}", f"invalid base64 in {what}") from None


def challenge(data: bytes) -> bytes:
    """The text of a 334 reply."""
    return base64.b64encode(data)
