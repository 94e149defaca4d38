"""Stage: recipient syntax, relay hacks and qualification of bare names."""

from __future__ import annotations

from dataclasses import dataclass

from zope.interface import implementer

from mailserver.address import Address
from mailserver.envelope import Envelope, Verdict
from mailserver.errors import MailError
from mailserver.interfaces import IRecipientStage

RELAY_DENIED = MailError(554, "5.7.1", "Relay access denied")


@implementer(IRecipientStage)
@dataclass(frozen=True)
class RecipientSyntax:
    """
    Refuse C{%}/C{!}/C{@} routing in local parts (the percent hack is a
    relay attempt) and qualify bare local names with C{myorigin}.
    """

    myorigin: str
    name: str = "recipient_syntax"

    def check(self, envelope: Envelope, recipient: Address) -> Verdict:
        if recipient.has_routing_characters:
            return Verdict.reject(RELAY_DENIED)
        if not recipient.domain:
            return Verdict.proceed(recipient.with_domain(self.myorigin))
        return Verdict.proceed()
