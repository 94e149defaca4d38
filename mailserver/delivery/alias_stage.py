"""Stage: expand aliases and virtual aliases at RCPT, then route every target."""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from zope.interface import implementer

from mailserver.address import Address
from mailserver.delivery.aliases import AliasExpander, Expansion
from mailserver.envelope import Destination, Envelope, RemoteAddress, Verdict
from mailserver.delivery.local_mailboxes import LocalMailboxes
from mailserver.errors import MailError
from mailserver.interfaces import IRecipientStage


@implementer(IRecipientStage)
class AliasStage:
    """
    C{alias_maps} and C{virtual_alias_maps}: an address that a table expands
    is accepted with the final destinations of all its targets; one whose
    target cannot be delivered (an unknown local user, a remote address
    without an outbound queue) is refused at RCPT with the reason.  An
    address no table knows goes on to the next stage.  Expansion reads
    C{:include:} files, so it runs in the thread pool.
    """

    name = "alias_maps"

    def __init__(
        self,
        expander: AliasExpander,
        router: LocalMailboxes,
        is_local_domain: Callable[[str], bool],
        queue_available: bool,
        delimiters: str,
        reactor: Any,
    ) -> None:
        self.expander = expander
        self.router = router
        self.is_local_domain = is_local_domain
        self.queue_available = queue_available
        self.delimiters = delimiters
        self.reactor = reactor

    def check(self, envelope: Envelope, recipient: Address) -> Deferred[Verdict]:
        d = deferToThreadPool(self.reactor, self.reactor.getThreadPool(), self._expand, recipient)
        return d.addCallback(self._route, recipient)

    def _expand(self, recipient: Address) -> Expansion:
        """
        Expand C{recipient}; an unaliased local C{MAILER-DAEMON} expands as
        C{postmaster} (as Postfix's stock C{MAILER-DAEMON: postmaster} alias
        does), so that a configured postmaster alias gets its mail too.
        """
        expansion = self.expander.expand(recipient, self.delimiters)
        if (
            not expansion.expanded
            and recipient.base(self.delimiters).local.lower() == "mailer-daemon"
            and self.is_local_domain(recipient.domain)
        ):
            postmaster = self.expander.expand(Address("postmaster", recipient.domain), self.delimiters)
            if postmaster.expanded:
                return postmaster
        return expansion

    def _route(self, expansion: Expansion, recipient: Address) -> Verdict:
        if not expansion.expanded:
            return Verdict.proceed()
        destinations: list[Destination] = []
        for target in expansion.targets:
            if not isinstance(target, Address):
                destinations.append(target)
            elif self.is_local_domain(target.domain):
                mailbox = self.router.resolve(target)
                if mailbox is None:
                    return Verdict.reject(
                        MailError(550, "5.1.1", f"Recipient address rejected: alias target <{target}> is unknown")
                    )
                destinations.append(mailbox)
            elif self.queue_available:
                destinations.append(RemoteAddress(target))
            else:
                return Verdict.reject(
                    MailError(550, "5.1.2", f"Recipient address rejected: alias target <{target}> is remote "
                              "and outbound delivery is not configured")
                )
        return Verdict.accept(*destinations, owner=expansion.owner)
