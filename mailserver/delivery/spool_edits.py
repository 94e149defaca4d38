"""
Changes to a spooled message without loading it (blocking: run in a thread).

Headers are added by re-reading only the header block; content checks see
a L{MessageView} (head plus a read-only mapping of the file), and their
edits rewrite only the start of the message when they all fall there, or
stream the message into a new spool file otherwise.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Sequence

from mailserver.delivery.checks import apply_edits
from mailserver.delivery.incoming import create
from mailserver.delivery.received import add_missing_headers, header_end
from mailserver.spooled import CHUNK, MessageView, SpooledMessage, write_all

#: The longest header block that gets missing Message-ID/Date headers added;
#: a longer one is left alone rather than held in memory.
HEADER_READ_LIMIT = 1 << 20
#: Edits ending within this many bytes rewrite the start of the message in memory.
EDIT_IN_MEMORY_LIMIT = 1 << 20

Edit = tuple[int, int, bytes]


def read_header(message: SpooledMessage, limit: int | None = None) -> bytes | None:
    """
    The start of C{message} up to and including the line after its header
    block (or all of it); None when the header is longer than C{limit}.
    """
    limit = HEADER_READ_LIMIT if limit is None else limit
    pieces: list[bytes] = []
    size = 0
    for data in message.chunks():
        pieces.append(data)
        size += len(data)
        start = b"".join(pieces)
        pieces = [start]
        end = header_end(start)
        if end < size and start.find(b"\n", end) >= 0:
            return start
        if size > limit:
            return None
    return b"".join(pieces)


def add_headers(message: SpooledMessage, hostname: str, queue_id: str, now: float, sender: str | None) -> SpooledMessage:
    """L{add_missing_headers} for a spooled message: only the header block is read."""
    start = read_header(message)
    if start is None:
        return message
    return message.replace_start(len(start), add_missing_headers(start, hostname, queue_id, now, sender=sender))


def inspect(
    check: Any, envelope: object, message: SpooledMessage, new_path: Callable[[], str]
) -> tuple[Any, SpooledMessage, str | None]:
    """
    Run C{check} over a spooled C{message}; return the verdict, the message
    after its edits, and the path of a new spool file made for them (or None).
    C{new_path()} names that file; the caller removes it.
    """
    with message.view() as view:
        verdict = check.inspect(envelope, view)
        result = verdict.message
        if isinstance(result, bytes):  # a check that rewrote the message itself
            return verdict, SpooledMessage(result), None
        edits: Sequence[Edit] = getattr(verdict, "edits", ())
        if not edits:
            return verdict, message, None
        last = max(end for _, end, _ in edits)
        if last <= EDIT_IN_MEMORY_LIMIT:
            return verdict, message.replace_start(last, apply_edits(view[:last], edits)), None
        path = new_path()
        return verdict, SpooledMessage(b"", path, 0, rewrite(view, edits, path)), path


def rewrite(view: MessageView, edits: Sequence[Edit], path: str) -> int:
    """Stream C{view} with C{edits} applied into the new file C{path}; return its size."""
    fd = create(path)
    written = 0
    try:

        def copy(start: int, end: int) -> int:
            for low in range(start, end, CHUNK):
                write_all(fd, view[low : min(end, low + CHUNK)])
            return max(0, end - start)

        position = 0
        for start, end, replacement in edits:
            written += copy(position, start)
            write_all(fd, replacement)
            written += len(replacement)
            position = max(position, end)
        written += copy(position, len(view))
    finally:
        os.close(fd)
    return written
