"""
Pure: check Twisted server endpoint descriptions without a reactor.

Tokenising follows C{twisted.internet.endpoints._tokenize}: C{:} separates
arguments, C{=} names one, a backslash escapes the next character.
Positional arguments fill the parser's parameters in order, as Twisted's
own parsers do, so C{tcp:25:127.0.0.1} sets the interface too.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

# Parameters of each endpoint type, in Twisted's positional order.
_SIGNATURES: dict[str, tuple[str, ...]] = {
    "tcp": ("port", "interface", "backlog"),
    "tcp6": ("port", "backlog", "interface"),
    "ssl": (
        "port",
        "privateKey",
        "certKey",
        "sslmethod",
        "interface",
        "backlog",
        "extraCertChain",
        "dhParameters",
    ),
    "unix": ("address", "mode", "backlog", "lockfile"),
    "systemd": ("domain", "index", "name"),
}
_REQUIRED = {"tcp": "port", "tcp6": "port", "ssl": "port", "unix": "address", "systemd": "domain"}
ENDPOINT_TYPES = tuple(_SIGNATURES)


@dataclass(frozen=True)
class Endpoint:
    """A checked description: its type and its arguments by name."""

    description: str
    type: str
    arguments: dict[str, str] = field(default_factory=dict)


def _tokens(description: str) -> list[list[str]]:
    """Split into arguments, each a list of one (positional) or two (name, value) strings."""
    arguments: list[list[str]] = [[""]]
    chars = iter(description)
    for char in chars:
        if char == ":":
            arguments.append([""])
        elif char == "=" and len(arguments[-1]) == 1:
            arguments[-1].append("")
        elif char == "\\":
            escaped = next(chars, None)
            if escaped is None:
                raise ValueError("a backslash at the end escapes nothing")
            arguments[-1][-1] += escaped
        else:
            arguments[-1][-1] += char
    return arguments


def escape(value: str) -> str:
    """Quote a value for use inside a description (C{::1} -> C{\\:\\:1})."""
    return value.replace("\\", "\\\\").replace(":", "\\:").replace("=", "\\=")


def _number(value: str, what: str, low: int, high: int) -> None:
    if not value.isdigit() or not low <= int(value) <= high:
        raise ValueError(f"{what} must be a number from {low} to {high}, got {value!r}")


def _check(kind: str, arguments: dict[str, str]) -> None:
    if "port" in arguments:
        _number(arguments["port"], "port", 0, 65535)
    if "backlog" in arguments:
        _number(arguments["backlog"], "backlog", 1, 65535)
    interface = arguments.get("interface")
    if interface:
        try:
            address = ipaddress.ip_address(interface)
        except ValueError:
            raise ValueError(f"interface must be an IP address, got {interface!r}") from None
        if kind == "tcp6" and address.version != 6:
            raise ValueError(f"tcp6 needs an IPv6 interface, got {interface!r}")
    if kind == "unix":
        if not arguments["address"]:
            raise ValueError("unix needs a socket path")
        mode = arguments.get("mode", "666")
        if not mode or any(c not in "01234567" for c in mode):
            raise ValueError(f"mode must be octal, got {mode!r}")
        if arguments.get("lockfile", "1") not in ("0", "1"):
            raise ValueError("lockfile must be 0 or 1")
    if kind == "systemd":
        if arguments["domain"] not in ("INET", "INET6", "UNIX"):
            raise ValueError("domain must be INET, INET6 or UNIX")
        if ("index" in arguments) == ("name" in arguments):
            raise ValueError("give exactly one of index= or name=")
        if "index" in arguments:
            _number(arguments["index"], "index", 0, 65535)


def parse_endpoint(description: str) -> Endpoint:
    """Check one description; ValueError says what is wrong."""
    tokens = _tokens(description)
    head = tokens[0]
    if len(head) != 1 or not head[0]:
        raise ValueError(f"{description!r} does not start with an endpoint type")
    kind = head[0]
    if kind not in _SIGNATURES or not description.startswith(kind):
        if kind.isdigit():
            raise ValueError(f"{description!r}: write tcp:{kind} for a TCP port")
        known = ", ".join(ENDPOINT_TYPES)
        raise ValueError(f"{description!r}: unknown endpoint type {kind!r} (known: {known})")
    signature = _SIGNATURES[kind]
    arguments: dict[str, str] = {}
    positional = 0
    for token in tokens[1:]:
        if len(token) == 1:
            if positional >= len(signature):
                raise ValueError(f"{description!r}: too many arguments for {kind}")
            name, value = signature[positional], token[0]
            positional += 1
        else:
            name, value = token
            if name not in signature:
                allowed = ", ".join(signature)
                raise ValueError(
                    f"{description!r}: {kind} has no argument {name!r} (known: {allowed})"
                )
        if name in arguments:
            raise ValueError(f"{description!r}: {name} given twice")
        arguments[name] = value
    if _REQUIRED[kind] not in arguments:
        raise ValueError(f"{description!r}: {kind} needs a {_REQUIRED[kind]}")
    try:
        _check(kind, arguments)
    except ValueError as e:
        raise ValueError(f"{description!r}: {e}") from None
    return Endpoint(description, kind, arguments)


def bind_to(endpoint: Endpoint, address: str) -> str:
    """
    The description of C{endpoint} listening on C{address} only.

    C{tcp} and C{tcp6} follow the address family (Twisted's C{tcp} type is
    IPv4, C{tcp6} IPv6); C{ssl} keeps its type.
    """
    version = ipaddress.ip_address(address).version
    kind = endpoint.type
    if kind in ("tcp", "tcp6"):
        kind = "tcp6" if version == 6 else "tcp"
    rest = endpoint.description[len(endpoint.type) :]
    return f"{kind}{rest}:interface={escape(address)}"


#: Endpoint types that listen on a socket of their own (systemd's is inherited, already listening).
_LISTENING = frozenset({"tcp", "tcp6", "ssl", "unix"})


def with_backlog(description: str, backlog: int) -> str:
    """C{description} with C{backlog=} added, unless it names one or its socket is inherited."""
    endpoint = parse_endpoint(description)
    if endpoint.type not in _LISTENING or "backlog" in endpoint.arguments:
        return description
    return f"{description}:backlog={backlog}"


#: The mode of our unix sockets when the description gives none (Twisted's default is 0666).
UNIX_MODE = "660"


def with_unix_mode(description: str, mode: str = UNIX_MODE) -> str:
    """C{description} with C{mode=} added when it is a C{unix} socket that names none."""
    endpoint = parse_endpoint(description)
    if endpoint.type != "unix" or "mode" in endpoint.arguments:
        return description
    return f"{description}:mode={mode}"
