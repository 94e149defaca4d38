"""
Quota decisions of the delivery pipeline: at RCPT (already over, or over
with the declared SIZE) and at end of DATA (over with this message).

A recipient is over quota when any of its local mailboxes is (an alias
expanding to several users is refused as a whole: nothing is silently
dropped for one member).
"""

from __future__ import annotations

from typing import Sequence

from twisted.logger import Logger

from mailserver.delivery.envelope import LocalMailbox, Recipient
from mailserver.errors import MailError
from mailserver.interfaces import IQuota

log = Logger(namespace="mailserver.quota")


async def over_quota(quota: IQuota | None, recipient: Recipient, size: int) -> MailError | None:
    """The quota refusal for C{recipient} if one of its mailboxes cannot take C{size} more bytes."""
    if quota is None:
        return None
    for destination in recipient.destinations:
        if isinstance(destination, LocalMailbox):
            error = await quota.check(destination.user, destination.maildir, size)
            if error is not None:
                return error
    return None


async def refused(quota: IQuota | None, recipients: Sequence[Recipient], size: int) -> dict[int, MailError]:
    """Index (in C{recipients}) -> refusal, for each recipient a message of C{size} bytes does not fit."""
    found: dict[int, MailError] = {}
    for index, recipient in enumerate(recipients):
        error = await over_quota(quota, recipient, size)
        if error is not None:
            found[index] = error
    return found


async def warn(quota: IQuota | None, recipients: Sequence[Recipient], size: int) -> None:
    """After a delivery: each local mailbox past its warning level gets its notice (failures only logged)."""
    if quota is None:
        return
    seen: set[str] = set()
    for recipient in recipients:
        for destination in recipient.destinations:
            if isinstance(destination, LocalMailbox) and destination.maildir not in seen:
                seen.add(destination.maildir)
                try:
                    await quota.delivered(destination.user, destination.maildir, size)
                except Exception:  # the mail itself is delivered: a failed notice is not the client's problem
                    log.failure("quota: warning for {user} failed", user=destination.user)
