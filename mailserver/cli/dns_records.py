"""
The records C{mailserver check --dns} looks up, one check per record kind:
MX (and the hosts' addresses), SPF, DMARC, MTA-STS (and its policy),
TLS-RPT, and this host's own A/AAAA, reverse DNS and HELO SPF.

Each check returns L{Finding}s: OK, WARN or FAIL, the record as found and,
when it is not OK, the record to publish instead.  Look-ups go through
L{DNSLookup} (twisted.names); a look-up that fails or times out is a FAIL
that says so (L{guarded}).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Awaitable, Callable, Sequence

from mailserver.mailauth import dmarc, mta_sts, spf_record, tlsrpt
from mailserver.mailauth.dkim_keys import txt_zone_line
from mailserver.mailauth.dns import DNSLookup, DNSTempError
from mailserver.mailauth.spf import SPFChecker

OK, WARN, FAIL = "OK", "WARN", "FAIL"
#: MX hosts looked at per domain (RFC 7208 allows 10 for SPF; nobody needs more).
MAX_MX_HOSTS = 10

Fetch = Callable[[str], Awaitable[bytes]]


@dataclass(frozen=True)
class Finding:
    """One line of the report: C{FAIL SPF example.com: ...; publish: ...}."""

    status: str  # OK, WARN or FAIL
    kind: str  # MX, SPF, DKIM, DMARC, MTA-STS, TLS-RPT, HOST, PTR
    name: str  # the DNS name looked at
    message: str
    publish: str = ""  # what to publish (or serve) instead

    def __str__(self) -> str:
        text = f"{self.status:<4} {self.kind} {self.name}: {self.message}"
        return f"{text}; publish: {self.publish}" if self.publish else text


@dataclass(frozen=True)
class Site:
    """What the records must point at: C{myhostname} and, when known, the public address."""

    hostname: str
    address: str | None = None

    def address_line(self, name: str) -> str:
        """The A (or AAAA) record C{name} needs, with a placeholder when the address is unknown."""
        if self.address is None:
            return f"{name}. IN A <this host's public address>"
        kind = "AAAA" if ipaddress.ip_address(self.address).version == 6 else "A"
        return f"{name}. IN {kind} {self.address}"


async def guarded(kind: str, name: str, check: Awaitable[list[Finding]]) -> list[Finding]:
    """The check's findings, or one FAIL saying the look-up timed out or failed."""
    try:
        return await check
    except DNSTempError as error:
        how = "timed out" if "Timeout" in str(error) else "failed"
        return [Finding(FAIL, kind, name, f"DNS look-up {how} ({error}); the record could not be checked")]


def _quoted(texts: Sequence[str]) -> str:
    return ", ".join(f'"{text}"' for text in texts)


async def _addresses(lookup: DNSLookup, host: str) -> list[str]:
    return await lookup.a(host) + await lookup.aaaa(host)


# MX


async def check_mx(lookup: DNSLookup, domain: str, site: Site) -> tuple[list[Finding], list[str]]:
    """MX records exist, their hosts have addresses, one is C{myhostname}; also the MX host names."""
    publish = f"{domain}. IN MX 10 {site.hostname}."
    exchanges = await lookup.mx(domain)
    if not exchanges:
        return [Finding(FAIL, "MX", domain, "no MX record: mail for the domain has nowhere to go", publish)], []
    hosts = [host.rstrip(".").lower() for _, host in exchanges[:MAX_MX_HOSTS]]
    if hosts == [""]:
        return [Finding(FAIL, "MX", domain, "null MX (RFC 7505): the domain accepts no mail", publish)], []
    described, unresolved = [], []
    for (preference, _), host in zip(exchanges, hosts):
        found = await _addresses(lookup, host)
        described.append(f"{preference} {host} ({', '.join(found) or 'no address'})")
        if not found:
            unresolved.append(host)
    text = "; ".join(described)
    if unresolved:
        return [Finding(FAIL, "MX", domain, f"{text}: {unresolved[0]} has no A or AAAA record",
                        site.address_line(unresolved[0]))], hosts
    if site.hostname not in hosts:
        return [Finding(WARN, "MX", domain, f"{text}: none is myhostname ({site.hostname})", publish)], hosts
    return [Finding(OK, "MX", domain, text)], hosts


# SPF


def _spf_fixed(text: str, address: str | None, add_address: bool) -> str:
    """C{text} with C{-all} as its final term and, if asked, C{ip4:}/C{ip6:} the address first."""
    terms = text.split()
    for index, term in enumerate(terms):
        if term.lower().lstrip("+-~?") == "all":
            if term[:1] in ("+", "?") or term.lower() == "all":
                terms[index] = "-all"
            break
    else:
        if not any(term.lower().startswith("redirect=") for term in terms):
            terms.append("-all")
    if add_address and address is not None:
        terms.insert(1, f"ip{ipaddress.ip_address(address).version}:{address}")
    return " ".join(terms)


