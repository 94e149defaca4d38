"""Mail made or picked up by this host (sendmail, bounces) enters the same pipeline as SMTP."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from mailserver.address import parse_mailbox
from mailserver.envelope import Client, Envelope
from mailserver.delivery.pipeline import DeliveryCore, DeliveryPipeline
from mailserver.errors import MailError

log = Logger(namespace="mailserver.delivery")

LOCAL_CLIENT = Client(ip="127.0.0.1", helo="localhost", protocol="local", trusted=True)


@dataclass(frozen=True)
class Injected:
    """What became of locally submitted mail, recipient by recipient."""

    queue_id: str
    delivered: tuple[str, ...]
    refused: tuple[tuple[str, MailError], ...]  # refused for good: the sender gets a DSN


class Injector:
    """
    Local submission: recipients go through the same stages as RCPT TO
    (aliases, users, relay for remote domains, since local mail is trusted)
    and the message through the same checks and store.

    L{inject} (bounces, released messages) logs and skips refused recipients
    and raises the first refusal if none is left.  L{inject_reporting}
    (pickup) says which recipients were refused for good, so the caller can
    return a DSN, and raises a temporary refusal before anything is
    delivered, so the whole message can be tried again.
    """

    def __init__(self, core: DeliveryCore) -> None:
        self.core = core

    def inject(
        self,
        sender: str,
        recipients: Sequence[str],
        message: bytes,
        run_checks: bool = True,
        client: Client = LOCAL_CLIENT,
    ) -> Deferred[str]:
        """
        @param run_checks: False for mail whose checks already ran (bounces,
            messages released from hold).
        @param client: who the mail came from (a released message keeps its
            original SMTP client).
        """
        return Deferred.fromCoroutine(self._inject(sender, recipients, message, run_checks, client))

    def inject_reporting(
        self, sender: str, recipients: Sequence[str], message: bytes
    ) -> Deferred[Injected]:
        """
        Deliver to the recipients that are accepted; report those refused for
        good (unknown user, content check REJECT) instead of raising.

        @raise MailError: a temporary refusal (nothing was delivered), or a
            bad sender.
        """
        return Deferred.fromCoroutine(self._inject_reporting(sender, recipients, message))

    async def _check_all(
        self, pipeline: DeliveryPipeline, envelope: Envelope, recipients: Sequence[str]
    ) -> tuple[list[str], list[tuple[str, MailError]]]:
        """Run each recipient through the stages: (accepted, refused with why)."""
        accepted: list[str] = []
        refused: list[tuple[str, MailError]] = []
        for text in recipients:
            try:
                await pipeline.check_recipient(envelope, parse_mailbox(text))
            except MailError as error:
                log.warn("{queue_id}: local recipient <{rcpt}> refused: {reply}",
                         queue_id=envelope.queue_id, rcpt=text, reply=error.reply())
                refused.append((text, error))
            else:
                accepted.append(text)
        return accepted, refused

    async def _inject(
        self, sender: str, recipients: Sequence[str], message: bytes, run_checks: bool, client: Client
    ) -> str:
        pipeline = DeliveryPipeline(self.core)
        envelope = pipeline.begin(client, parse_mailbox(sender) if sender else None)
        _, refused = await self._check_all(pipeline, envelope, recipients)
        if not envelope.recipients:
            raise refused[0][1] if refused else MailError(554, "5.5.1", "Error: no valid recipients")
        transaction = pipeline.open_transaction(envelope)
        transaction.write(message)
        if transaction.error is not None:
            raise transaction.error
        return await (transaction.commit() if run_checks else transaction.commit_checked())

    async def _inject_reporting(self, sender: str, recipients: Sequence[str], message: bytes) -> Injected:
        # smtpd_recipient_limit is SMTP's (as in Postfix): its 452 would keep a long list forever.
        limit = max(self.core.recipient_limit, len(recipients))
        pipeline = DeliveryPipeline(replace(self.core, recipient_limit=limit))
        envelope = pipeline.begin(LOCAL_CLIENT, parse_mailbox(sender) if sender else None)
        accepted, refused = await self._check_all(pipeline, envelope, recipients)
        for _, error in refused:
            if error.temporary:
                raise error
        if not accepted:
            return Injected(envelope.queue_id, (), tuple(refused))
        transaction = pipeline.open_transaction(envelope)
        transaction.write(message)
        if transaction.error is not None:
            if transaction.error.temporary:
                raise transaction.error
            return Injected(envelope.queue_id, (), tuple(refused) + tuple((r, transaction.error) for r in accepted))
        # Per recipient, as LMTP: the ones the message fits get it, the full mailboxes a DSN.
        outcomes = await transaction.commit_each()
        delivered: list[str] = []
        for text, (_, outcome) in zip(accepted, outcomes):
            if not isinstance(outcome, MailError):
                delivered.append(text)
            elif outcome.temporary:
                raise outcome
            else:
                refused.append((text, outcome))
        return Injected(envelope.queue_id, tuple(delivered), tuple(refused))
