"""
Pure: Postfix main.cf syntax -> raw settings tagged with file and line.

The rules are Postfix's (postconf(5)): a logical line is C{name = value};
a line that starts with white space continues the logical line before it;
lines whose first non-white-space character is C{#}, and white-space-only
lines, are ignored (also between continuation lines).  A C{#} later in a
line is part of the value, as in Postfix.  Values are not expanded here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mailserver.config.lines import SPACE, rstrip, split_lines, strip, unicode_space
from mailserver.errors import Problem

_NAME = re.compile(r"[A-Za-z0-9_]+\Z")


@dataclass(frozen=True)
class RawSetting:
    """One C{name = value} setting, value unexpanded, where it was written."""

    name: str
    value: str
    file: str
    line: int


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """Join continuation lines: (first line number, joined text)."""
    logical: list[tuple[int, str]] = []
    for number, line in enumerate(split_lines(text), start=1):
        stripped = strip(line)
        if not stripped or stripped.startswith("#"):
            continue
        if line[0] in SPACE:
            if logical:
                first, sofar = logical[-1]
                logical[-1] = (first, f"{sofar} {stripped}")
                continue
            # Leading white space with nothing to continue: report below.
            logical.append((number, line))
            continue
        logical.append((number, rstrip(line)))
    return logical


def parse_main_cf(text: str, filename: str) -> tuple[list[RawSetting], list[Problem]]:
    """
    Parse main.cf text into settings and problems.

    Malformed lines are errors; a parameter set twice keeps the later value
    and gets a warning.  The settings come back in file order, one per name.
    """
    problems: list[Problem] = []
    settings: dict[str, RawSetting] = {}
    for number, line in _logical_lines(text):
        if line[0] in SPACE:
            problems.append(
                Problem(filename, number, "continuation line without a setting before it")
            )
            continue
        name, equals, value = line.partition("=")
        name = strip(name)
        if not equals:
            odd = unicode_space(line)
            hint = f" ({odd} is not white space here: use spaces and tabs)" if odd else ""
            problems.append(
                Problem(filename, number, f"expected 'name = value', got {strip(line)!r}{hint}")
            )
            continue
        if not name:
            problems.append(Problem(filename, number, "missing parameter name before '='"))
            continue
        if not _NAME.match(name):
            odd = unicode_space(name)
            hint = f" ({odd} is not white space here: use spaces and tabs)" if odd else ""
            problems.append(
                Problem(
                    filename,
                    number,
                    f"bad parameter name {name!r}: use letters, digits and '_'{hint}",
                )
            )
            continue
        previous = settings.pop(name, None)
        if previous is not None:
            problems.append(
                Problem(
                    filename,
                    number,
                    f"{name}: overrides the setting at line {previous.line}",
                    "warning",
                )
            )
        settings[name] = RawSetting(name, strip(value), filename, number)
    return list(settings.values()), problems
