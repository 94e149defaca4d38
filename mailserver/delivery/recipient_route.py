"""Run the recipient stages in order, like a Postfix restriction list."""

from __future__ import annotations

from typing import Sequence

from twisted.internet.defer import Deferred

from mailserver.address import Address
from mailserver.envelope import Envelope, Outcome, Recipient, Verdict
from mailserver.delivery.local_mailboxes import USER_UNKNOWN
from mailserver.interfaces import IRecipientStage


async def route(stages: Sequence[IRecipientStage], envelope: Envelope, address: Address) -> Recipient:
    """
    The destinations of C{address}: the first stage that accepts decides,
    the first that rejects raises its L{MailError}; a stage may hand the
    next ones a rewritten address.  No stage accepting is 550 5.1.1.
    """
    current = address
    for stage in stages:
        verdict = stage.check(envelope, current)
        if type(verdict) is not Verdict and isinstance(verdict, Deferred):  # most stages answer at once
            verdict = await verdict
        if verdict.outcome is Outcome.REJECT:
            assert verdict.error is not None
            raise verdict.error
        if verdict.outcome is Outcome.ACCEPT:
            return Recipient(address, verdict.destinations, verdict.owner)
        if verdict.rewritten is not None:
            current = verdict.rewritten
    raise USER_UNKNOWN
