"""
The SASL mechanisms of L{mailserver.auth.sasl} as twisted.mail's
C{IChallengeResponse} credentials, for SMTP AUTH and IMAP AUTHENTICATE.

twisted.mail's own C{PLAINCredentials} ignores the authorisation identity
(a client sending C{bob NUL alice NUL pw} is logged in as alice) and its
C{LOGINCredentials} sends NUL-terminated challenges; these classes parse
with the same code as POP3, so all protocols accept and refuse the same
responses.  A malformed response raises C{IllegalClientResponse} with the
reason, which the protocol counts as a failed login.
"""

from __future__ import annotations

from twisted.cred.credentials import UsernamePassword
from twisted.mail._except import IllegalClientResponse
from twisted.mail.interfaces import IChallengeResponse
from zope.interface import implementer

from mailserver.auth import sasl


@implementer(IChallengeResponse)
class SASLCredentials(UsernamePassword):
    """One exchange of C{mechanism}; username and password once complete."""

    mechanism: type[sasl.Plain] | type[sasl.Login] = sasl.Plain

    def __init__(self) -> None:
        super().__init__(None, None)
        self._exchange = self.mechanism()
        self._step: sasl.Step = self._exchange.start(None)

    def getChallenge(self) -> bytes:
        return self._step.data if isinstance(self._step, sasl.Challenge) else b""

    def setResponse(self, response: bytes) -> None:
        if not isinstance(self._step, sasl.Challenge):
            raise IllegalClientResponse("response after the exchange ended")
        self._step = self._exchange.respond(response)
        if isinstance(self._step, sasl.Failed):
            raise IllegalClientResponse(self._step.reason)
        if isinstance(self._step, sasl.Credentials):
            self.username, self.password = self._step.username, self._step.password

    def moreChallenges(self) -> bool:
        return isinstance(self._step, sasl.Challenge)


class PlainCredentials(SASLCredentials):
    """SASL PLAIN; an authorisation identity other than the login is refused."""

    mechanism = sasl.Plain


class LoginCredentials(SASLCredentials):
    """SASL LOGIN: C{Username:}, then C{Password:}."""

    mechanism = sasl.Login


#: The challengers offered by SMTP and IMAP, by mechanism name.
CHALLENGERS: dict[bytes, type[SASLCredentials]] = {b"PLAIN": PlainCredentials, b"LOGIN": LoginCredentials}
