"""
SPF evaluation (RFC 7208 check_host()) over L{DNSLookup}: synchronous when
the answer cache holds every answer needed, else asynchronous.

The limits of RFC 7208 4.6.4 hold for one evaluation, includes and
redirects counted together: 10 look-up terms, 2 void look-ups (NXDOMAIN or
empty), 10 MX names per C{mx}, 10 PTR names per C{ptr}.  Results: pass,
fail, softfail, neutral, none, temperror, permerror.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Callable, Union

from mailserver.mailauth import memo
from mailserver.mailauth.dns import DNSLookup, DNSTempError, Fetch, from_cache, resolved
from mailserver.mailauth.spf_record import (
    Directive,
    MacroContext,
    SPFPermError,
    expand,
    parse_record,
    select_record,
    valid_domain,
)

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]

MAX_LOOKUPS = 10
MAX_VOID_LOOKUPS = 2
MAX_MX_NAMES = 10
MAX_PTR_NAMES = 10

#: A record's text is parsed once (a sender domain's record comes with every message it sends).
parse_cached = memo.by_text(parse_record)


@dataclass(frozen=True)
class SPFResult:
    result: str
    domain: str  # the domain checked (MAIL FROM's, or HELO's)
    scope: str  # "mailfrom" or "helo"
    reason: str = ""
    explanation: str = ""


class _TempError(Exception):
    pass


class _Evaluation:
    """
    State of one check_host() call tree: the shared look-up counters.
    Synchronous over C{fetch} (L{mailserver.mailauth.dns.from_cache}, L{resolved}).
    """

    def __init__(self, fetch: Fetch, address: IPAddress, sender: str, helo: str) -> None:
        self.fetch = fetch
        self.ip = address
        self.sender = sender
        self.helo = helo
        self.lookups = 0
        self.voids = 0

    def count(self) -> None:
        self.lookups += 1
        if self.lookups > MAX_LOOKUPS:
            raise SPFPermError(f"more than {MAX_LOOKUPS} DNS look-up terms")

    def _void_checked(self, answers: list) -> list:
        if not answers:
            self.voids += 1
            if self.voids > MAX_VOID_LOOKUPS:
                raise SPFPermError(f"more than {MAX_VOID_LOOKUPS} void look-ups")
        return answers

    def answers(self, kind: str, name: str) -> list:
        """The answers, a failure being a temperror."""
        try:
            return self.fetch(kind, name)
        except DNSTempError as error:
            raise _TempError(str(error)) from None

    def query(self, kind: str, name: str) -> list:
        """L{answers}, counted as a void look-up when there are none."""
        return self._void_checked(self.answers(kind, name))

    def context(self, domain: str) -> MacroContext:
        return MacroContext(sender=self.sender, domain=domain, ip=str(self.ip), helo=self.helo)

    def target(self, directive: Directive, domain: str) -> str:
        return expand(directive.domain_spec, self.context(domain)) if directive.domain_spec else domain

    def check_host(self, domain: str, depth: int = 0) -> tuple[str, str]:
        """(result, reason) for C{domain}: the recursive core."""
        if depth > MAX_LOOKUPS:
            raise SPFPermError("include/redirect nesting too deep")
        if not valid_domain(domain):
            return "none", f"{domain!r} is not a domain"
        text = select_record(self.answers("txt", domain))
        if text is None:
            return "none", f"no SPF record at {domain}"
        record = parse_cached(text)
        for directive in record.directives:
            if self.matches(directive, domain, depth):
                return directive.qualifier, f"{domain}: matched {directive.mechanism}"
        if record.redirect is not None:
            self.count()
            target = expand(record.redirect, self.context(domain))
            result, reason = self.check_host(target, depth + 1)
            if result == "none":
                raise SPFPermError(f"redirect={target} has no SPF record")
            return result, reason
        return "neutral", f"{domain}: no mechanism matched"

    def matches(self, directive: Directive, domain: str, depth: int) -> bool:
        mechanism = directive.mechanism
        if mechanism == "all":
            return True
        if mechanism in ("ip4", "ip6"):
            return directive.network is not None and self.ip.version == directive.network.version \
                and self.ip in directive.network
        self.count()
        target = self.target(directive, domain)
        if mechanism == "include":
            result, _reason = self.check_host(target, depth + 1)
            if result == "temperror":
                raise _TempError(f"include:{target}")
            if result in ("permerror", "none"):
                raise SPFPermError(f"include:{target} gave {result}")
            return result == "pass"
        if mechanism == "a":
            return self.address_match(target, directive)
        if mechanism == "mx":
            exchanges = self.query("mx", target)
            if len(exchanges) > MAX_MX_NAMES:
                raise SPFPermError(f"more than {MAX_MX_NAMES} MX names for {target}")
            for _preference, name in exchanges:
                if self.address_match(name, directive, count_void=False):
                    return True
            return False
        if mechanism == "exists":
            return bool(self.query("a", target))
        if mechanism == "ptr":
            return self.ptr_match(target)
        raise SPFPermError(f"unknown mechanism {mechanism}")  # pragma: no cover - parser refuses

    def address_match(self, name: str, directive: Directive, count_void: bool = True) -> bool:
        kind = "a" if self.ip.version == 4 else "aaaa"
        addresses = self.query(kind, name) if count_void else self.answers(kind, name)
        prefix = directive.cidr4 if self.ip.version == 4 else directive.cidr6
        for text in addresses:
            if self.ip in ipaddress.ip_network(f"{text}/{prefix}", strict=False):
                return True
        return False

    def ptr_match(self, target: str) -> bool:
        """RFC 7208 5.5 (its use is discouraged, but it must work): validated names under C{target}."""
        try:
            names = self.fetch("ptr", str(self.ip))[:MAX_PTR_NAMES]
        except DNSTempError:
            return False  # temperrors in ptr are "no match" (5.5)
        kind = "a" if self.ip.version == 4 else "aaaa"
        for name in names:
            try:
                addresses = self.fetch(kind, name)
            except DNSTempError:
                continue
            if str(self.ip) in addresses and (name == target or name.endswith("." + target)):
                return True
        return False


def _parse_address(ip: str) -> IPAddress:
    """The client's address, an IPv4-mapped IPv6 address as its IPv4 address."""
    address = ipaddress.ip_address(ip)
    if address.version == 6 and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


