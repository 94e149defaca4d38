"""
Pure: C{postscreen_dnsbl_sites} entries, DNSBL query names and scoring.

An entry is C{domain[=filter][*weight]} as in Postfix::

    zen.spamhaus.org*3
    b.barracudacentral.org=127.0.0.2*2
    zen.spamhaus.org=127.0.0.[2..11]*3
    list.dnswl.org=127.0.[0..255].[1;2;3]*-2

The filter matches the A records of the answer octet by octet: a number,
C{[a..b]} (a range) or C{[a;b;c]} (a list); without a filter any answer
matches.  The weight (default 1, negative for allowlists) is added once
per entry that matches.  C{reject_rbl_client} uses the same syntax without
a weight.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Iterable, Sequence

_ENTRY = re.compile(r"(?P<domain>[^=*\s]+)(?:=(?P<filter>[^*\s]+))?(?:\*(?P<weight>-?\d+))?\Z")
_OCTET = re.compile(r"\d{1,3}\Z")
_RANGE = re.compile(r"\[(\d{1,3})\.\.(\d{1,3})\]\Z")
_LIST = re.compile(r"\[(\d{1,3}(?:;\d{1,3})*)\]\Z")
_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)\Z")

Octets = tuple[frozenset[int], ...]


@dataclass(frozen=True)
class Site:
    """One DNSBL/DNSWL entry: where to ask, which answers count, and how much."""

    domain: str
    filter: Octets | None = None
    weight: int = 1
    text: str = ""

    def matches(self, answers: Iterable[str]) -> bool:
        """Whether any A record (dotted quad) passes the filter."""
        for answer in answers:
            if self.filter is None:
                return True
            octets = answer.split(".")
            if len(octets) == 4 and all(
                o.isdigit() and int(o) in allowed for o, allowed in zip(octets, self.filter)
            ):
                return True
        return False


def _octet_set(text: str, entry: str) -> frozenset[int]:
    values: list[int]
    if _OCTET.match(text):
        values = [int(text)]
    elif match := _RANGE.match(text):
        low, high = int(match.group(1)), int(match.group(2))
        if low > high:
            raise ValueError(f"{entry!r}: empty range {text}")
        values = list(range(low, high + 1))
    elif match := _LIST.match(text):
        values = [int(v) for v in match.group(1).split(";")]
    else:
        raise ValueError(f"{entry!r}: bad reply filter octet {text!r} (n, [a..b] or [a;b])")
    if any(v > 255 for v in values):
        raise ValueError(f"{entry!r}: octet above 255 in {text}")
    return frozenset(values)


def _filter(text: str, entry: str) -> Octets:
    parts = re.findall(r"\[[^\]]*\]|[^.]+", text)
    if len(parts) != 4 or ".".join(parts) != text:
        raise ValueError(f"{entry!r}: a reply filter has four octets, like 127.0.0.[2..11]")
    return tuple(_octet_set(part, entry) for part in parts)


def parse_site(text: str, weighted: bool = True) -> Site:
    """One entry; C{weighted=False} for C{reject_rbl_client} (no C{*weight})."""
    match = _ENTRY.match(text.strip())
    if not match:
        raise ValueError(f"{text!r}: expected domain[=filter][*weight]")
    domain = match.group("domain").rstrip(".").lower()
    if len(domain) > 253 or not all(_LABEL.match(label) for label in domain.split(".")):
        raise ValueError(f"{text!r}: {domain!r} is not a domain name")
    if match.group("weight") is not None and not weighted:
        raise ValueError(f"{text!r}: no *weight here")
    flt = _filter(match.group("filter"), text) if match.group("filter") else None
    weight = int(match.group("weight")) if match.group("weight") is not None else 1
    return Site(domain, flt, weight, text.strip())


def parse_sites(text: str) -> tuple[Site, ...]:
    """A C{postscreen_dnsbl_sites} value (entries separated by commas or white space)."""
    return tuple(parse_site(item) for item in re.split(r"[\s,]+", text) if item)


def query_name(address: str, domain: str) -> str:
    """The name to look up: reversed octets (IPv4) or nibbles (IPv6), then the list's domain."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if isinstance(ip, ipaddress.IPv4Address):
        reversed_part = ".".join(reversed(str(ip).split(".")))
    else:
        reversed_part = ".".join(reversed(ip.exploded.replace(":", "")))
    return f"{reversed_part}.{domain}"


@dataclass(frozen=True)
class Score:
    """The sum of the weights, and which entries matched (for the log line)."""

    total: int
    matched: tuple[Site, ...]

    def listed(self, threshold: int) -> bool:
        """Postfix: the client is rejected when the score reaches the threshold."""
        return self.total >= threshold

    def allowlisted(self, threshold: int) -> bool:
        """Postfix: C{score <= postscreen_dnsbl_allowlist_threshold} (when negative) skips tests."""
        return threshold < 0 and self.total <= threshold


def score(sites: Sequence[Site], answers: dict[str, Sequence[str]]) -> Score:
    """Score a client from the A records found per site domain (missing: not listed)."""
    matched = tuple(s for s in sites if s.matches(answers.get(s.domain, ())))
    return Score(sum(s.weight for s in matched), matched)
