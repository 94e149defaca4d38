"""
Pure: value types of the spam-defence parameters (milters, DNSBL sites,
macro lists), each checked by the pure parser of the module that uses it.
"""

from __future__ import annotations

from mailserver.config.values import ValueType, split_list
from mailserver.milter.settings import MilterSpec, parse_milters
from mailserver.policy.dnsbl_sites import Site, parse_sites


class Milters(ValueType):
    """C{inet:host:port}, C{unix:/path}, or C{{ address, name = value ... }} items."""

    name = "milter list"

    def parse(self, text: str, base: str) -> tuple[MilterSpec, ...]:
        return parse_milters(text)


class DnsblSites(ValueType):
    """C{domain[=filter][*weight]} items (postscreen_dnsbl_sites syntax)."""

    name = "DNSBL site list"

    def parse(self, text: str, base: str) -> tuple[Site, ...]:
        return parse_sites(text)


class Words(ValueType):
    """Names separated by white space or commas (macro lists)."""

    name = "list"

    def parse(self, text: str, base: str) -> tuple[str, ...]:
        return split_list(text)


class SignedInteger(ValueType):
    """An integer that may be negative (DNSBL thresholds)."""

    name = "integer"

    def parse(self, text: str, base: str) -> int:
        digits = text[1:] if text.startswith("-") else text
        if not digits.isascii() or not digits.isdigit():
            raise ValueError(f"expected an integer, got {text!r}")
        return int(text)