#: A client sends many messages: its address is parsed once.
_address = memo.by_text(_parse_address, longest=64)


class SPFChecker:
    """
    check_host() for MAIL FROM and HELO identities: L{check_cached} when
    every DNS answer needed is in the answer cache (synchronous), else
    L{check}; both run the same evaluation (L{_Evaluation}).
    """

    def __init__(self, lookup: DNSLookup | Any) -> None:
        self.lookup = lookup if isinstance(lookup, DNSLookup) else DNSLookup(lookup)

    @staticmethod
    def _evaluate(fetch: Fetch, address: IPAddress, domain: str, sender: str, helo: str, scope: str) -> SPFResult:
        evaluation = _Evaluation(fetch, address, sender, helo)
        try:
            result, reason = evaluation.check_host(domain)
        except _TempError as error:
            return SPFResult("temperror", domain, scope, str(error))
        except SPFPermError as error:
            return SPFResult("permerror", domain, scope, str(error))
        except (ValueError, UnicodeError) as error:  # any other malformed input: a result, not a traceback
            return SPFResult("permerror", domain, scope, f"{type(error).__name__}: {error}")
        return SPFResult(result, domain, scope, reason)

    def _evaluation(self, ip: str, domain: str, sender: str, helo: str, scope: str) -> Callable[[Fetch], SPFResult]:
        address = _address(ip)
        domain = domain.rstrip(".").lower()
        return lambda fetch: self._evaluate(fetch, address, domain, sender, helo, scope)

    async def check_host(self, ip: str, domain: str, sender: str, helo: str, scope: str = "mailfrom") -> SPFResult:
        return await resolved(self.lookup, self._evaluation(ip, domain, sender, helo, scope))

    @staticmethod
    def _identity(helo: str, mail_from: str) -> tuple[str, str, str]:
        """
        (domain, sender, scope): the MAIL FROM identity, or the HELO
        identity for the null sender (RFC 7208 2.4), as C{postmaster@helo}.
        """
        if mail_from and "@" in mail_from:
            local, _, domain = mail_from.rpartition("@")
            return domain, f"{local or 'postmaster'}@{domain}", "mailfrom"
        return helo, f"postmaster@{helo}", "helo"

    async def check(self, ip: str, helo: str, mail_from: str) -> SPFResult:
        """The SPF result for the client's MAIL FROM (or HELO) identity."""
        domain, sender, scope = self._identity(helo, mail_from)
        return await self.check_host(ip, domain, sender, helo, scope)

    def check_cached(self, ip: str, helo: str, mail_from: str) -> SPFResult | None:
        """L{check}'s result when every answer it needs is in the answer cache, else None (no query)."""
        domain, sender, scope = self._identity(helo, mail_from)
        # Kept while its answers are cached: a sender's messages from one client give the same result.
        return from_cache(self.lookup, self._evaluation(ip, domain, sender, helo, scope),
                          ("spf", ip, domain, sender, helo, scope))
