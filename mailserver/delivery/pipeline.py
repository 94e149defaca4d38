"""
The delivery pipeline behind the SMTP server (L{ISMTPDelivery}): recipient
stages at RCPT, one Transaction per DATA.  The cred avatar is twisted.mail's
C{IMessageDeliveryFactory}; see docs/architecture.rst, "Seams".
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from twisted.internet.defer import Deferred
from twisted.mail.smtp import IMessageDeliveryFactory
from zope.interface import implementer

from mailserver.address import Address
from mailserver.envelope import Client, Envelope, Recipient
from mailserver.delivery.filters import content_work, skips
from mailserver.delivery.incoming import IncomingSpool
from mailserver.delivery.quota_gate import checker, over_quota
from mailserver.delivery.recipient_route import route
from mailserver.delivery.transaction import Committer, Transaction
from mailserver.errors import MailError
from mailserver.interfaces import IContentCheck, IMessageFilter, IQuota, IRecipientStage, ISenderCheck, ISMTPDelivery

_queue_counter = itertools.count()


def new_queue_id(now: float) -> str:
    """A Postfix-like queue id: hex microseconds and a per-process counter."""
    return "%010X%03X" % (int(now * 1_000_000) & 0xFFFFFFFFFF, next(_queue_counter) & 0xFFF)


@dataclass
class DeliveryCore:
    """What every pipeline of this process shares (built once by service.py)."""

    reactor: Any  # IReactorTime & IReactorThreads
    hostname: str
    stages: Sequence[IRecipientStage]
    committer: Committer
    checks: Sequence[IContentCheck] = ()
    recipient_limit: int = 1000
    message_size_limit: int = 10240000
    # reject_sender_login_mismatch: (sasl_user, sender) -> Deferred[bool], None = no check
    sender_owned_by: Callable[[str, Address], Deferred[bool]] | None = None
    # Where DATA past the spill threshold goes as it arrives; None: memory only.
    spool: IncomingSpool | None = None
    # MAIL FROM steps that may wait on the network (SPF): C{await check(envelope)}, MailError refuses.
    sender_checks: Sequence[ISenderCheck] = ()
    # End-of-DATA steps that may wait on the network (mail authentication), before the checks.
    filters: Sequence[IMessageFilter] = ()
    # Maildir++ directory (".Junk") that quarantined mail goes to, inside each recipient's Maildir.
    junk_directory: str = ".Junk"
    # Per-user quotas (store/quota.py): 552 5.2.2 at RCPT when over, at end of DATA when this message won't fit.
    quota: IQuota | None = None


@implementer(IMessageDeliveryFactory)
class DeliveryAgent:
    """The cred avatar for SMTP: anonymous, or a SASL-authenticated user."""

    def __init__(self, core: DeliveryCore, sasl_user: str | None) -> None:
        self.core = core
        self.sasl_user = sasl_user

    def getMessageDelivery(self) -> DeliveryPipeline:
        return DeliveryPipeline(self.core, self.sasl_user)


@implementer(ISMTPDelivery)
class DeliveryPipeline:
    """
    One client's view of the pipeline.  The ESMTP server calls L{begin},
    L{check_sender}, L{check_recipient} and L{open_transaction}.
    """

    def __init__(self, core: DeliveryCore, sasl_user: str | None = None) -> None:
        self.core = core
        self.sasl_user = sasl_user
        # The last client, and L{content_work} for it.
        self._idle_for: tuple[Client, bool, object | None] | None = None

    def begin(self, client: Client, sender: Address | None, size: int | None = None) -> Envelope:
        """Start a transaction at MAIL FROM."""
        core = self.core
        if size is not None and 0 < core.message_size_limit < size:
            raise MailError(552, "5.3.4", "Message size exceeds fixed limit")
        now = core.reactor.seconds()
        return Envelope(client=client, sender=sender, queue_id=new_queue_id(now), size_declared=size, started=now)

    async def check_sender(self, sender: Address | None, envelope: Envelope | None = None) -> None:
        """
        Postfix's C{reject_sender_login_mismatch}: an authenticated client
        may only use its own addresses (or aliases that lead to it).  Then
        the C{sender_checks} (SPF at MAIL FROM) over C{envelope}.
        """
        owned_by = self.core.sender_owned_by
        if self.sasl_user is not None and owned_by is not None and sender is not None:
            if not await owned_by(self.sasl_user, sender):
                raise MailError(553, "5.7.1", f"Sender address rejected: not owned by user {self.sasl_user}")
        if envelope is not None:
            for check in self.core.sender_checks:
                if not skips(check, envelope.client):
                    await check.check(envelope)

    async def check_recipient(self, envelope: Envelope, address: Address) -> Recipient:
        """Run the stages in order, like a Postfix restriction list."""
        if len(envelope.recipients) >= self.core.recipient_limit:
            raise MailError(452, "4.5.3", "Error: too many recipients")
        quota = self.core.quota
        recipient = await route(self.core.stages, envelope, address, checker(quota))
        if recipient.quota_limited:
            error = await over_quota(quota, recipient, envelope.size_declared or 1)  # no message is empty
            if error is not None:
                raise error
        envelope.recipients.append(recipient)
        return recipient

    def open_transaction(self, envelope: Envelope) -> Transaction:
        """The DATA phase of C{envelope}."""
        _, idle, quick = self._content_work(envelope.client)
        return Transaction(self.core, envelope, idle, quick)

    def _content_work(self, client: Client) -> tuple[Client, bool, object | None]:
        """
        C{client}, and L{content_work} for it, remembered for
        the session's last L{Client} object.
        """
        known = self._idle_for
        if known is None or known[0] is not client:
            known = self._idle_for = (client, *content_work(self.core.checks, self.core.filters, client))
        return known
