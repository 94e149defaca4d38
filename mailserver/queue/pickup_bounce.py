"""
Local submissions that cannot be delivered come back to their sender.

Postfix's pickup hands a sendmail message to the cleanup and queue
managers, and a recipient that does not exist gets the sender a bounce.
L{PickupDelivery} is the C{inject} of L{mailserver.queue.pickup.PickupService}
doing the same: it delivers to the recipients the pipeline accepts and
sends an RFC 3464 DSN (L{mailserver.queue.bounce}) for those refused for
good, to the sender (to postmaster for a null sender).  Only a temporary
refusal (nothing delivered yet) reaches the pickup service, which tries the
file again later; a file is set aside in C{maildrop/corrupt/} only when it
cannot be parsed.
"""

from __future__ import annotations

from typing import Callable, Protocol, Sequence

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from mailserver.errors import MailError
from mailserver.queue.bounce import FAILED, RecipientReport, build_dsn


class Outcome(Protocol):
    """What L{mailserver.delivery.inject.Injector.inject_reporting} returns."""

    queue_id: str
    delivered: tuple[str, ...]
    refused: tuple[tuple[str, MailError], ...]


InjectReporting = Callable[[str, Sequence[str], bytes], Deferred]
"""C{inject_reporting(sender, recipients, message) -> Deferred[Outcome]}."""
InjectBounce = Callable[[str, Sequence[str], bytes], Deferred]
"""C{inject_bounce("", [to], dsn) -> Deferred}: deliver a DSN without content checks."""


class PickupDelivery:
    """
    C{inject} for the pickup service: deliver, and bounce what is refused.

    @param myhostname: the DSN's reporting MTA.
    @param postmaster: who gets the report when the sender is null.
    """

    log = Logger()

    def __init__(
        self,
        inject_reporting: InjectReporting,
        inject_bounce: InjectBounce,
        clock: IReactorTime,
        myhostname: str,
        postmaster: str,
    ) -> None:
        self._inject_reporting = inject_reporting
        self._inject_bounce = inject_bounce
        self._clock = clock
        self.myhostname = myhostname
        self.postmaster = postmaster

    def __call__(self, sender: str, recipients: list, message: bytes, extract_recipients: bool) -> Deferred:
        return Deferred.fromCoroutine(self._deliver(sender, recipients, message))

    async def _deliver(self, sender: str, recipients: list, message: bytes) -> Outcome:
        arrival = self._clock.seconds()
        outcome: Outcome = await self._inject_reporting(sender, recipients, message)
        if outcome.refused:
            await self._bounce(outcome, sender, message, arrival)
        return outcome

    async def _bounce(self, outcome: Outcome, sender: str, message: bytes, arrival: float) -> None:
        """The DSN to the sender; to postmaster if the sender is null or refuses it for good."""
        refused = ", ".join(f"<{r}>" for r, _ in outcome.refused)
        reports = [
            RecipientReport(
                recipient=recipient,
                action=FAILED,
                status=error.enhanced if error.enhanced[:2] == "5." else "5.0.0",
                text=f"local delivery refused: {error.reply()}",
                diagnostic=f"{error.code} {error.reply()}",
            )
            for recipient, error in outcome.refused
        ]
        targets = [sender] if sender else []
        if all(self.postmaster.lower() != r.lower() for r in [sender, *(r for r, _ in outcome.refused)]):
            targets.append(self.postmaster)  # never a report about postmaster to postmaster: no loop
        why = "no one to report to"
        for to in targets:
            dsn = build_dsn(
                reporting_mta=self.myhostname,
                queue_id=outcome.queue_id,
                sender=sender,
                to=to,
                arrival=arrival,
                now=self._clock.seconds(),
                reports=reports,
                original=message,
                postmaster_copy=to != sender,
            )
            try:
                await self._inject_bounce("", [to], dsn)
            except MailError as error:
                if error.temporary and not outcome.delivered:
                    raise  # nothing delivered: the whole file is tried again later
                why = f"the bounce to <{to}> was refused: {error.reply()}"
                continue
            self.log.info("{queue_id}: sender non-delivery notification to <{to}> for {rcpts}",
                          queue_id=outcome.queue_id, to=to, rcpts=refused)
            return
        self.log.error("{queue_id}: undeliverable to {rcpts}, and {why}; message discarded",
                       queue_id=outcome.queue_id, rcpts=refused, why=why)
