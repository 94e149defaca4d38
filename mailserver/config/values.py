"""
Pure: the value types of configuration parameters.

Each type turns an expanded parameter value into a typed Python value, or
raises ValueError saying what is wrong.  C{base} is the directory relative
paths are resolved against (the main file's directory).  Lists become
tuples so a frozen Config stays immutable.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from typing import Any, Union

from mailserver.config.endpoints import parse_endpoint
from mailserver.config.lines import SPACE

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

_SEPARATORS = re.compile(f"[{re.escape(SPACE)},]+")  # ASCII white space, as Postfix
_LABEL = r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)"
_HOSTNAME = re.compile(rf"{_LABEL}(\.{_LABEL})*\.?\Z")
_TIME = re.compile(r"(\d+)([smhdw]?)\Z", re.IGNORECASE)
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_NETWORK = re.compile(r"\[([^\]]*)\](/.*)?\Z")
TLS_PROTOCOLS = ("SSLv2", "SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")


def split_list(text: str) -> tuple[str, ...]:
    """Postfix list syntax: items separated by commas and/or white space."""
    return tuple(item for item in _SEPARATORS.split(text) if item)


class ValueType:
    """A parameter type: C{name} for documentation, C{parse} for values."""

    name = "string"

    def parse(self, text: str, base: str) -> Any:
        return text


class Text(ValueType):
    """Any text."""


class Boolean(ValueType):
    name = "boolean"

    def parse(self, text: str, base: str) -> bool:
        word = text.lower()
        if word in ("yes", "true"):
            return True
        if word in ("no", "false"):
            return False
        raise ValueError(f"expected yes or no, got {text!r}")


class Integer(ValueType):
    """A non-negative integer."""

    name = "integer"

    def parse(self, text: str, base: str) -> int:
        if not text.isascii() or not text.isdigit():
            raise ValueError(f"expected a non-negative integer, got {text!r}")
        return int(text)


class BoundedInteger(Integer):
    """A non-negative integer of at most C{maximum} (a count of processes, for instance)."""

    def __init__(self, maximum: int) -> None:
        self.maximum = maximum
        self.name = f"integer 0..{maximum}"

    def parse(self, text: str, base: str) -> int:
        value = super().parse(text, base)
        if value > self.maximum:
            raise ValueError(f"expected at most {self.maximum}, got {value}")
        return value


class Size(Integer):
    """A size in bytes (a plain integer, as Postfix)."""

    name = "size (bytes)"


class QuotaRule(ValueType):
    """A Dovecot quota rule (C{*:storage=1G:messages=10000}) -> QuotaLimits."""

    name = "quota rule"

    def parse(self, text: str, base: str) -> Any:
        from mailserver.quota_rule import parse_quota_rule

        return parse_quota_rule(text)


class Time(ValueType):
    """A duration with Postfix's units s, m, h, d, w (default s) -> seconds."""

    name = "time"

    def parse(self, text: str, base: str) -> int:
        match = _TIME.match(text) if text.isascii() else None
        if not match:
            raise ValueError(f"expected a time like 300s, 30m, 5d, got {text!r}")
        return int(match.group(1)) * _UNITS[match.group(2).lower()]


def _resolve(path: str, base: str) -> str:
    if "\0" in path:
        raise ValueError("a path must not contain NUL")
    return os.path.normpath(os.path.join(base, path))


class Path(ValueType):
    """A file name; relative names are resolved against C{base}; empty stays empty."""

    name = "path"

    def parse(self, text: str, base: str) -> str:
        return _resolve(text, base) if text else ""


class FolderName(ValueType):
    """An IMAP folder name below INBOX, with / between levels (``Junk``, ``Archive/2026``)."""

    name = "folder name"

    def parse(self, text: str, base: str) -> str:
        parts = text.split("/")
        if not text or any(part in ("", ".", "..") or part != part.strip() for part in parts):
            raise ValueError(f"expected a folder name like Junk or Lists/work, got {text!r}")
        if any(ord(ch) < 32 or ch in "*%" for ch in text) or parts[0].upper() == "INBOX":
            raise ValueError(f"expected a folder name other than INBOX, without control characters, * or %, got {text!r}")
        return text


class Enum(ValueType):
    """One of fixed words, matched without regard to case."""

    def __init__(self, *choices: str) -> None:
        self.choices = choices
        self.name = " | ".join(choices)

    def parse(self, text: str, base: str) -> str:
        for choice in self.choices:
            if text.lower() == choice.lower():
                return choice
        raise ValueError(f"expected one of {', '.join(self.choices)}, got {text!r}")