async def check_spf(lookup: DNSLookup, name: str, site: Site, suggestion: str, missing: str = FAIL) -> list[Finding]:
    """
    One C{v=spf1} record that parses, ends in C{-all} or C{~all}, and (with
    C{site.address}) passes for the address.  C{missing}: the status of no
    record (a WARN for the HELO name).
    """
    texts = await lookup.txt(name)
    found = [text for text in texts if text.lower().startswith("v=spf1")]
    publish = txt_zone_line(name, suggestion)
    try:
        text = spf_record.select_record(texts)
    except spf_record.SPFPermError as error:
        return [Finding(FAIL, "SPF", name, f"{_quoted(found)}: {error} (permerror): publish one", publish)]
    if text is None:
        return [Finding(missing, "SPF", name, "no v=spf1 record: receivers cannot tell who may send", publish)]
    try:
        record = spf_record.parse_record(text)
    except spf_record.SPFPermError as error:
        return [Finding(FAIL, "SPF", name, f'"{text}": {error} (permerror)', publish)]
    warnings = []
    final = next((d for d in record.directives if d.mechanism == "all"), None)
    if final is None and record.redirect is None:
        warnings.append("no all: everyone else gets neutral")
    elif final is not None and final.qualifier in ("pass", "neutral"):
        sign = "+" if final.qualifier == "pass" else "?"
        warnings.append(f"{sign}all: {'anyone may send' if sign == '+' else 'everyone else gets neutral'}")
    if site.address is None:
        verdict = "syntax only (--address IP checks that this server may send)"
    else:
        result = await SPFChecker(lookup).check_host(site.address, name, f"postmaster@{name}", site.hostname)
        if result.result == "temperror":
            raise DNSTempError(result.reason)
        if result.result != "pass":
            # A broken record (permerror) needs rewriting; any other result, the address added.
            fixed = publish if result.result == "permerror" else \
                txt_zone_line(name, _spf_fixed(text, site.address, add_address=True))
            return [Finding(FAIL, "SPF", name, f'"{text}": {result.result} for {site.address} ({result.reason})',
                            fixed)]
        verdict = f"pass for {site.address}"
    if warnings:
        fixed = txt_zone_line(name, _spf_fixed(text, site.address, add_address=False))
        return [Finding(WARN, "SPF", name, f'"{text}": {"; ".join(warnings)}', fixed)]
    return [Finding(OK, "SPF", name, f'"{text}": {verdict}')]


# DMARC

_P_NONE = re.compile(r"(;\s*)p=none\b", re.IGNORECASE)


def _dmarc_summary(record: dmarc.DMARCRecord) -> str:
    parts = [f"p={record.p}"] + ([f"sp={record.sp}"] if record.sp else []) + \
        ([f"pct={record.pct}"] if record.pct != 100 else [])
    return ", ".join(parts) + (f", reports to {','.join(record.rua)}" if record.rua else ", no rua (no reports)")


async def check_dmarc(lookup: DNSLookup, domain: str) -> list[Finding]:
    """C{_dmarc.DOMAIN} (or the organizational domain's) exists, parses; WARN on C{p=none}."""
    name = f"_dmarc.{domain}"
    suggestion = f"v=DMARC1; p=none; rua=mailto:postmaster@{domain}"
    found = [text for text in await lookup.txt(name) if text.strip().startswith("v=DMARC1")]
    inherited = ""
    if not found:
        organizational = dmarc.organizational_domain(domain)
        if organizational != domain:
            found = [t for t in await lookup.txt(f"_dmarc.{organizational}") if t.strip().startswith("v=DMARC1")]
            inherited = f" (from _dmarc.{organizational}, which covers {domain})"
    if not found:
        return [Finding(FAIL, "DMARC", name, "no v=DMARC1 record", txt_zone_line(name, suggestion))]
    if len(found) > 1:
        return [Finding(FAIL, "DMARC", name, f"{_quoted(found)}{inherited}: {len(found)} records, receivers "
                        "ignore them all", txt_zone_line(name, suggestion))]
    text = found[0]
    try:
        record = dmarc.parse_record(text)
    except dmarc.DMARCRecordError as error:
        return [Finding(FAIL, "DMARC", name, f'"{text}"{inherited}: {error}', txt_zone_line(name, suggestion))]
    policy = (record.sp or record.p) if inherited else record.p
    summary = f'"{text}"{inherited}: {_dmarc_summary(record)}'
    if policy == "none":
        stricter = _P_NONE.sub(r"\1p=quarantine", text, count=1) if _P_NONE.search(text) else suggestion
        return [Finding(WARN, "DMARC", name, f"{summary}; policy none: failing mail is delivered as usual "
                        "(quarantine once the reports show your mail passes)", txt_zone_line(name, stricter))]
    return [Finding(OK, "DMARC", name, f"{summary}; policy for {domain}: {policy}" if inherited else summary)]


# MTA-STS and TLS-RPT


