"""
The SMTP session's side of the milters (C{smtpd_milters}): one milter
session per connection; connect when the client connects (the banner does
not wait for it), HELO at EHLO/HELO, MAIL and RCPT after our own checks
passed.  A reject, tempfail or shutdown becomes the L{MailError} the
session answers with (the milter's text); the content half runs at end of
DATA in L{mailserver.delivery.milter_filter.MilterFilter}, which finds the
session on the envelope.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from mailserver.envelope import Envelope, MessageMilter, RemoteAddress
from mailserver.errors import MailError
from mailserver.interfaces import IMilterSession
from mailserver.milter.verdicts import ACCEPT, CONTINUE, DISCARD, REJECT_ERROR, SHUTDOWN, family_of
from mailserver.milter.macros import MacroContext

log = Logger(namespace="mailserver.milter")


class MilterRefusal(MailError):
    """A milter's reject, tempfail or shutdown (C{close}: 421, end the connection)."""

    def __init__(self, error: MailError, close: bool = False) -> None:
        super().__init__(error.code, error.enhanced, error.text)
        self.close = close


def _error(verdict: Any) -> MilterRefusal | None:
    if verdict.action in (CONTINUE, ACCEPT, DISCARD):
        return None
    return MilterRefusal(verdict.error or REJECT_ERROR, close=verdict.action == SHUTDOWN)


class MilterGlue:
    """
    One SMTP connection's milters.  C{context} holds the macro values
    learnt so far; every stage sends C{context.values()}.
    """

    def __init__(self, session: IMilterSession, context: MacroContext) -> None:
        self.session = session
        self.context = context
        self._refusal: MilterRefusal | None = None  # connect's verdict: refuses every MAIL
        self._connected: Deferred | None = None
        self.in_message = False

    def connect(self, address: str, port: int, hostname: str = "unknown") -> None:
        """The client connected: open the milter connection in the background."""
        self.context = self.context.with_(client_addr=address, client_port=port, client_name=hostname)
        d = self.session.connect(self.context.values(), hostname, family_of(address), port, address)
        self._connected = d.addCallback(self._connect_verdict)

    def _connect_verdict(self, verdict: Any) -> None:
        self._refusal = _error(verdict)
        if self._refusal is not None:
            log.info("milter: connect from [{ip}]: {reply}", ip=self.context.client_addr, reply=self._refusal.reply())

    async def _settled(self) -> None:
        if self._connected is not None:
            await self._connected
            self._connected = None
        if self._refusal is not None:
            raise self._refusal

    async def helo(self, name: str) -> None:
        self.context = self.context.with_(helo=name)
        try:
            await self._settled()
        except MilterRefusal:
            return  # refused at connect: every MAIL is refused, HELO is not (as Postfix)
        verdict = await self.session.helo(name, self.context.values())
        refusal = _error(verdict)
        if refusal is not None:
            raise refusal

    async def mail(self, envelope: Envelope, esmtp: list[str], sasl_user: str | None) -> None:
        """MAIL FROM (after our checks passed): on success, the envelope carries the milter."""
        sender = str(envelope.sender) if envelope.sender else ""
        self.context = self.context.with_(
            queue_id=envelope.queue_id, mail_addr=sender, auth_authen=sasl_user or "",
            auth_type="PLAIN" if sasl_user else "", rcpt_addr="",
        )  # fmt: skip
        await self._settled()
        self.end_message()  # a previous MAIL the milter refused: SMFIC_ABORT first
        self.in_message = True
        verdict = await self.session.mail_from([f"<{sender}>", *esmtp], self.context.values())
        refusal = _error(verdict)
        if refusal is not None:
            raise refusal
        envelope.milter = MessageMilter(self.session, self.context.values(), discard=verdict.action == DISCARD)

    async def rcpt(self, envelope: Envelope, recipient: str) -> None:
        last = envelope.recipients[-1] if envelope.recipients else None
        remote = last is not None and any(isinstance(d, RemoteAddress) for d in last.destinations)
        self.context = self.context.with_(rcpt_addr=recipient, rcpt_mailer="smtp" if remote else "local")
        verdict = await self.session.rcpt([f"<{recipient}>"], self.context.values())
        refusal = _error(verdict)
        if refusal is not None:
            raise refusal
        if envelope.milter is not None:
            envelope.milter.macros = self.context.values()
            envelope.milter.discard = envelope.milter.discard or verdict.action == DISCARD

    def end_message(self) -> None:
        """The transaction is over (delivered, refused, RSET): SMFIC_ABORT."""
        if self.in_message:
            self.in_message = False
            self.session.abort()

    def close(self) -> Deferred:
        return self.session.quit()


def start_milter(factory: Any, peer: Any) -> MilterGlue | None:
    """The milters of a new connection (C{factory.open_milter}), connect already sent; None without."""
    open_milter: Callable[[], tuple[IMilterSession, MacroContext]] | None = getattr(factory, "open_milter", None)
    if open_milter is None:
        return None
    session, context = open_milter()
    glue = MilterGlue(session, context)
    glue.connect(getattr(peer, "host", str(peer)), getattr(peer, "port", 0))
    return glue