class EnumList(ValueType):
    """A list whose items are fixed words."""

    def __init__(self, *choices: str) -> None:
        self.item = Enum(*choices)
        self.name = f"list of {', '.join(choices)}"

    def parse(self, text: str, base: str) -> tuple[str, ...]:
        return tuple(self.item.parse(item, base) for item in split_list(text))


class Hostname(ValueType):
    """A domain name."""

    name = "domain name"

    def parse(self, text: str, base: str) -> str:
        if not text or len(text) > 253 or not _HOSTNAME.match(text):
            raise ValueError(f"expected a domain name, got {text!r}")
        return text


class DomainList(ValueType):
    """Domain names, lower-cased, without duplicates."""

    name = "list of domains"

    def parse(self, text: str, base: str) -> tuple[str, ...]:
        domains: list[str] = []
        for item in split_list(text):
            if ":" in item or "/" in item:
                raise ValueError(f"lookup tables and files are not supported here: {item!r}")
            domain = Hostname().parse(item, base).lower().rstrip(".")
            if domain not in domains:
                domains.append(domain)
        return tuple(domains)


class Endpoints(ValueType):
    """Twisted server endpoint descriptions; empty disables the listener."""

    name = "endpoint list"

    def parse(self, text: str, base: str) -> tuple[str, ...]:
        return tuple(parse_endpoint(item).description for item in split_list(text))


class ServiceEndpoints(ValueType):
    """
    Endpoint descriptions of an auxiliary service (metrics), used as given:
    not a mail listener, never bound to C{inet_interfaces}; empty disables it.
    """

    name = "service endpoint list"

    def parse(self, text: str, base: str) -> tuple[str, ...]:
        return Endpoints().parse(text, base)


def _address(text: str) -> str:
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise ValueError(f"expected an IP address, got {text!r}") from None


class Networks(ValueType):
    """CIDR networks: C{127.0.0.0/8}, C{[::1]/128}, bare addresses."""

    name = "network list"

    def parse(self, text: str, base: str) -> tuple[Network, ...]:
        networks: list[Network] = []
        for item in split_list(text):
            bracketed = _NETWORK.match(item)
            spec = bracketed.group(1) + (bracketed.group(2) or "") if bracketed else item
            try:
                network = ipaddress.ip_network(spec, strict=False)
            except ValueError:
                raise ValueError(
                    f"expected an address or network like 10.0.0.0/8 or [::1]/128, got {item!r}"
                ) from None
            if network.network_address != ipaddress.ip_address(spec.partition("/")[0]):
                raise ValueError(
                    f"non-null host address bits in {item!r}, perhaps you should use {network}"
                )
            networks.append(network)
        return tuple(networks)


class Interfaces(ValueType):
    """C{all}, C{loopback-only}, or IP addresses (C{[::1]} allowed)."""

    name = "all | loopback-only | address list"

    def parse(self, text: str, base: str) -> tuple[str, ...]:
        items = split_list(text)
        keywords = [item.lower() for item in items if item.lower() in ("all", "loopback-only")]
        if keywords:
            if len(items) != 1:
                raise ValueError(f"{keywords[0]} cannot be combined with other values")
            return (keywords[0],)
        if not items:
            raise ValueError("expected all, loopback-only or IP addresses")
        return tuple(_address(item) for item in items)


class Protocols(ValueType):
    """C{all}, C{ipv4}, C{ipv6} or C{ipv4, ipv6}."""

    name = "all | ipv4 | ipv6"

    def parse(self, text: str, base: str) -> tuple[str, ...]:
        items = [item.lower() for item in split_list(text)]
        if items == ["all"]:
            return ("ipv4", "ipv6")
        if not items or any(item not in ("ipv4", "ipv6") for item in items):
            raise ValueError(f"expected all, ipv4, ipv6 or 'ipv4, ipv6', got {text!r}")
        return tuple(p for p in ("ipv4", "ipv6") if p in items)


@dataclass(frozen=True)
class TableRef:
    """A lookup table named C{type:path}; the path is resolved."""

    type: str
    path: str

    def __str__(self) -> str:
        return f"{self.type}:{self.path}"


