"""
Pure: Postfix C{$name} expansion of one parameter value.

Forms (Postfix mac_expand): C{$name}, C{${name}}, C{$(name)}; C{${name?text}}
gives text when name's value is non-empty, C{${name:text}} when it is empty
or unknown; C{$$} is a literal C{$}.  The text of a conditional is itself
expanded.  Recursion and loop detection belong to the caller's C{lookup},
which returns the expanded value of a name, or None for an unknown name.
"""

from __future__ import annotations

import re
from typing import Callable

_NAME = re.compile(r"[A-Za-z0-9_]+")
_CLOSE = {"{": "}", "(": ")"}

Lookup = Callable[[str], "str | None"]


class ExpansionError(ValueError):
    """The value's C{$} syntax is malformed."""


def _closing(text: str, start: int, opener: str) -> int:
    """Index of the bracket closing the one just before C{start}."""
    closer = _CLOSE[opener]
    depth = 1
    for index in range(start, len(text)):
        char = text[index]
        if char == opener:
            depth += 1
        elif char == closer:
            depth -= 1
            if depth == 0:
                return index
    raise ExpansionError(f"missing '{closer}' after '${opener}'")


def expand(text: str, lookup: Lookup) -> tuple[str, list[str]]:
    """
    Expand C{text}; return the result and the unknown names it used.

    Only plain references (C{$name}, C{${name}}) are reported as unknown:
    testing an undefined name with C{?} or C{:} is normal use.
    """
    out: list[str] = []
    unknown: list[str] = []
    index = 0
    while True:
        dollar = text.find("$", index)
        if dollar < 0:
            out.append(text[index:])
            return "".join(out), unknown
        out.append(text[index:dollar])
        after = dollar + 1
        following = text[after : after + 1]
        if following == "$":
            out.append("$")
            index = after + 1
            continue
        if following in _CLOSE:
            end = _closing(text, after + 1, following)
            inner = text[after + 1 : end]
            index = end + 1
            match = _NAME.match(inner)
            if not match:
                raise ExpansionError(
                    f"expected a parameter name after '${following}', got {inner!r}"
                )
            name, rest = match.group(), inner[match.end() :]
            value = lookup(name)
            if not rest:
                if value is None:
                    unknown.append(name)
                out.append(value or "")
            elif rest[0] in "?:":
                wanted = bool(value) if rest[0] == "?" else not value
                if wanted:
                    sub, sub_unknown = expand(rest[1:], lookup)
                    out.append(sub)
                    unknown.extend(sub_unknown)
            else:
                raise ExpansionError(
                    f"unexpected {rest[0]!r} after '${following}{name}'"
                    " (expected '?', ':' or the closing bracket)"
                )
            continue
        match = _NAME.match(text, after)
        if not match:
            raise ExpansionError(
                "'$' must be followed by a parameter name, '{' or '('"
                " (write '$$' for a literal '$')"
            )
        value = lookup(match.group())
        if value is None:
            unknown.append(match.group())
        out.append(value or "")
        index = match.end()
