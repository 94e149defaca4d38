"""
SMTP AUTH (RFC 4954): the exchange of one session, in place of twisted.mail's
C{state_AUTH} (which dropped the connection on a bare C{AUTH} or a
malformed PLAIN response).  The command's arguments and each base64
response are checked before the SASL mechanism sees them.  Replies are
Postfix's; a L{BadExchange} is a malformed attempt, counted as a failed
login (throttled and logged like a wrong password), a plain L{MailError}
is not.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Callable

from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred
from twisted.mail import smtp
from twisted.mail._except import IllegalClientResponse
from twisted.python.failure import Failure

from mailserver.auth.throttle import LoginBanned, log_auth_failure
from mailserver.errors import MailError


class BadExchange(MailError):
    """A malformed AUTH exchange: refused with this reply and counted as a failed login."""

    def __init__(self, code: int, enhanced: str, text: str, reason: str) -> None:
        super().__init__(code, enhanced, text)
        self.reason = reason  # for the "auth failed" log line


#: The reply to C{*} (RFC 4954 4: the client cancels the exchange).
AUTH_ABORTED = MailError(501, "5.7.0", "Authentication aborted")


def parse_command(rest: bytes, challengers: dict[bytes, Callable[[], Any]]) -> tuple[Any, bytes | None]:
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


class AuthExchange:
    """
    The AUTH exchange of one session (C{ESMTPServer}): its C{ext_AUTH} and
    C{state_AUTH} hand over here once the session allows AUTH at all.
    C{challenger} is the mechanism under way; the login goes through the
    session's C{portal} (an C{AuthGuard} counts, delays and logs) and ends
    in its C{_cbAuthenticated}/C{_ebAuthenticated}.
    """

    def __init__(self, session: Any) -> None:
        self.session = session
        self.challenger: Any = None

    def start(self, rest: bytes) -> Deferred | None:
        """C{AUTH mechanism [initial-response]}."""
        session = self.session
        try:
            self.challenger, initial = parse_command(rest, session.challengers)
        except MailError as error:
            return self._refused(error)
        session.mode = smtp.AUTH
        if initial is None:
            session.sendCode(334, challenge(self.challenger.getChallenge()))
            return None
        return self._step(initial)

    def respond(self, line: bytes) -> Deferred | None:
        """One client line while the exchange is under way."""
        if line.strip() == b"*":
            return self._refused(AUTH_ABORTED)
        try:
            return self._step(decode(line))
        except MailError as error:
            return self._refused(error)

    def _step(self, response: bytes) -> Deferred | None:
        session = self.session
        try:
            self.challenger.setResponse(response)
        except IllegalClientResponse as e:
            return self._refused(BadExchange(535, "5.7.8", "Authentication failed", str(e)))
        if self.challenger.moreChallenges():
            session.sendCode(334, challenge(self.challenger.getChallenge()))
            return None
        session.mode = smtp.COMMAND
        credentials, self.challenger = self.challenger, None
        d = session.portal.login(credentials, None, smtp.IMessageDeliveryFactory, smtp.IMessageDelivery)
        d.addCallback(session._cbAuthenticated)
        d.addCallback(lambda _: session.reply(235, "2.7.0", "Authentication successful"))
        return d.addErrback(session._ebAuthenticated)

    def _refused(self, error: MailError) -> Deferred | None:
        """End the exchange with C{error}; a L{BadExchange} counts as a failed login."""
        session = self.session
        user = getattr(self.challenger, "username", None)
        session.mode = smtp.COMMAND
        self.challenger = None
        if not isinstance(error, BadExchange):
            session.reply_error(error)
            return None
        refuse = getattr(session.portal, "refuse", None)
        if refuse is None:  # no throttle: log the attempt all the same
            log_auth_failure("smtp", session.peer_ip, user, error.reason)
            session.reply_error(error)
            return None

        def answer(failure: Failure) -> None:
            if failure.check(UnauthorizedLogin) and not failure.check(LoginBanned):
                session.reply_error(error)
            else:
                session._ebAuthenticated(failure)

        return refuse(user, error.reason).addErrback(answer)
