"""
Pure: parse and normalise RFC 5321 addresses and paths.

Domains are case-folded; local parts keep their case (lookups fold them);
quoted local parts are dequoted; source routes are dropped as RFC 5321
section 4.1.2 allows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property

from mailserver.errors import MailError

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_DOT_STRING = rf"{_ATEXT}+(?:\.{_ATEXT}+)*"
_QUOTED = r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e])*"'
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN = rf"{_LABEL}(?:\.{_LABEL})*\.?"
_LITERAL = r"\[(?:IPv6:[0-9A-Fa-f:.]+|[0-9]{1,3}(?:\.[0-9]{1,3}){3})\]"
_MAILBOX = re.compile(
    rf"(?P<local>{_DOT_STRING}|{_QUOTED})(?:@(?P<domain>{_DOMAIN}|{_LITERAL}))?\Z"
)
_PLAIN_LOCAL = re.compile(rf"{_DOT_STRING}\Z")
_ROUTE = re.compile(rf"@(?:{_DOMAIN}|{_LITERAL})(?:,@(?:{_DOMAIN}|{_LITERAL}))*:")

MAX_LOCAL = 64
MAX_PATH = 256


@dataclass(frozen=True)
class Address:
    """A mailbox: local part as given (dequoted) and a lower-cased domain."""

    local: str
    domain: str = ""

    def __str__(self) -> str:
        return self._text

    @cached_property
    def _text(self) -> str:
        """The address as written in SMTP (quoted local part when needed), made once per address."""
        local = self.local
        if not _PLAIN_LOCAL.match(local):
            local = '"' + local.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return f"{local}@{self.domain}" if self.domain else local

    @property
    def key(self) -> str:
        """The lookup key: C{local@domain}, local part lower-cased."""
        return f"{self.local.lower()}@{self.domain}" if self.domain else self.local.lower()

    def base(self, delimiters: str) -> Address:
        """
        The address without its extension: with C{delimiters} C{"+"},
        C{user+tag@example.com} becomes C{user@example.com}.
        """
        local, end = self.local, -1
        for delimiter in delimiters:  # the first delimiter after the first character
            index = local.find(delimiter, 1)
            if index > 0 and (end < 0 or index < end):
                end = index
        return self if end < 0 else Address(local[:end], self.domain)

    def extension(self, delimiters: str) -> str | None:
        """The part after the first delimiter, or None."""
        base = self.base(delimiters)
        return None if base is self else self.local[len(base.local) + 1 :]

    @property
    def has_routing_characters(self) -> bool:
        """True for C{%}, C{!} or C{@} in the local part: relay hacks."""
        local = self.local
        return "%" in local or "!" in local or "@" in local

    def with_domain(self, domain: str) -> Address:
        return Address(self.local, domain.lower())


def parse_mailbox(text: str) -> Address:
    """Parse C{local@domain} (or a bare local part); raise L{MailError} 501."""
    if len(text) > MAX_PATH:
        raise MailError(501, "5.1.3", "Address too long")
    if not text.isascii() or "\x7f" in text:
        raise MailError(553, "5.6.7", "Non-ASCII address without SMTPUTF8")
    match = _MAILBOX.match(text)
    if match is None:
        raise MailError(501, "5.1.3", "Bad address syntax")
    local = match.group("local")
    if local.startswith('"'):
        local = re.sub(r"\\(.)", r"\1", local[1:-1])
    if len(local.encode()) > MAX_LOCAL:
        raise MailError(501, "5.1.3", "Local part too long")
    domain = (match.group("domain") or "").rstrip(".").lower()
    return Address(local, domain)


_USER_LOCAL = re.compile(r"[A-Za-z0-9!#$%&'*+=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+=?^_`{|}~-]+)*\Z")
_USER_DOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\Z")
MAX_DOMAIN = 253


def user_name_problem(name: str) -> str | None:
    """
    Why C{name} cannot be a mail user (a passwd-file name that also names
    a Maildir directory), or None if it can.

    C{local} or C{local@domain}: the local part an RFC 5321 dot-atom without
    C{/}, the domain letters, digits and hyphens in dot-separated labels
    with no trailing dot.  So C{.}, C{..}, C{/} and NUL, which would make the
    name a path, never pass.
    """
    local, at, domain = name.rpartition("@") if "@" in name else (name, "", "")
    if not _USER_LOCAL.match(local):
        return (
            f"user name {name!r}: the local part must be letters, digits and !#$%&'*+=?^_`{{|}}~- "
            "in dot-separated words (no '/', no leading, trailing or double dot)"
        )
    if len(local.encode()) > MAX_LOCAL:
        return f"user name {name!r}: the local part is longer than {MAX_LOCAL} bytes"
    if at and (len(domain) > MAX_DOMAIN or not _USER_DOMAIN.match(domain)):
        return (
            f"user name {name!r}: the domain must be letters, digits and '-' in dot-separated "
            "labels (no trailing dot, no '..')"
        )
    return None


@dataclass(frozen=True)
class Path:
    """The argument of MAIL FROM or RCPT TO: an address (None for C{<>}) and parameters."""

    address: Address | None
    parameters: dict[str, str | None]


#: parse_path's answers by argument: a session sends the same MAIL FROM and RCPT TO for each message.
_PATHS: dict[tuple[str, str, bool], Path] = {}
_PATHS_KEPT = 1024


def parse_path(argument: str, keyword: str, allow_null: bool) -> Path:
    """
    Parse C{FROM:<path> PARAM=VALUE ...} (or C{TO:...}).

    An argument parsed before is answered from memory (a new L{Path} with a
    copy of its parameters; the L{Address} is shared, it is immutable).

    @param keyword: C{"FROM"} or C{"TO"}.
    @raise MailError: 501 for syntax, 553 for an unusable address.
    """
    key = (argument, keyword, allow_null)
    known = _PATHS.get(key)
    if known is None:
        known = _parse_path(argument, keyword, allow_null)  # a MailError is raised every time, never kept
        if len(_PATHS) >= _PATHS_KEPT:
            _PATHS.clear()
        _PATHS[key] = known
    return Path(known.address, dict(known.parameters)) if known.parameters else Path(known.address, {})


def _parse_path(argument: str, keyword: str, allow_null: bool) -> Path:
    """L{parse_path} without the memory."""
    head, sep, rest = argument.partition(":")
    if not sep or head.strip().upper() != keyword:
        raise MailError(501, "5.5.4", f"Syntax: {'MAIL FROM' if keyword == 'FROM' else 'RCPT TO'}:<address>")
    rest = rest.strip()
    if rest.startswith("<"):
        end = _closing_bracket(rest)
        if end < 0:
            raise MailError(501, "5.1.7" if keyword == "FROM" else "5.1.3", "Unbalanced <>")
        path, params = rest[1:end], rest[end + 1 :]
        if params and not params.startswith(" "):
            raise MailError(501, "5.5.4", "Syntax error after address")
    else:
        path, _, params = rest.partition(" ")
    route = _ROUTE.match(path)
    if route:
        path = path[route.end() :]
    if path == "":
        if not allow_null:
            raise MailError(501, "5.1.3", "Empty recipient address")
        address = None
    else:
        try:
            address = parse_mailbox(path)
        except MailError as error:
            if keyword == "FROM" and error.enhanced == "5.1.3":
                raise MailError(error.code, "5.1.7", error.text) from None
            raise
    return Path(address, _parse_parameters(params))


def _closing_bracket(text: str) -> int:
    """Index of the C{>} closing C{text[0]}, skipping quoted strings."""
    if '"' not in text:
        return text.find(">")
    quoted = escaped = False
    for index, char in enumerate(text[1:], 1):
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == ">" and not quoted:
            return index
    return -1


def _parse_parameters(text: str) -> dict[str, str | None]:
    parameters: dict[str, str | None] = {}
    for word in text.split():
        name, eq, value = word.partition("=")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]*", name):
            raise MailError(501, "5.5.4", f"Bad parameter {name!r}")
        parameters[name.upper()] = value if eq else None
    return parameters