class Tables(ValueType):
    """A list of C{[type:]path} tables of the allowed types."""

    def __init__(self, types: tuple[str, ...], default_type: str | None) -> None:
        self.types = types
        self.default_type = default_type
        prefix = "[type:]" if default_type else "type:"
        self.name = f"list of {prefix}path ({', '.join(types)})"

    def parse(self, text: str, base: str) -> tuple[TableRef, ...]:
        tables = []
        for item in split_list(text):
            kind, colon, path = item.partition(":")
            if not colon:
                kind, path = self.default_type or "", item
                if not kind:
                    raise ValueError(
                        f"{item!r}: name the table type, e.g. {self.types[0]}:{item}"
                    )
            if kind.lower() not in self.types:
                raise ValueError(
                    f"{item!r}: unsupported table type {kind!r} (use {', '.join(self.types)})"
                )
            if not path:
                raise ValueError(f"{item!r}: missing file name after the table type")
            tables.append(TableRef(kind.lower(), _resolve(path, base)))
        return tuple(tables)


class MaildirPath(ValueType):
    """A Maildir relative to the home directory: must end in C{/}."""

    name = "relative path ending in /"

    def parse(self, text: str, base: str) -> str:
        if not text.endswith("/"):
            raise ValueError(
                f"{text!r} names an mbox file, which is not supported;"
                " end it with '/' for a Maildir"
            )
        if os.path.isabs(text) or ".." in text.split("/"):
            raise ValueError(f"{text!r} must be relative to the home directory")
        return text


class Delimiter(ValueType):
    """Characters that separate a user name from an address extension."""

    name = "characters"

    def parse(self, text: str, base: str) -> str:
        if any(c.isspace() or c in '@"' for c in text):
            raise ValueError(f"{text!r}: white space, '@' and '\"' cannot be delimiters")
        return text


def _allowed_protocols(text: str) -> list[str]:
    """The protocols a Postfix protocol list allows, in ascending order."""
    allowed = list(TLS_PROTOCOLS)
    included: list[str] = []
    for item in re.split(f"[{re.escape(SPACE)},:]+", text):
        if not item:
            continue
        name = item.lstrip("!<>=")
        operator = item[: len(item) - len(name)]
        if name not in TLS_PROTOCOLS:
            raise ValueError(f"unknown TLS protocol {name!r} (known: {', '.join(TLS_PROTOCOLS)})")
        rank = TLS_PROTOCOLS.index(name)
        if operator == ">=":
            allowed = [p for p in allowed if TLS_PROTOCOLS.index(p) >= rank]
        elif operator == "<=":
            allowed = [p for p in allowed if TLS_PROTOCOLS.index(p) <= rank]
        elif operator == "!":
            allowed = [p for p in allowed if p != name]
        elif operator == "":
            included.append(name)
        else:
            raise ValueError(f"{item!r}: use NAME, !NAME, >=NAME or <=NAME")
    if included:
        allowed = [p for p in allowed if p in included]
    return allowed


class TlsProtocols(ValueType):
    """Postfix protocol syntax: C{>=TLSv1.2}, C{!SSLv3, !TLSv1}, C{TLSv1.3}."""

    name = "TLS protocols"

    def parse(self, text: str, base: str) -> str:
        if not _allowed_protocols(text):
            raise ValueError(f"{text!r} excludes every protocol")
        return text


def tls_protocol_range(text: str) -> tuple[str, str]:
    """
    The lowest and highest protocol a TlsProtocols value allows, for
    OpenSSL's minimum and maximum version (a hole in between is not kept).
    """
    allowed = _allowed_protocols(text)
    if not allowed:
        raise ValueError(f"{text!r} excludes every protocol")
    return allowed[0], allowed[-1]


class Relayhost(ValueType):
    """Empty, C{host}, C{host:port}, C{[host]} or C{[host]:port} (Postfix syntax)."""

    name = "[host]:port"

    def parse(self, text: str, base: str) -> str:
        if not text:
            return text
        match = re.match(r"(\[([^\]]+)\]|([^:\[\]]+))(?::(\d+))?\Z", text)
        if not match:
            raise ValueError(f"expected host, [host] or [host]:port, got {text!r}")
        host = match.group(2) or match.group(3)
        port = match.group(4)
        if port is not None and not 0 < int(port) < 65536:
            raise ValueError(f"port must be from 1 to 65535, got {port}")
        try:
            ipaddress.ip_address(host)
        except ValueError:
            Hostname().parse(host, base)
        return text
