"""
DMARC (RFC 7489): record parsing and alignment (pure), record discovery
(over L{DNSLookup}: synchronous when the answers are cached) and the
policy to apply.

Organizational domains come from the Public Suffix List shipped inside the
C{publicsuffixlist} package (no network at run time; upgrading the package
updates the list, see docs/internet.rst).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable, Iterable

from mailserver.mailauth import memo
from mailserver.mailauth.dns import DNSLookup, DNSTempError, Fetch, from_cache, resolved

POLICIES = ("none", "quarantine", "reject")


class DMARCRecordError(ValueError):
    pass


@dataclass(frozen=True)
class DMARCRecord:
    p: str
    sp: str | None = None
    adkim: str = "r"
    aspf: str = "r"
    pct: int = 100
    rua: tuple[str, ...] = ()

    def policy_for(self, subdomain: bool) -> str:
        return (self.sp or self.p) if subdomain else self.p


def parse_record(text: str) -> DMARCRecord:
    """RFC 7489 6.3: C{v=DMARC1} first, then tags; unknown tags ignored."""
    tags: dict[str, str] = {}
    parts = [part.strip() for part in text.split(";")]
    for index, part in enumerate(parts):
        if not part:
            continue
        name, sep, value = part.partition("=")
        name, value = name.strip().lower(), value.strip()
        if not sep:
            raise DMARCRecordError(f"bad tag {part!r}")
        if index == 0 and (name != "v" or value != "DMARC1"):
            raise DMARCRecordError("record does not start with v=DMARC1")
        tags.setdefault(name, value)
    rua = tuple(uri.strip() for uri in tags.get("rua", "").split(",") if uri.strip())
    p = tags.get("p", "").lower()
    if p not in POLICIES:
        # RFC 7489 6.6.3: a record with a bad or missing p= but a rua= acts as p=none.
        if rua:
            p = "none"
        else:
            raise DMARCRecordError(f"bad or missing p= ({tags.get('p')!r})")
    sp = tags.get("sp", "").lower() or None
    if sp is not None and sp not in POLICIES:
        sp = None
    adkim = tags.get("adkim", "r").lower()
    aspf = tags.get("aspf", "r").lower()
    try:
        pct = int(tags.get("pct", "100"))
    except ValueError:
        pct = 100
    return DMARCRecord(
        p=p, sp=sp, adkim=adkim if adkim in ("r", "s") else "r", aspf=aspf if aspf in ("r", "s") else "r",
        pct=min(max(pct, 0), 100), rua=rua,
    )


def select_record(texts: Iterable[str]) -> str | None:
    """The one C{v=DMARC1} TXT string; several or none mean no policy (RFC 7489 6.6.3)."""
    found = [text for text in texts if text.strip().startswith("v=DMARC1")]
    return found[0] if len(found) == 1 else None


_psl = None


def _organizational_domain(domain: str) -> str:
    global _psl
    if _psl is None:
        from publicsuffixlist import PublicSuffixList

        _psl = PublicSuffixList()
    domain = domain.rstrip(".").lower()
    return _psl.privatesuffix(domain) or domain


#: RFC 7489 3.2: the public suffix plus one label (the domain itself when it is a suffix); kept per domain.
organizational_domain = memo.by_text(_organizational_domain, maxsize=4096, longest=255)
#: L{parse_record}, each record text parsed once.
parse_cached = memo.by_text(parse_record)


def _aligned(identifier: str, from_domain: str, mode: str) -> bool:
    identifier, from_domain = identifier.rstrip(".").lower(), from_domain.rstrip(".").lower()
    if not identifier or not from_domain:
        return False
    if mode == "s":
        return identifier == from_domain
    return organizational_domain(identifier) == organizational_domain(from_domain)


#: Identifier alignment (RFC 7489 3.1), strict (C{mode} "s") or relaxed; kept per (identifier, From domain, mode).
aligned = memo.by_texts(_aligned, maxsize=4096, longest=512)


@dataclass(frozen=True)
class DMARCResult:
    result: str  # pass, fail, none, temperror, permerror
    from_domain: str = ""
    policy: str = "none"  # the policy published (p= or sp=) when there is a record
    disposition: str = "none"  # after pct: none, quarantine, reject
    record: DMARCRecord | None = None
    aligned_with: tuple[str, ...] = field(default=())  # "dkim:d", "spf:d"
    reason: str = ""


def find_record_with(fetch: Fetch, from_domain: str) -> tuple[DMARCRecord | None, bool]:
    """
    (record, found at the organizational domain rather than the From domain
    itself), every answer from C{fetch} (raises its L{mailserver.mailauth.dns.NotCached}).
    """
    organizational = organizational_domain(from_domain)
    for domain, at_org in ((from_domain, False), (organizational, True)):
        if at_org and domain == from_domain:
            break
        text = select_record(fetch("txt", f"_dmarc.{domain}"))
        if text is not None:
            try:
                return parse_cached(text), at_org
            except DMARCRecordError:
                continue
    return None, False


def _unsampled(result: DMARCResult) -> bool:
    """True if L{DMARCEvaluator.evaluate_with} gave C{result} without drawing a pct= sample."""
    return not (result.result == "fail" and result.record is not None and result.record.pct < 100)


class DMARCEvaluator:
    """
    Find the policy and apply alignment to the SPF and DKIM results:
    L{evaluate_cached} when the answer cache holds the records needed
    (synchronous), else L{evaluate}; both run the same evaluation.
    """

    def __init__(self, lookup: DNSLookup, sample: Callable[[], float] = random.random) -> None:
        self.lookup = lookup
        self.sample = sample

    async def find_record(self, from_domain: str) -> tuple[DMARCRecord | None, bool]:
        """(record, found at the organizational domain rather than the From domain itself)."""
        return await resolved(self.lookup, lambda fetch: find_record_with(fetch, from_domain))

    async def evaluate(
        self,
        from_domains: list[str],
        spf: tuple[str, str],
        dkim: Iterable[tuple[str, str]],
    ) -> DMARCResult:
        """
        @param from_domains: the RFC 5322 From domains (exactly one is needed).
        @param spf: (result, domain) of the SPF check (MAIL FROM, or HELO for the null sender).
        @param dkim: (result, d=) of each signature.
        """
        dkim = list(dkim)
        return await resolved(self.lookup, lambda fetch: self.evaluate_with(fetch, from_domains, spf, dkim))

    def evaluate_cached(self, from_domains: list[str], spf: tuple[str, str],
                        dkim: list[tuple[str, str]]) -> DMARCResult | None:
        """L{evaluate}'s result when the records it needs are in the answer cache, else None (no query)."""
        # Kept while its records are cached, unless it depended on the pct= sample.
        return from_cache(self.lookup, lambda fetch: self.evaluate_with(fetch, from_domains, spf, dkim),
                          ("dmarc", tuple(from_domains), spf, tuple(dkim)), _unsampled)

    def evaluate_with(self, fetch: Fetch, from_domains: list[str], spf: tuple[str, str],
                      dkim: list[tuple[str, str]]) -> DMARCResult:
        """L{evaluate} with every answer from C{fetch} (raises its L{mailserver.mailauth.dns.NotCached})."""
        if len(from_domains) != 1 or not from_domains[0]:
            return DMARCResult("permerror", reason=f"{len(from_domains)} From domains")
        from_domain = from_domains[0]
        try:
            record, at_org = find_record_with(fetch, from_domain)
        except DNSTempError as error:
            return DMARCResult("temperror", from_domain, reason=str(error))
        adkim = record.adkim if record else "r"
        aspf = record.aspf if record else "r"
        passes = tuple(
            f"dkim:{domain}" for result, domain in dkim if result == "pass" and aligned(domain, from_domain, adkim)
        ) + ((f"spf:{spf[1]}",) if spf[0] == "pass" and aligned(spf[1], from_domain, aspf) else ())
        if record is None:
            return DMARCResult("none", from_domain, aligned_with=passes, reason="no DMARC record")
        policy = record.policy_for(subdomain=at_org)
        if passes:
            return DMARCResult("pass", from_domain, policy, "none", record, passes)
        disposition = policy
        if record.pct < 100 and self.sample() * 100 >= record.pct:
            # Not sampled: one step softer (RFC 7489 6.6.4).
            disposition = {"reject": "quarantine", "quarantine": "none"}.get(policy, "none")
        return DMARCResult("fail", from_domain, policy, disposition, record, (), "no aligned pass")
