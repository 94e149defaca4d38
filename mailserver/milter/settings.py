"""
Pure: the milter settings, from Postfix's parameter values.

C{smtpd_milters} / C{non_smtpd_milters} name milters as C{inet:host:port},
C{inet:[ipv6]:port}, C{unix:/path} (C{local:/path} is the same); a
milter may carry its own settings, as in Postfix 3.0+::

    smtpd_milters = { inet:127.0.0.1:11332, default_action = accept,
                      command_timeout = 10s }, unix:/run/opendkim.sock

L{parse_milters} returns one L{MilterSpec} per milter; L{MilterSettings}
adds the shared values (timeouts, default action, macros per stage).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

DEFAULT_ACTIONS = ("tempfail", "accept", "reject", "quarantine")
#: Postfix's default macro lists, per stage parameter.
DEFAULT_MACROS: dict[str, str] = {
    "milter_connect_macros": "j {daemon_name} {daemon_addr} v _",
    "milter_helo_macros": "{tls_version} {cipher} {cipher_bits} {cert_subject} {cert_issuer}",
    "milter_mail_macros": "i {auth_type} {auth_authen} {auth_author} {mail_addr} {mail_host} {mail_mailer}",
    "milter_rcpt_macros": "i {rcpt_addr} {rcpt_host} {rcpt_mailer}",
    "milter_data_macros": "i",
    "milter_end_of_header_macros": "i",
    "milter_end_of_data_macros": "i",
    "milter_unknown_command_macros": "",
}
#: The stage (a command byte) each macro parameter is sent with.
MACRO_STAGES: dict[str, bytes] = {
    "milter_connect_macros": b"C",
    "milter_helo_macros": b"H",
    "milter_mail_macros": b"M",
    "milter_rcpt_macros": b"R",
    "milter_data_macros": b"T",
    "milter_end_of_header_macros": b"N",
    "milter_end_of_data_macros": b"E",
    "milter_unknown_command_macros": b"U",
}
_PER_MILTER = ("connect_timeout", "command_timeout", "content_timeout", "default_action", "protocol")
_TIME = re.compile(r"(\d+)([smhdw]?)\Z", re.IGNORECASE)
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_TOKENS = re.compile(r"\{[^{}]*\}|[^\s,{}]+|[{}]")


@dataclass(frozen=True)
class MilterSpec:
    """One milter: where it listens and its own overrides of the shared settings."""

    kind: str  # "inet" or "unix"
    host: str = ""
    port: int = 0
    path: str = ""
    overrides: tuple[tuple[str, Any], ...] = ()

    @property
    def name(self) -> str:
        if self.kind == "unix":
            return f"unix:{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"inet:{host}:{self.port}"


@dataclass(frozen=True)
class MilterSettings:
    """The settings one milter session runs with."""

    spec: MilterSpec
    default_action: str = "tempfail"
    connect_timeout: float = 30.0
    command_timeout: float = 30.0
    content_timeout: float = 300.0
    protocol: int = 6
    #: Macro names per stage command byte (C{b"C"}, C{b"H"}...).
    macros: Mapping[bytes, tuple[str, ...]] = field(default_factory=dict)

    def for_spec(self, spec: MilterSpec) -> "MilterSettings":
        """These settings for C{spec}, with its own overrides applied."""
        return replace(self, spec=spec, **dict(spec.overrides))


def parse_time(text: str) -> int:
    match = _TIME.match(text.strip())
    if not match:
        raise ValueError(f"expected a time like 30s, got {text!r}")
    return int(match.group(1)) * _UNITS[match.group(2).lower()]


def parse_address(text: str) -> MilterSpec:
    """C{inet:host:port}, C{inet:[::1]:port}, C{unix:/path} or C{local:/path}."""
    kind, colon, rest = text.partition(":")
    if not colon or not rest:
        raise ValueError(f"milter {text!r}: expected inet:host:port or unix:/path")
    kind = kind.lower()
    if kind in ("unix", "local"):
        return MilterSpec("unix", path=rest)
    if kind not in ("inet", "inet6"):
        raise ValueError(f"milter {text!r}: unknown type {kind!r} (inet or unix)")
    if rest.startswith("["):
        host, bracket, port = rest[1:].partition("]:")
        if not bracket:
            raise ValueError(f"milter {text!r}: expected inet:[address]:port")
    else:
        host, _, port = rest.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"milter {text!r}: expected inet:host:port with a port 1-65535")
    return MilterSpec("inet", host=host, port=int(port))


def _override(name: str, value: str) -> tuple[str, Any]:
    if name not in _PER_MILTER:
        raise ValueError(f"unknown milter setting {name!r} (one of {', '.join(_PER_MILTER)})")
    if name == "default_action":
        if value.lower() not in DEFAULT_ACTIONS:
            raise ValueError(f"default_action: expected one of {', '.join(DEFAULT_ACTIONS)}")
        return name, value.lower()
    if name == "protocol":
        if value not in ("2", "3", "4", "6"):
            raise ValueError("protocol: expected 2, 3, 4 or 6")
        return name, int(value)
    return name, float(parse_time(value))


def _braced(text: str) -> MilterSpec:
    """C{{ address, name = value, ... }} (without the braces)."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise ValueError("empty { } milter")
    spec = parse_address(items[0])
    overrides = []
    for item in items[1:]:
        name, equal, value = item.partition("=")
        if not equal:
            raise ValueError(f"milter setting {item!r}: expected name = value")
        overrides.append(_override(name.strip().lower(), value.strip()))
    return replace(spec, overrides=tuple(overrides))


def parse_milters(text: str) -> tuple[MilterSpec, ...]:
    """A C{smtpd_milters} value: milters separated by commas or white space."""
    specs = []
    for token in _TOKENS.findall(text):
        if token in ("{", "}"):
            raise ValueError("unbalanced { } in the milter list")
        if token.startswith("{"):
            specs.append(_braced(token[1:-1]))
        else:
            specs.append(parse_address(token))
    return tuple(specs)


def parse_macros(text: str) -> tuple[str, ...]:
    """A macro list (C{"j {daemon_name} v"}) -> the names."""
    return tuple(item for item in re.split(r"[\s,]+", text) if item)


def milter_settings(config: Any, kind: str = "smtpd") -> tuple[MilterSettings, ...]:
    """
    The settings of each milter of C{smtpd_milters} (C{kind="smtpd"}) or
    C{non_smtpd_milters} (C{kind="non_smtpd"}) from a Config.
    """
    macros = {stage: tuple(getattr(config, name)) for name, stage in MACRO_STAGES.items()}
    shared = MilterSettings(
        MilterSpec("unix"),
        default_action=config.milter_default_action,
        connect_timeout=float(config.milter_connect_timeout),
        command_timeout=float(config.milter_command_timeout),
        content_timeout=float(config.milter_content_timeout),
        protocol=int(config.milter_protocol),
        macros=macros,
    )
    return tuple(shared.for_spec(spec) for spec in getattr(config, f"{kind}_milters"))
