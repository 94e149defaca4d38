"""
DNSBL/DNSWL scoring over twisted.names, as Postfix's postscreen does it.

L{DnsblScorer.score} asks every list of C{postscreen_dnsbl_sites} at once
(one A query per distinct domain), waits at most C{postscreen_dnsbl_timeout},
and sums the weights of the entries whose reply filter matches
(L{mailserver.policy.dnsbl_sites}).  A list that fails to answer (time-out,
SERVFAIL) counts as "not listed", as in Postfix, and is named in
C{Result.failed}.  L{log_line} formats the Postfix-style reject line.
The resolver and clock are injected.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.names import dns, error

from mailserver.errors import MailError
from mailserver.policy.dnsbl_sites import Score, Site, parse_site, query_name, score

log = Logger()


@dataclass(frozen=True)
class Result:
    """The score, the A records found per list domain, and the lists that did not answer."""

    score: Score
    answers: dict[str, tuple[str, ...]]
    failed: tuple[str, ...]


class DnsblScorer:
    """Scores client addresses against C{sites} through C{resolver} (an IResolver)."""

    def __init__(
        self, sites: Sequence[Site], resolver: Any, clock: IReactorTime, timeout: float = 10.0
    ) -> None:
        self.sites = tuple(sites)
        self.resolver = resolver
        self.clock = clock
        self.timeout = timeout

    async def _lookup(self, name: str) -> tuple[str, ...] | None:
        """The A records of C{name}; () if it does not exist; None if the look-up failed."""
        d = self.resolver.lookupAddress(name, timeout=(self.timeout,))
        d.addTimeout(self.timeout, self.clock)
        try:
            answers, _, _ = await d
        except error.DNSNameError:  # NXDOMAIN: not listed
            return ()
        except (error.DomainError, error.DNSQueryTimeoutError, defer.TimeoutError):
            return None  # SERVFAIL, REFUSED, time-out...
        return tuple(record.payload.dottedQuad() for record in answers if record.type == dns.A)

    async def score(self, address: str) -> Result:
        """Query every list for C{address} (IPv4 or IPv6) and score it."""
        domains = list(dict.fromkeys(site.domain for site in self.sites))
        lookups = [
            defer.Deferred.fromCoroutine(self._lookup(query_name(address, domain)))
            for domain in domains
        ]
        results = await defer.gatherResults(lookups)
        answers = {d: r for d, r in zip(domains, results) if r}
        failed = tuple(d for d, r in zip(domains, results) if r is None)
        for domain in failed:
            log.info("dnsbl {domain}: no answer for {address}", domain=domain, address=address)
        return Result(score(self.sites, answers), answers, failed)


async def rbl_client(resolver: Any, clock: IReactorTime, entry: str, address: str,
                     timeout: float = 10.0) -> tuple[str, ...] | None:  # fmt: skip
    """
    C{reject_rbl_client domain[=filter]}: the matching A records (empty when
    not listed), or None when the list did not answer.
    """
    site = parse_site(entry, weighted=False)
    found = await DnsblScorer([site], resolver, clock, timeout)._lookup(query_name(address, site.domain))
    if found is None:
        return None
    return tuple(a for a in found if site.matches([a]))


def blocked(address: str, site: str) -> MailError:
    """Postfix's reply for a listed client (the text of C{reject_rbl_client} and postscreen)."""
    return MailError(554, "5.7.1", f"Service unavailable; Client host [{address}] blocked using {site}")
