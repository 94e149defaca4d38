"""
One outbound SMTP session: one message, all its recipients for one host.

A subclass of twisted.mail's C{ESMTPClient}, which gives EHLO (with HELO
fallback), STARTTLS and AUTH.  We override the transaction states because
the stock ones lose information or misbehave for a queue:

 - per-recipient replies are kept with the command they answered, so the
   queue can deliver, defer or bounce each recipient and quote the reply;
 - one transaction per connection, then QUIT (no RSET loop);
 - addresses are written as given (the stock C{quoteaddr} runs them
   through C{email.utils.parseaddr}, mangling quoted local parts);
 - the content is CRLF-normalised and dot-stuffed as a whole
   (L{smtp_payload}): the stock per-chunk transform misses a dot at the
   start of a chunk;
 - a reply timeout aborts the connection (the stock one sends QUIT and
   may wait forever); a refused HELO no longer loops;
 - with C{smtp_tls_security_level = may}, a refused STARTTLS continues in
   plain text and a failed handshake is reported (L{SessionOutcome.tls_failed})
   so the caller can retry without TLS, as Postfix does.

The session never raises: L{RelaySession.done} fires with a L{SessionOutcome}.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from io import BytesIO

from twisted.internet.defer import Deferred
from twisted.mail import smtp
from twisted.protocols.basic import FileSender
from twisted.python.failure import Failure
from zope.interface import implementer

from mailserver.queue.nexthop import enhanced_status

_STAGES = {
    b"EHLO": "EHLO",
    b"HELO": "HELO",
    b"STARTTLS": "STARTTLS",
    b"AUTH": "AUTH",
    b"MAIL": "MAIL FROM",
    b"RCPT": "RCPT TO",
    b"DATA": "DATA",
    b".": "end of DATA",
    b"QUIT": "QUIT",
}


@dataclass
class SessionOutcome:
    """
    What one session achieved.

    Either C{replies} (the transaction reached a verdict for every
    recipient: C{recipient -> (code, reply text, command)}) or C{failure}
    (the host could not take the message: C{(permanent, enhanced, text,
    diagnostic)}), never both.
    """

    replies: dict[str, tuple[int, str, str]] | None = None
    failure: tuple[bool, str, str, str] | None = None
    tls_failed: bool = False
    tls_used: bool = False
    extensions: dict[bytes, bytes | None] = field(default_factory=dict)


@implementer(smtp.IClientAuthentication)
class PlainAuthenticator:
    """SASL PLAIN with an empty authorization identity (the stock one repeats the user)."""

    def __init__(self, user: bytes) -> None:
        self.user = user

    def getName(self) -> bytes:
        return b"PLAIN"

    def challengeResponse(self, secret: bytes, chal) -> bytes:
        return b"\0" + self.user + b"\0" + secret


def _text(resp) -> str:
    if isinstance(resp, bytes):
        resp = resp.decode("utf-8", "replace")
    return " ".join(str(resp).split())


class RelaySession(smtp.ESMTPClient):
    """
    Send one message to one host.

    @param host_label: C{"mx.example.org[192.0.2.1]"}, for error texts.
    @param payload: the content from L{mailserver.queue.nexthop.smtp_payload}.
    @param tls_context: a client TLS context factory for STARTTLS, or None
        to never start TLS.
    @param require_tls: fail (temporarily) unless TLS is established.
    @param credentials: C{(user, password)} for AUTH PLAIN/LOGIN; AUTH is
        only ever done over TLS, so credentials imply C{require_tls}.
    """

    debug = False  # the stock transcript would keep AUTH secrets in memory
    heloFallback = True

    def __init__(
        self,
        *,
        helo_name: str,
        host_label: str,
        sender: str,
        recipients: list[str],
        payload: bytes,
        eight_bit: bool = False,
        tls_context=None,
        require_tls: bool = False,
        credentials: tuple[str, str] | None = None,
        reply_timeout: float = 300,
    ) -> None:
        secret = credentials[1].encode("utf-8") if credentials else None
        super().__init__(secret, tls_context, helo_name.encode("ascii"))
        self.timeout = reply_timeout
        self.requireTransportSecurity = require_tls or credentials is not None
        if credentials:
            user = credentials[0].encode("utf-8")
            self.registerAuthenticator(PlainAuthenticator(user))
            self.registerAuthenticator(smtp.LOGINAuthenticator(user))
        self.host_label = host_label
        self.done: Deferred[SessionOutcome] = Deferred()
        self._sender = sender.encode("utf-8")
        self._recipients = list(recipients)
        self._payload = payload
        self._eight_bit = eight_bit
        self._extensions: dict[bytes, bytes | None] = {}
        self._replies: dict[str, tuple[int, str, str]] = {}
        self._accepted: list[str] = []
        self._stage = "greeting"
        self._tls_pending = False  # STARTTLS done, no reply over TLS yet
        self._outcome: SessionOutcome | None = None
        self._last: str | None = None
        self._next_rcpt = iter(())

    # -- bookkeeping -------------------------------------------------------

    def sendLine(self, line: bytes) -> None:
        word = line.split(b" ", 1)[0].split(b":", 1)[0].upper()
        self._stage = _STAGES.get(word, self._stage)
        super().sendLine(line)

    def _fail(
        self, permanent: bool, enhanced: str, text: str, diagnostic: str = "", tls_failed: bool = False
    ) -> None:
        if self._outcome is None:
            self._outcome = SessionOutcome(
                failure=(permanent, enhanced, text, diagnostic),
                tls_failed=tls_failed,
                tls_used=self._tlsMode,
                extensions=self._extensions,
            )

    def _said(self, code: int, resp) -> tuple[str, str]:
        """(text for people, diagnostic) for a reply to the current command."""
        reply = f"{code} {_text(resp)}".strip()
        return f"host {self.host_label} said: {reply} (in reply to {self._stage} command)", reply

    def _finish(self) -> None:
        if self._outcome is None:
            self._outcome = SessionOutcome(
                replies=dict(self._replies), tls_used=self._tlsMode, extensions=self._extensions
            )
        self._disconnectFromServer()

    def connectionLost(self, reason: Failure = None) -> None:
        super().connectionLost(reason)
        if self._outcome is None:
            why = reason.getErrorMessage() if reason is not None else "connection closed"
            if self._tls_pending:
                text = f"TLS handshake with {self.host_label} failed: {why}"
                self._fail(False, "4.7.5", text, tls_failed=True)
            else:
                text = f"lost connection with {self.host_label} while {self._stage}: {why}"
                self._fail(False, "4.4.2", text)
        done, self.done = self.done, None
        if done is not None:
            done.callback(self._outcome)

    def timeoutConnection(self) -> None:
        self._fail(False, "4.4.2", f"conversation with {self.host_label} timed out while {self._stage}")
        self.transport.abortConnection()

    def sendError(self, exc) -> None:
        if isinstance(exc, smtp.TLSRequiredError):
            self._fail(False, "4.7.4", f"TLS is required, but was not offered by host {self.host_label}")
        elif isinstance(exc, (smtp.AUTHDeclinedError, smtp.AuthenticationError)):
            text, diagnostic = self._said(exc.code, exc.resp)
            self._fail(False, "4.7.0", f"SASL authentication failed; {text}", diagnostic)
        elif isinstance(exc, (smtp.AUTHRequiredError, smtp.EHLORequiredError)):
            self._fail(False, "4.7.0", f"SASL authentication not offered by host {self.host_label}")
        elif isinstance(exc, smtp.SMTPProtocolError):
            self._fail(False, "4.5.0", f"protocol error from {self.host_label} while {self._stage}")
        else:
            self._fail(False, "4.4.2", f"error talking to {self.host_label}: {exc}")
        super().sendError(exc)

    # -- greeting, EHLO, STARTTLS --------------------------------------------

    def smtpConnectionFailed(self, code: int, resp) -> None:
        # Postfix's smtp_skip_5xx_greeting: try the next host, whatever the code.
        diagnostic = f"{code} {_text(resp)}"
        self._fail(False, "4.3.0", f"host {self.host_label} refused to talk to me: {diagnostic}", diagnostic)
        self._disconnectFromServer()

    def smtpState_helo(self, code: int, resp) -> None:
        super().smtpState_helo(code, resp)
        self._failresponse = self._site_failed

    def _site_failed(self, code: int, resp) -> None:
        text, diagnostic = self._said(code, resp)
        self._fail(code >= 500, enhanced_status(code, _text(resp)), text, diagnostic)
        self._disconnectFromServer()

    def esmtpState_serverConfig(self, code: int, resp) -> None:
        self._tls_pending = False
        items: dict[bytes, bytes | None] = {}
        for line in resp.splitlines():
            parts = line.split(None, 1)
            if parts:
                items[parts[0].upper()] = parts[1] if len(parts) > 1 else None
        self._extensions = items
        self.tryTLS(code, resp, items)

    def esmtpState_starttls(self, code: int, resp) -> None:
        try:
            self.transport.startTLS(self.context)
        except Exception as e:  # any failure to set up TLS ends this session
            self._fail(False, "4.7.5", f"cannot start TLS with {self.host_label}: {e}", tls_failed=True)
            self.transport.abortConnection()
            return
        self._tlsMode = True
        self._tls_pending = True
        self.esmtpState_ehlo(code, resp)

    def esmtpTLSFailed(self, code: int = -1, resp=None) -> None:
        """STARTTLS refused: go on in plain text unless TLS is required."""
        if self.requireTransportSecurity:
            text, diagnostic = self._said(code, resp)
            self._fail(False, "4.7.5", f"TLS is required, but STARTTLS failed: {text}", diagnostic)
            self._disconnectFromServer()
        else:
            self.authenticate(code, resp, self._extensions)

    # -- the transaction -----------------------------------------------------

    def smtpState_from(self, code: int, resp) -> None:
        self._tls_pending = False
        params = b""
        if b"SIZE" in self._extensions:
            params += b" SIZE=%d" % len(self._payload)
        if self._eight_bit and b"8BITMIME" in self._extensions:
            params += b" BODY=8BITMIME"
        self._expected = smtp.SUCCESS
        self._okresponse = self.smtpState_to
        self._failresponse = self._mail_failed
        self.sendLine(b"MAIL FROM:<" + self._sender + b">" + params)

    def _mail_failed(self, code: int, resp) -> None:
        for recipient in self._recipients:
            self._replies[recipient] = (code, _text(resp), "MAIL FROM")
        self._finish()

    def smtpState_to(self, code: int, resp) -> None:
        self._next_rcpt = iter(self._recipients)
        self._last = None
        self._expected = range(0, 1000)
        self._okresponse = self._rcpt_reply
        self._rcpt_reply(0, b"")

    def _rcpt_reply(self, code: int, resp) -> None:
        if self._last is not None:
            self._replies[self._last] = (code, _text(resp), "RCPT TO")
            if 200 <= code < 300:
                self._accepted.append(self._last)
        self._last = next(self._next_rcpt, None)
        if self._last is not None:
            self.sendLine(b"RCPT TO:<" + self._last.encode("utf-8") + b">")
        elif self._accepted:
            self._expected = [354]
            self._okresponse = self.smtpState_data
            self._failresponse = self._data_refused
            self.sendLine(b"DATA")
        else:
            self._finish()

    def _data_refused(self, code: int, resp) -> None:
        for recipient in self._accepted:
            self._replies[recipient] = (code, _text(resp), "DATA")
        self._finish()

    def smtpState_data(self, code: int, resp) -> None:
        self._expected = smtp.SUCCESS
        self._okresponse = self._data_done
        self._failresponse = self._data_done
        sender = FileSender()
        d = sender.beginFileTransfer(BytesIO(self._payload), self.transport, self.transformChunk)
        d.addCallbacks(self.finishedFileTransfer, self._transfer_failed)

    def transformChunk(self, chunk: bytes) -> bytes:
        self.resetTimeout()
        return chunk  # already CRLF and dot-stuffed as a whole

    def finishedFileTransfer(self, lastsent) -> None:
        self.sendLine(b".")

    def _transfer_failed(self, failure: Failure) -> None:
        self._fail(False, "4.4.2", f"lost connection with {self.host_label} while sending message content")
        self.transport.abortConnection()

    def _data_done(self, code: int, resp) -> None:
        for recipient in self._accepted:
            self._replies[recipient] = (code, _text(resp), "end of DATA")
        self._finish()
