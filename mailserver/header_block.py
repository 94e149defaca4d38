"""Pure: where a message's header block ends, found by one regular expression."""

from __future__ import annotations

import re

_HEADER_BLOCK = re.compile(rb"(?:[!-9;-~]+:[^\n]*(?:\n|\Z)(?:[ \t][^\n]*(?:\n|\Z))*)*")


def header_end(message: bytes) -> int:
    """
    Offset just after the last header line of C{message} (lines end in LF), or 0 when
    the message does not start with a header: header lines (C{name:}), each perhaps
    followed by continuation lines (starting with a space or tab), matched in one pass.
    """
    return _HEADER_BLOCK.match(message).end()  # type: ignore[union-attr]  # it matches the empty string
