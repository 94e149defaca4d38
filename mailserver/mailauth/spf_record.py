"""
Pure SPF (RFC 7208): record selection, term parsing and macro expansion.
No DNS here; L{mailserver.mailauth.spf} evaluates the parsed record.
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from dataclasses import dataclass

QUALIFIERS = {"+": "pass", "-": "fail", "~": "softfail", "?": "neutral"}
MECHANISMS = ("all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists")
#: Mechanisms and modifiers that cost a DNS look-up (RFC 7208 4.6.4).
LOOKUP_TERMS = frozenset({"include", "a", "mx", "ptr", "exists", "redirect"})

_VERSION = re.compile(r"^v=spf1(?: |$)", re.IGNORECASE)
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")
_MACRO = re.compile(r"%(?:\{([slodiphcrtvSLODIPHCRTV])([0-9]*)(r?)([.\-+,/_=]*)\}|(%)|(_)|(-))", re.IGNORECASE)
_CIDR = re.compile(r"^(.*?)(?:/([0-9]+))?(?://([0-9]+))?$")


class SPFPermError(ValueError):
    """The record is broken: the result is permerror."""


@dataclass(frozen=True)
class Directive:
    qualifier: str  # pass, fail, softfail, neutral
    mechanism: str  # one of MECHANISMS
    domain_spec: str | None = None  # unexpanded; None: the current domain
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None  # ip4 / ip6
    cidr4: int = 32
    cidr6: int = 128


@dataclass(frozen=True)
class Record:
    directives: tuple[Directive, ...]
    redirect: str | None = None
    explanation: str | None = None

    @property
    def lookups(self) -> int:
        """Look-up terms in this record itself (includes and redirects add their own)."""
        return sum(d.mechanism in LOOKUP_TERMS for d in self.directives) + (self.redirect is not None)


def select_record(texts: list[str]) -> str | None:
    """The one C{v=spf1} record among TXT strings; None if there is none; permerror if several."""
    found = [text for text in texts if _VERSION.match(text)]
    if len(found) > 1:
        raise SPFPermError("more than one v=spf1 record")
    return found[0] if found else None


def _check_domain_spec(spec: str) -> str:
    """Syntax check of a domain-spec (macros allowed): a permerror when bad."""
    if not spec:
        raise SPFPermError("empty domain-spec")
    rest = _MACRO.sub("", spec)
    if "%" in rest or any(ord(c) < 0x21 or ord(c) > 0x7E for c in rest):
        raise SPFPermError(f"bad domain-spec {spec!r}")
    return spec


def _cidr(value: str, limit: int, what: str) -> int:
    if not value.isdigit() or (len(value) > 1 and value.startswith("0")) or int(value) > limit:
        raise SPFPermError(f"bad {what} prefix length {value!r}")
    return int(value)


def parse_record(text: str) -> Record:
    """Parse one C{v=spf1} record (RFC 7208 section 4.6 and 12)."""
    if not _VERSION.match(text):
        raise SPFPermError("not an SPF record")
    directives: list[Directive] = []
    modifiers: dict[str, str] = {}
    for term in text.split(" ")[1:]:
        if not term:
            continue
        name_match = re.match(r"^([A-Za-z][A-Za-z0-9_.-]*)=(.*)$", term)
        if name_match:
            name, value = name_match.group(1).lower(), name_match.group(2)
            if name in ("redirect", "exp"):
                if name in modifiers:
                    raise SPFPermError(f"duplicate {name}=")
                modifiers[name] = _check_domain_spec(value)
            else:
                _MACRO.sub("", value)  # unknown modifiers are ignored (RFC 7208 6)
            continue
        qualifier = "pass"
        if term[0] in QUALIFIERS:
            qualifier, term = QUALIFIERS[term[0]], term[1:]
        directives.append(_parse_mechanism(qualifier, term))
    return Record(tuple(directives), modifiers.get("redirect"), modifiers.get("exp"))


def _parse_mechanism(qualifier: str, term: str) -> Directive:
    name, sep, argument = term.partition(":")
    lowered = name.lower()
    if "/" in name and lowered.split("/", 1)[0] in ("a", "mx"):
        lowered, argument, sep = lowered.split("/", 1)[0], "/" + name.split("/", 1)[1], ""
    if lowered not in MECHANISMS:
        raise SPFPermError(f"unknown mechanism {term!r}")
    if lowered == "all":
        if sep or argument:
            raise SPFPermError("all takes no argument")
        return Directive(qualifier, "all")
    if lowered in ("ip4", "ip6"):
        if not sep:
            raise SPFPermError(f"{lowered} needs an address")
        address, slash, length = argument.partition("/")
        try:
            network = ipaddress.ip_network(address, strict=False) if not slash else None
            if slash:
                limit = 32 if lowered == "ip4" else 128
                network = ipaddress.ip_network(f"{address}/{_cidr(length, limit, lowered)}", strict=False)
        except ValueError:
            raise SPFPermError(f"bad address in {term!r}") from None
        if network.version != (4 if lowered == "ip4" else 6):
            raise SPFPermError(f"wrong address family in {term!r}")
        return Directive(qualifier, lowered, network=network)
    if lowered in ("include", "exists"):
        if not sep:
            raise SPFPermError(f"{lowered} needs a domain")
        return Directive(qualifier, lowered, _check_domain_spec(argument))
    if lowered == "ptr":
        return Directive(qualifier, "ptr", _check_domain_spec(argument) if sep else None)
    # a and mx: [:domain-spec][/cidr4][//cidr6]
    if sep and not argument:
        raise SPFPermError(f"empty domain in {term!r}")
    match = _CIDR.match(argument)
    assert match is not None
    spec, cidr4, cidr6 = match.group(1), match.group(2), match.group(3)
    if argument.startswith("/"):
        spec = ""
    if "/" in spec or (argument.startswith("/") and cidr4 is None and cidr6 is None):
        raise SPFPermError(f"bad prefix length in {term!r}")
    return Directive(
        qualifier, lowered, _check_domain_spec(spec) if spec else None,
        cidr4=_cidr(cidr4, 32, "ip4") if cidr4 is not None else 32,
        cidr6=_cidr(cidr6, 128, "ip6") if cidr6 is not None else 128,
    )


@dataclass(frozen=True)
class MacroContext:
    """What the macros can name (RFC 7208 7.2)."""

    sender: str  # s: the whole sender (postmaster@helo for HELO checks)
    domain: str  # d: the current domain
    ip: str  # i
    helo: str  # h
    validated: str = "unknown"  # p (we never do the PTR validation for it)
    receiver: str = "unknown"  # r, exp= only
    timestamp: int = 0  # t, exp= only


def _ip_macro(ip: str) -> str:
    address = ipaddress.ip_address(ip)
    if address.version == 4:
        return str(address)
    return ".".join(address.exploded.replace(":", ""))


def expand(spec: str, context: MacroContext, explanation: bool = False) -> str:
    """Expand the macros of a domain-spec (or, with C{explanation}, of an exp= text)."""
    local, _, domain = context.sender.rpartition("@")
    values = {
        "s": context.sender, "l": local or "postmaster", "o": domain, "d": context.domain,
        "i": _ip_macro(context.ip), "p": context.validated,
        "v": "in-addr" if ipaddress.ip_address(context.ip).version == 4 else "ip6",
        "h": context.helo, "c": context.ip, "r": context.receiver, "t": str(context.timestamp),
    }  # fmt: skip

    def one(match: re.Match) -> str:
        if match.group(5):
            return "%"
        if match.group(6):
            return " "
        if match.group(7):
            return "%20"
        letter, digits, reverse, delimiters = match.group(1), match.group(2), match.group(3), match.group(4)
        if letter.lower() in "crt" and not explanation:
            raise SPFPermError(f"%{{{letter}}} is only allowed in exp=")
        value = values[letter.lower()]
        parts = re.split("[" + re.escape(delimiters or ".") + "]", value)
        if reverse:
            parts.reverse()
        if digits:
            count = int(digits)
            if count == 0:
                raise SPFPermError("macro with 0 parts")
            parts = parts[-count:]
        result = ".".join(parts)
        return urllib.parse.quote(result, safe="") if letter.isupper() else result

    rest = _MACRO.sub("", spec)
    if "%" in rest:
        raise SPFPermError(f"bad macro in {spec!r}")
    expanded = _MACRO.sub(one, spec)
    if explanation:
        return expanded
    expanded = expanded.rstrip(".")
    # RFC 7208 7.3: drop left labels until the name fits in 253 characters.
    while len(expanded) > 253 and "." in expanded:
        expanded = expanded.split(".", 1)[1]
    return expanded


def valid_domain(domain: str) -> bool:
    """A name SPF can be checked for: a multi-label FQDN with sane labels (RFC 7208 4.3)."""
    labels = domain.rstrip(".").split(".")
    return len(labels) > 1 and all(0 < len(label) < 64 for label in labels) and len(domain) <= 253
