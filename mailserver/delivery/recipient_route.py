"""Run the recipient stages in order, like a Postfix restriction list."""

from __future__ import annotations

from typing import Callable, Sequence

from twisted.internet.defer import Deferred

from mailserver.address import Address
from mailserver.envelope import Destination, Envelope, Outcome, Recipient, Verdict
from mailserver.delivery.local_mailboxes import USER_UNKNOWN
from mailserver.interfaces import IRecipientStage


async def route(
    stages: Sequence[IRecipientStage], envelope: Envelope, address: Address,
    limited: Callable[[Sequence[Destination]], bool] | None = None,
) -> Recipient:
    """
    The destinations of C{address}: the first stage that accepts decides,
    the first that rejects raises its L{MailError}; a stage may hand the
    next ones a rewritten address.  No stage accepting is 550 5.1.1.
    With C{limited} (whether destinations have a quota limit) the recipient
    carries its answer (L{Recipient.quota_limited}).
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
            destinations = verdict.destinations
            known = None if limited is None else limited(destinations)
            return Recipient(address, destinations, verdict.owner, known)
        if verdict.rewritten is not None:
            current = verdict.rewritten
    raise USER_UNKNOWN