def policy_text(mx_hosts: Sequence[str], site: Site) -> str:
    """The policy file to serve, on one line (C{\\n} for the line ends)."""
    lines = ["version: STSv1", "mode: testing"] + [f"mx: {host}" for host in mx_hosts or [site.hostname]]
    return "\\n".join(lines + ["max_age: 86400"])


async def check_mta_sts(lookup: DNSLookup, domain: str, mx_hosts: Sequence[str], site: Site,
                        fetch: Fetch | None, stamp: str) -> list[Finding]:
    """
    C{_mta-sts.DOMAIN} holds one C{v=STSv1; id=...}; with C{fetch}, the
    policy is fetched and its C{mx:} patterns cover every MX host.
    """
    name = f"_mta-sts.{domain}"
    publish = txt_zone_line(name, f"v=STSv1; id={stamp}")
    texts = await lookup.txt(name)
    found = [text for text in texts if text.strip().startswith("v=STSv1")]
    if not found:
        return [Finding(WARN, "MTA-STS", name, "no v=STSv1 record (optional): senders may fall back to plain "
                        "text", publish)]
    identifier = mta_sts.parse_record(texts)
    if identifier is None:
        why = f"{len(found)} records" if len(found) > 1 else "no valid id= (1 to 32 letters and digits)"
        return [Finding(FAIL, "MTA-STS", name, f"{_quoted(found)}: {why}", publish)]
    if fetch is None:
        return [Finding(OK, "MTA-STS", name, f'"{found[0]}": policy not fetched (--fetch-policy fetches it)')]
    url = f"https://mta-sts.{domain}/.well-known/mta-sts.txt"
    serve = f"serve at {url}: {policy_text(mx_hosts, site)}"
    try:
        policy = mta_sts.parse_policy((await fetch(url)).decode("utf-8"))
    except Exception as error:  # any HTTP, TLS or parse failure is what the report is for
        return [Finding(FAIL, "MTA-STS", name, f'"{found[0]}": policy not usable: {error}', serve)]
    uncovered = [host for host in mx_hosts if not policy.matches(host)]
    summary = f'"{found[0]}": policy mode {policy.mode}, mx {", ".join(policy.mx) or "none"}'
    if policy.mode == "none":
        return [Finding(WARN, "MTA-STS", name, f"{summary}: mode none withdraws the policy", serve)]
    if uncovered:
        status = FAIL if policy.mode == "enforce" else WARN
        return [Finding(status, "MTA-STS", name, f"{summary}: MX {', '.join(uncovered)} not covered"
                        + (" (senders will not deliver there)" if status == FAIL else ""), serve)]
    return [Finding(OK, "MTA-STS", name, f"{summary}, covers every MX host")]


async def check_tlsrpt(lookup: DNSLookup, domain: str) -> list[Finding]:
    """C{_smtp._tls.DOMAIN} holds one C{v=TLSRPTv1; rua=...}."""
    name = f"_smtp._tls.{domain}"
    publish = txt_zone_line(name, f"v=TLSRPTv1; rua=mailto:postmaster@{domain}")
    found = tlsrpt.select_records(await lookup.txt(name))
    if not found:
        return [Finding(WARN, "TLS-RPT", name, "no v=TLSRPTv1 record (optional): no reports of TLS failures",
                        publish)]
    if len(found) > 1:
        return [Finding(FAIL, "TLS-RPT", name, f"{_quoted(found)}: {len(found)} records", publish)]
    try:
        uris = tlsrpt.parse_record(found[0])
    except tlsrpt.TLSRPTRecordError as error:
        return [Finding(FAIL, "TLS-RPT", name, f'"{found[0]}": {error}', publish)]
    return [Finding(OK, "TLS-RPT", name, f'"{found[0]}": reports to {", ".join(uris)}')]


# This host


async def check_host(lookup: DNSLookup, site: Site) -> list[Finding]:
    """C{myhostname} resolves (to the address, when known) and the address's PTR names it."""
    host = site.hostname
    found = await _addresses(lookup, host)
    if not found:
        findings = [Finding(FAIL, "HOST", host, "myhostname has no A or AAAA record", site.address_line(host))]
    elif site.address is not None and site.address not in found:
        findings = [Finding(WARN, "HOST", host, f"resolves to {', '.join(found)}, not {site.address}",
                            site.address_line(host))]
    else:
        findings = [Finding(OK, "HOST", host, f"resolves to {', '.join(found)}")]
    if site.address is not None:
        reverse = ipaddress.ip_address(site.address).reverse_pointer
        names = [name.rstrip(".").lower() for name in await lookup.ptr(site.address)]
        publish = f"{reverse}. IN PTR {host}. (set at your hosting provider)"
        if host in names:
            findings.append(Finding(OK, "PTR", reverse, f"{site.address} is {host}"))
        else:
            findings.append(Finding(WARN, "PTR", reverse, f"{site.address} is {', '.join(names) or 'nameless'}, "
                                    f"not myhostname: some receivers refuse such mail", publish))
    return findings
