"""
SASL PLAIN (RFC 4616) and LOGIN exchanges, pure: the one parser of SASL
responses for SMTP AUTH, POP3 AUTH (RFC 5034) and IMAP AUTHENTICATE.

A mechanism object takes the client's decoded responses one by one and
answers with the next challenge, the credentials, or a reason to fail.
Base64 is handled by the caller (the protocol), which also turns
credentials into a portal login.  POP3 uses the mechanisms directly; SMTP
and IMAP through L{mailserver.auth.challengers}, twisted.mail's
C{IChallengeResponse} over these.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Union


@dataclass(frozen=True)
class Challenge:
    """Send this challenge (raw bytes; the protocol base64-encodes it)."""

    data: bytes


@dataclass(frozen=True)
class Credentials:
    """The exchange is complete: log in with these."""

    username: bytes
    password: bytes


@dataclass(frozen=True)
class Failed:
    """The client's response is malformed."""

    reason: str


Step = Union[Challenge, Credentials, Failed]


class Mechanism(Protocol):
    """One SASL exchange, server side."""

    def start(self, initial: bytes | None) -> Step:
        """Begin, with the client's initial response if it sent one."""

    def respond(self, data: bytes) -> Step:
        """The client's answer to the last challenge."""


class Plain:
    """PLAIN: one message, C{authzid NUL authcid NUL passwd}."""

    def start(self, initial: bytes | None) -> Step:
        if initial is None:
            return Challenge(b"")
        return self.respond(initial)

    def respond(self, data: bytes) -> Step:
        parts = data.split(b"\0")
        if len(parts) != 3:
            return Failed("malformed PLAIN response")
        authzid, authcid, passwd = parts
        if not authcid or not passwd:
            return Failed("empty user name or password")
        if authzid and authzid != authcid:
            # Logging in as somebody else (proxy authorisation) is not offered.
            return Failed("authorization identity not permitted")
        return Credentials(authcid, passwd)


class Login:
    """LOGIN (draft-murchison-sasl-login): user name, then password."""

    def __init__(self) -> None:
        self._username: bytes | None = None

    def start(self, initial: bytes | None) -> Step:
        if initial is None:
            return Challenge(b"Username:")
        return self.respond(initial)

    def respond(self, data: bytes) -> Step:
        if self._username is None:
            if not data or b"\0" in data:
                return Failed("malformed user name")
            self._username = data
            return Challenge(b"Password:")
        if not data or b"\0" in data:
            return Failed("malformed password")
        return Credentials(self._username, data)


#: The mechanisms offered, by name, in the order CAPA lists them.
MECHANISMS: dict[bytes, type[Plain] | type[Login]] = {b"PLAIN": Plain, b"LOGIN": Login}
