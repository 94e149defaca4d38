"""
What an end-of-DATA filter (L{mailserver.interfaces.IMessageFilter})
decides, and how the transaction applies it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from mailserver.errors import MailError
from mailserver.interfaces import IImmediateFilter
from mailserver.spooled import SpooledMessage


@dataclass(frozen=True)
class FilterResult:
    """
    The message after the filter (headers added or removed), and whether
    it is refused (C{error}) or goes to the recipients' junk folder
    (C{quarantine}: the reason, logged), is dropped (C{discard}) or goes to
    the hold area (C{hold}: the reason).
    """

    message: SpooledMessage
    error: MailError | None = None
    quarantine: str | None = None
    discard: bool = False
    hold: str | None = None


def skips(step: object, client: object) -> bool:
    """
    True if C{step} (an L{IMessageFilter} or L{ISenderCheck}) declares it
    has nothing to do for C{client}: a step with C{untrusted_only} set
    leaves mail its C{is_trusted(client)} vouches for alone, so no coroutine
    or Deferred is made for it.
    """
    return getattr(step, "untrusted_only", False) and step.is_trusted(client)  # type: ignore[attr-defined]


def content_work(checks: Sequence[object], filters: Sequence[object], client: object) -> tuple[bool, object | None]:
    """
    Whether C{client}'s mail is content-idle (no content check, and no
    end-of-DATA filter with work to do for it), and the one filter with work
    to do for its mail when there is no content check and that filter
    provides L{IImmediateFilter} (the transaction's quick path), else None.
    Each filter is asked once.
    """
    if checks:
        return False, None
    working = [step for step in filters if not skips(step, client)]
    quick = working[0] if len(working) == 1 and IImmediateFilter.providedBy(working[0]) else None
    return not working, quick
