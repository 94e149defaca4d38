"""
Quota decisions of the delivery pipeline: at RCPT (already over, or over
with the declared SIZE) and at end of DATA (over with this message).

A recipient is over quota when any of its local mailboxes is (an alias
expanding to several users is refused as a whole: nothing is silently
dropped for one member).
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable, Sequence

from twisted.logger import Logger

from mailserver.envelope import Destination, LocalMailbox, Recipient
from mailserver.errors import MailError
from mailserver.interfaces import IQuota
from mailserver.quota_rule import Usage, over_quota as over_quota_error

log = Logger(namespace="mailserver.quota")


def limited(quota: IQuota | None, recipients: Sequence[Recipient]) -> bool:
    """
    True if one of C{recipients}' local mailboxes has a quota limit.  Asked
    at once (L{IQuota.limits_of} reads no disk), so mail to unlimited users
    costs no usage read, coroutine or Deferred.

    A recipient that carries the answer of its RCPT (L{Recipient.quota_limited},
    see L{checker}) is not looked up again: limits that change between
    its RCPT and the end of DATA (a passwd-file reload) apply from the next
    message on.  Recipients made otherwise (a check's REDIRECT or BCC, a
    milter's) are looked up now.
    """
    if quota is None:
        return False
    for recipient in recipients:
        known = recipient.quota_limited
        if known is None:
            known = destinations_limited(quota, recipient.destinations)
        if known:
            return True
    return False


def destinations_limited(quota: IQuota, destinations: Sequence[Destination]) -> bool:
    """True if one of the local mailboxes among C{destinations} has a quota limit now."""
    for destination in destinations:
        if isinstance(destination, LocalMailbox) and quota.limits_of(destination.user).limited:
            return True
    return False


def checker(quota: IQuota | None) -> Callable[[Sequence[Destination]], bool] | None:
    """What a RCPT's route asks so its recipient carries the answer (L{limited} then trusts it); None without quotas."""
    return None if quota is None else partial(destinations_limited, quota)


async def over_quota(
    quota: IQuota | None, recipient: Recipient, size: int, seen: list[tuple[LocalMailbox, Usage]] | None = None,
    read: dict[str, tuple[Usage, Any]] | None = None,
) -> MailError | None:
    """
    The quota refusal for C{recipient} if one of its mailboxes cannot take
    C{size} more bytes.  Without C{seen} (RCPT) L{IQuota.check} decides; with
    it (end of DATA) usage is read now and each limited mailbox's is added.
    C{read} (Maildir -> usage and limits) keeps a Maildir from being scanned
    again for another recipient of the same message.
    """
    if quota is None:
        return None
    for destination in recipient.destinations:
        if not isinstance(destination, LocalMailbox) or not quota.limits_of(destination.user).limited:
            continue  # an unlimited mailbox is never over quota and has no warning level
        if seen is None:  # RCPT: a recent read will do
            error = await quota.check(destination.user, destination.maildir, size)
            if error is not None:
                return error
            continue
        if read is not None and destination.maildir in read:
            usage, limits = read[destination.maildir]
        else:
            usage, limits = await quota.usage(destination.user, destination.maildir)
            if read is not None:
                read[destination.maildir] = (usage, limits)
            if limits.limited:
                seen.append((destination, usage))
        if usage.exceeds(limits, size, 1):
            return over_quota_error(destination.user)
    return None


async def refused(
    quota: IQuota | None, recipients: Sequence[Recipient], size: int
) -> tuple[dict[int, MailError], list[tuple[LocalMailbox, Usage]]]:
    """
    Index (in C{recipients}) -> refusal for each recipient a message of
    C{size} bytes does not fit, and the usage of every limited mailbox read.
    """
    found: dict[int, MailError] = {}
    seen: list[tuple[LocalMailbox, Usage]] = []
    read: dict[str, tuple[Usage, Any]] = {}  # each Maildir scanned once per message
    for index, recipient in enumerate(recipients):
        error = await over_quota(quota, recipient, size, seen, read)
        if error is not None:
            found[index] = error
    return found, seen


async def warn(quota: IQuota | None, seen: Sequence[tuple[LocalMailbox, Usage]], delivered: Sequence[Recipient],
               size: int) -> None:
    """After a delivery: each delivered mailbox that crossed its warning level gets its notice (failures logged)."""
    if quota is None:
        return
    maildirs = {d.maildir for r in delivered for d in r.destinations if isinstance(d, LocalMailbox)}
    done: set[str] = set()
    for destination, before in seen:
        if destination.maildir in maildirs and destination.maildir not in done:
            done.add(destination.maildir)
            try:
                await quota.warn(destination.user, destination.maildir, before, size)
            except Exception:  # the mail itself is delivered: a failed notice is not the client's problem
                log.failure("quota: warning for {user} failed", user=destination.user)
