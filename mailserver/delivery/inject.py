"""Mail made or picked up by this host (sendmail, bounces) enters the same pipeline as SMTP."""

from __future__ import annotations

from typing import Sequence

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from mailserver.address import parse_mailbox
from mailserver.delivery.envelope import Client
from mailserver.delivery.pipeline import DeliveryCore, DeliveryPipeline
from mailserver.errors import MailError

log = Logger(namespace="mailserver.delivery")

LOCAL_CLIENT = Client(ip="127.0.0.1", helo="localhost", protocol="local", trusted=True)


class Injector:
    """
    Local submission: recipients go through the same stages as RCPT TO
    (aliases, users, relay for remote domains, since local mail is trusted)
    and the message through the same checks and store.  Recipients that are
    refused are logged and skipped; if none is left, the first refusal is
    raised so the caller can bounce or set the file aside.
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

    async def _inject(
        self, sender: str, recipients: Sequence[str], message: bytes, run_checks: bool, client: Client
    ) -> str:
        pipeline = DeliveryPipeline(self.core)
        envelope = pipeline.begin(client, parse_mailbox(sender) if sender else None)
        refused: list[MailError] = []
        for text in recipients:
            try:
                await pipeline.check_recipient(envelope, parse_mailbox(text))
            except MailError as error:
                log.warn("{queue_id}: local recipient <{rcpt}> refused: {reply}",
                         queue_id=envelope.queue_id, rcpt=text, reply=error.reply())
                refused.append(error)
        if not envelope.recipients:
            raise refused[0] if refused else MailError(554, "5.5.1", "Error: no valid recipients")
        transaction = pipeline.open_transaction(envelope)
        transaction.write(message)
        if transaction.error is not None:
            raise transaction.error
        return await (transaction.commit() if run_checks else transaction.commit_checked())
