"""
Recipient stages for the built-in spam checks, in Postfix's order after
C{permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination}:
clients in C{mynetworks}, SASL users and local submissions skip them.

L{DnsblStage}: postscreen's DNSBL/DNSWL score (C{postscreen_dnsbl_sites})
applied at RCPT, as postscreen with C{postscreen_dnsbl_action = enforce}
does (every recipient refused with 554 5.7.1).  The score of a client
address is computed once and kept for C{ttl} seconds (bounded).
L{GreylistStage}: Postgrey's triplets; a DNSWL-allowlisted client skips it.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from mailserver.address import Address
from mailserver.envelope import Client, Envelope, Verdict
from mailserver.interfaces import IRecipientStage
from mailserver.policy.dnsbl import DnsblScorer, blocked

log = Logger(namespace="mailserver.policy")

MAX_SCORES = 10_000


@implementer(IRecipientStage)
class DnsblStage:
    """Refuse listed clients; remember allowlisted ones (C{allowlisted}) for the later stages."""

    name = "postscreen_dnsbl"

    def __init__(self, scorer: DnsblScorer, threshold: int, allowlist_threshold: int,
                 exempt: Callable[[Client], bool], clock: Any, ttl: float = 3600.0) -> None:  # fmt: skip
        self.scorer = scorer
        self.threshold = threshold
        self.allowlist_threshold = allowlist_threshold
        self.exempt = exempt
        self.clock = clock
        self.ttl = ttl
        self._scores: OrderedDict[str, tuple[float, Any]] = OrderedDict()

    def _cached(self, ip: str) -> Any:
        entry = self._scores.get(ip)
        if entry is not None and entry[0] > self.clock.seconds():
            return entry[1]
        return None

    async def _score(self, ip: str) -> Any:
        score = self._cached(ip)
        if score is None:
            score = (await self.scorer.score(ip)).score
            self._scores[ip] = (self.clock.seconds() + self.ttl, score)
            self._scores.move_to_end(ip)
            while len(self._scores) > MAX_SCORES:  # bounded: one eviction per new address
                self._scores.popitem(last=False)
        return score

    def allowlisted(self, client: Client) -> bool:
        """The client's known score is at or below a negative C{postscreen_dnsbl_allowlist_threshold}."""
        score = self._cached(client.ip)
        return score is not None and score.allowlisted(self.allowlist_threshold)

    def check(self, envelope: Envelope, recipient: Address) -> Verdict | Deferred:
        if self.exempt(envelope.client):
            return Verdict.proceed()
        return Deferred.fromCoroutine(self._check(envelope.client.ip))

    async def _check(self, ip: str) -> Verdict:
        score = await self._score(ip)
        if score.listed(self.threshold):
            sites = ", ".join(site.domain for site in score.matched if site.weight > 0)
            return Verdict.reject(blocked(ip, sites or "DNSBL"))
        return Verdict.proceed()


@implementer(IRecipientStage)
class GreylistStage:
    """450 for a new (client network, sender, recipient) triplet (L{mailserver.policy.greylist.Greylist})."""

    name = "greylisting"

    def __init__(self, greylist: Any, exempt: Callable[[Client], bool]) -> None:
        self.greylist = greylist
        self.exempt = exempt

    def check(self, envelope: Envelope, recipient: Address) -> Verdict:
        if self.exempt(envelope.client):
            return Verdict.proceed()
        sender = str(envelope.sender) if envelope.sender else ""
        decision = self.greylist.check(envelope.client.ip, sender, str(recipient))
        error = decision.error(str(recipient))
        return Verdict.proceed() if error is None else Verdict.reject(error)
