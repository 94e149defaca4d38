"""
The end-of-message half of the milters as an L{IMessageFilter}: DATA, the
headers, end of headers, the body (streamed from the L{SpooledMessage} in
chunks, never the whole message in memory) and end of message; then the
verdict is applied to the message and the envelope (reject, tempfail,
discard, hold, junk folder, header and body changes, recipients added or
deleted, sender changed).

The SMTP session runs connect, HELO, MAIL and RCPT and hands its milter
session to this filter on the envelope (L{MessageMilter} as
C{envelope.milter}).  Mail without one (sendmail/pickup: C{Client.trusted})
gets a session of C{non_smtpd_milters} for the whole conversation, with the
local macros, as Postfix does.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

from twisted.internet import threads
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from mailserver.address import parse_mailbox
from mailserver.envelope import Envelope, MessageMilter
from mailserver.delivery.filters import FilterResult
from mailserver.delivery.received import header_end
from mailserver.delivery.recipient_route import route
from mailserver.delivery.spool_edits import read_header
from mailserver.errors import MailError
from mailserver.interfaces import IMessageFilter, IMilterSession, IRecipientStage
from mailserver.milter.actions import Applied, outcome
from mailserver.milter.client import ACCEPT, CONTINUE, DISCARD, REJECT_ERROR, send_headers
from mailserver.spooled import SpooledMessage, to_crlf

log = Logger(namespace="mailserver.milter")

BODY_CHUNK = 65535  # SMFIC_BODY's largest chunk


@implementer(IMessageFilter)
class MilterFilter:
    """
    @param stages: the recipient stages, to route recipients a milter adds.
    @param open_local: a new session of C{non_smtpd_milters} with its macros
        for locally submitted mail, or None when none are configured.
    """

    name = "milter"

    def __init__(
        self, reactor: Any, stages: Sequence[IRecipientStage], junk_folder: str,
        open_local: Callable[[Envelope], MessageMilter | None] | None = None,
    ) -> None:  # fmt: skip
        self.reactor = reactor
        self.stages = stages
        self.junk_folder = junk_folder
        self.open_local = open_local

    def filter(self, envelope: Envelope, message: SpooledMessage) -> Deferred:
        return Deferred.fromCoroutine(self._filter(envelope, message))

    async def _filter(self, envelope: Envelope, message: SpooledMessage) -> FilterResult:
        milter: MessageMilter | None = getattr(envelope, "milter", None)
        if milter is not None:
            return await self._judge(milter, envelope, message)
        if self.open_local is None or not envelope.client.trusted:
            return FilterResult(message)
        milter = self.open_local(envelope)
        if milter is None:
            return FilterResult(message)
        try:
            error = await local_envelope(milter, envelope)
            if error is not None:
                return FilterResult(message, error=error)
            return await self._judge(milter, envelope, message)
        finally:
            await milter.session.quit()

    def _thread(self, function: Callable, *args: Any) -> Deferred:
        return threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(), function, *args)

    async def _judge(self, milter: MessageMilter, envelope: Envelope, message: SpooledMessage) -> FilterResult:
        if milter.discard:
            return FilterResult(message, discard=True)
        macros = dict(milter.macros, i=envelope.queue_id)
        small = message.in_memory()
        header = small if small is not None else await self._thread(read_header, message)
        if header is None:  # a header block over 1 MiB
            return FilterResult(message, error=MailError(552, "5.3.4", "Error: message header too long"))
        end = header_end(header)
        head = header[:end]
        body = message.replace_start(end + (header[end : end + 1] == b"\n"), b"")  # after the blank line
        verdict = await self._content(milter.session, head, body, macros)
        sender = str(envelope.sender) if envelope.sender else ""
        recipients = [str(r.original) for r in envelope.recipients]
        # Only the header block is edited here; the body stays where it is unless replaced.
        result = outcome(verdict, head + b"\n", sender, recipients, self.junk_folder)
        if result.error is not None:
            return FilterResult(message, error=result.error)
        if result.discard:
            return FilterResult(message, discard=True)
        applied = result.applied
        assert applied is not None
        if applied.body_replaced:
            message = SpooledMessage(applied.message)
        else:
            message = body.prepend(applied.message)  # the new header block and the blank line
        await self._envelope_changes(envelope, applied)
        if not envelope.recipients:
            return FilterResult(message, discard=True)
        spam = f"milter: spam, into {result.folder}" if result.folder else None
        return FilterResult(message, quarantine=spam, hold=result.hold)

    async def _content(self, session: IMilterSession, head: bytes, body: SpooledMessage,
                       macros: Mapping[str, str]) -> Any:  # fmt: skip
        """DATA, headers, end of headers, body chunks, end of message: the first final verdict."""
        verdict = await session.data(macros)
        if verdict.action != CONTINUE:
            return verdict
        verdict = await send_headers(session, head, macros)
        if verdict.action != CONTINUE:
            return verdict
        chunks = body.chunks(BODY_CHUNK // 2)  # LF -> CRLF at most doubles a chunk
        in_memory = body.in_memory() is not None  # no file to read: no thread hand-off
        while not verdict.skip_body:  # bounded: the spool file ends
            chunk = next(chunks, None) if in_memory else await self._thread(next, chunks, None)
            if chunk is None:
                break
            verdict = await session.body(to_crlf(chunk))
            if verdict.action != CONTINUE:
                return verdict
        return await session.eom(macros)

    async def _envelope_changes(self, envelope: Envelope, applied: Applied) -> None:
        """Change sender, delete and add recipients as the milter asked (added ones are routed like RCPT)."""
        current = str(envelope.sender) if envelope.sender else ""
        if applied.sender != current:
            envelope.sender = parse_mailbox(applied.sender) if applied.sender else None
            log.info("{queue_id}: milter: sender changed to <{sender}>", queue_id=envelope.queue_id, sender=applied.sender)
        if applied.deleted:
            gone = {address.casefold() for address in applied.deleted}
            envelope.recipients = [r for r in envelope.recipients if str(r.original).casefold() not in gone]
        for address, _args in applied.added:
            probe = Envelope(client=envelope.client, sender=envelope.sender, queue_id=envelope.queue_id)
            try:
                envelope.recipients.append(await route(self.stages, probe, parse_mailbox(address)))
            except MailError as error:
                raise MailError(451, "4.3.0", f"Error: milter recipient <{address}>: {error.text}") from None
            log.info("{queue_id}: milter: recipient <{rcpt}> added", queue_id=envelope.queue_id, rcpt=address)


async def local_envelope(milter: MessageMilter, envelope: Envelope) -> MailError | None:
    """Connect, HELO, MAIL and RCPT for locally submitted mail (Postfix's non_smtpd_milters)."""
    session, macros = milter.session, milter.macros
    sender = str(envelope.sender) if envelope.sender else ""
    steps: list[Callable[[], Deferred]] = [
        lambda: session.connect(macros, "localhost", "L", 0, "127.0.0.1"),
        lambda: session.helo("localhost", macros),
        lambda: session.mail_from([f"<{sender}>"], dict(macros, **{"{mail_addr}": sender})),
    ]
    for recipient in envelope.recipients:
        rcpt = str(recipient.original)
        steps.append(lambda rcpt=rcpt: session.rcpt([f"<{rcpt}>"], dict(macros, **{"{rcpt_addr}": rcpt})))
    for step in steps:
        verdict = await step()
        if verdict.action == DISCARD:
            milter.discard = True
        elif verdict.action not in (CONTINUE, ACCEPT):
            return verdict.error or REJECT_ERROR
    return None
