"""
The parameter reference, C{docs/parameters.rst}, generated from the
declarations (pure)::

    python -m mailserver.config.reference > docs/parameters.rst

C{tests/config/test_reference.py} fails when the file and the code drift.
"""

from __future__ import annotations

import inspect
import re
import sys
from typing import Iterable

from mailserver.config import parameters
from mailserver.config.parameters import PARAMETERS, Parameter

COMMAND = "python -m mailserver.config.reference > docs/parameters.rst"

HEADER = f"""\
..
   Generated from mailserver/config/parameters.py by
   ``{COMMAND}``: do not edit.

Parameter reference
===================

Every parameter of the main configuration file, grouped as they are declared
in ``mailserver/config/parameters.py``.  "From" says whose parameter it is:
*Postfix* and *Dovecot* parameters keep those programs' names and meaning
(defaults may be tightened); *own* parameters are mailserver's.  Defaults are
shown in main.cf syntax, before ``$name`` expansion.  Syntax, value types and
listeners are explained in `configuration.rst <configuration.rst>`_;
``mailserver postconf`` prints the values in effect.
"""


#: A section comment in the PARAMETERS table and the parameter it heads:
#: C{    # Listeners (endpoint descriptions).} then C{    P("listen_backlog", ...}.
_SECTION = re.compile(r'^    # (?P<title>[^(\n]+?)\.?(?: \([^\n]*\))?\.?[ \t]*\n    P\("(?P<first>\w+)"', re.M)
_MARKUP = re.compile(r"([\\*`|]|_(?=\W|$))")


def _text(text: str) -> str:
    """Plain text in reStructuredText: inline markup characters escaped."""
    return _MARKUP.sub(r"\\\1", text)


def _default(parameter: Parameter) -> str:
    default = parameter.default
    if callable(default):
        return f"*{_text((default.__doc__ or 'computed').strip())}*"
    return f"``{default}``" if default else "*empty*"


def _rows(parameters: Iterable[Parameter]) -> list[str]:
    lines = [
        ".. list-table::",
        "   :header-rows: 1",
        "   :widths: 26 20 14 8 32",
        "",
        "   * - Parameter",
        "     - Default",
        "     - Type",
        "     - From",
        "     - Meaning",
    ]
    for p in parameters:
        lines += [
            f"   * - ``{p.name}``",
            f"     - {_default(p)}",
            f"     - {_text(p.type.name)}",
            f"     - {p.origin}",
            f"     - {_text(p.doc)}",
        ]
    return lines


def sections() -> list[tuple[str, list[Parameter]]]:
    """
    The parameters grouped as declared: a comment line in the PARAMETERS
    table of parameters.py names the section of the parameters below it.
    """
    source = inspect.getsource(parameters)
    starts = {m["first"]: m["title"].strip() for m in _SECTION.finditer(source)}
    grouped: list[tuple[str, list[Parameter]]] = []
    for parameter in PARAMETERS:
        title = starts.get(parameter.name)
        if title is not None or not grouped:
            grouped.append((title or "General", []))
        grouped[-1][1].append(parameter)
    return grouped


def reference() -> str:
    """The text of docs/parameters.rst."""
    out = [HEADER]
    for title, members in sections():
        out += [title, "-" * len(title), "", *_rows(members), ""]
    return "\n".join(out)


if __name__ == "__main__":
    sys.stdout.write(reference())
