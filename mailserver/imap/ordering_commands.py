"""
SORT and THREAD (RFC 5256), also as UID commands: the search keys are
matched as for SEARCH, then ordered by L{sorting} or threaded by
L{threads} (in the thread pool) from the fields the folder index caches,
so neither opens a message file unless a search key needs its text.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mailserver.imap import search as searching
from mailserver.imap import sorting, threads
from mailserver.imap.message_commands import SELECTED, matching
from mailserver.imap.syntax import Command, ParseError

if TYPE_CHECKING:
    from mailserver.imap.server import IMAPServer


async def sort(server: "IMAPServer", cmd: Command) -> bytes:
    args = cmd.args
    args.expect(b"(")
    words = [args.atom("sort criterion")]
    while not args.maybe(b")"):
        args.sp()
        words.append(args.atom("sort criterion"))
    try:
        criteria = sorting.parse_criteria(words)
    except ValueError as e:
        raise ParseError(str(e)) from None
    args.sp()
    charset = searching.parse_charset(args)
    args.sp()
    tree = searching.parse_keys(args, charset)
    found = await matching(server, tree)
    # Sorting and threading a big folder is CPU work: the thread pool, not the reactor.
    ordered = await server.account.run(sorting.sort, found, criteria)
    numbers = [m.uid if cmd.uid else m.seq for m in ordered]
    server.untagged(b"SORT" + b"".join(b" %d" % n for n in numbers))
    return b"SORT completed"


async def thread(server: "IMAPServer", cmd: Command) -> bytes:
    args = cmd.args
    algorithm = args.atom("thread algorithm").upper()
    if algorithm not in threads.ALGORITHMS:
        raise ParseError(f"unknown thread algorithm {algorithm}")
    args.sp()
    charset = searching.parse_charset(args)
    args.sp()
    tree = searching.parse_keys(args, charset)
    found = await matching(server, tree)
    build = threads.references if algorithm == "REFERENCES" else threads.ordered_subject
    data = await server.account.run(lambda: threads.render(build(found), cmd.uid))
    server.untagged(b"THREAD" + (b" " + data if data else b""))
    return b"THREAD completed"


COMMANDS = {
    "SORT": (sort, SELECTED),
    "THREAD": (thread, SELECTED),
}
