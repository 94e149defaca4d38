"""
CONDSTORE and QRESYNC (RFC 7162): parsing of their command parameters
and the responses that resynchronise a client.

The MODSEQs themselves live in the folder index (C{store/modseq.py});
the commands that use these helpers are in C{folder_commands} (SELECT
parameters, STATUS HIGHESTMODSEQ), C{message_commands} (FETCH
CHANGEDSINCE/VANISHED, STORE UNCHANGEDSINCE) and C{search} (MODSEQ).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mailserver.imap.syntax import ParseError, Reader, SequenceSet
from mailserver.imap.wire import sequence_set

if TYPE_CHECKING:
    from mailserver.imap.mailbox import SelectedMailbox
    from mailserver.imap.server import IMAPServer

#: What ENABLE can turn on, and what each implies.
ENABLEABLE = {"CONDSTORE": ("CONDSTORE",), "QRESYNC": ("CONDSTORE", "QRESYNC"), "IMAP4REV2": ("IMAP4REV2",)}
#: How ENABLED spells what it names.
_SPELLING = {"IMAP4REV2": "IMAP4rev2"}


@dataclass(frozen=True)
class Qresync:
    """``SELECT box (QRESYNC (uidvalidity modseq [known-uids [seq-match]]))``."""

    uidvalidity: int
    modseq: int
    known_uids: SequenceSet | None = None


@dataclass(frozen=True)
class SelectParams:
    condstore: bool = False
    qresync: Qresync | None = None


def enable(server: "IMAPServer", names: list[str]) -> list[str]:
    """
    Enable what we know of C{names}; return the names newly enabled (for
    ``* ENABLED``).  CONDSTORE turned on while a mailbox is selected sends
    its HIGHESTMODSEQ.
    """
    newly = []
    for name in names:
        for ext in ENABLEABLE.get(name.upper(), ()):
            if ext not in server.enabled:
                server.enabled.add(ext)
                newly.append(_SPELLING.get(ext, ext))
    if "CONDSTORE" in newly and server.selected is not None:
        # RFC 7162 3.1: the first CONDSTORE-enabling command in the selected state
        server.untagged(b"OK [HIGHESTMODSEQ %d] Highest" % server.selected.highestmodseq)
    return newly


def parse_select_params(reader: Reader) -> SelectParams:
    """The optional ``(CONDSTORE)`` / ``(QRESYNC (...))`` after SELECT's mailbox."""
    if reader.at_end():
        return SelectParams()
    reader.sp()
    condstore = False
    qresync = None
    for name in reader.names("select parameter"):
        if name == "CONDSTORE":
            condstore = True
        elif name == "QRESYNC":
            reader.sp()
            qresync = _qresync(reader)
        else:
            raise ParseError(f"unknown SELECT parameter {name}")
    return SelectParams(condstore, qresync)


def _qresync(reader: Reader) -> Qresync:
    reader.expect(b"(")
    uidvalidity = reader.number("uidvalidity")
    if not uidvalidity:
        raise ParseError("invalid uidvalidity")
    reader.sp()
    modseq = reader.modseq()
    known = None
    if not reader.maybe(b")"):
        reader.sp()
        if reader.peek() != b"(":
            known = reader.seqset()
            if any(a is None or b is None for a, b in known.ranges):
                raise ParseError("known-uids may not contain *")
            if reader.maybe(b")"):
                return Qresync(uidvalidity, modseq, known)
            reader.sp()
        # The sequence match data only narrows what we report: read and ignore it.
        reader.expect(b"(")
        reader.seqset()
        reader.sp()
        reader.seqset()
        reader.expect(b")")
        reader.expect(b")")
    return Qresync(uidvalidity, modseq, known)


def parse_fetch_modifiers(reader: Reader) -> tuple[int | None, bool]:
    """``(CHANGEDSINCE n [VANISHED])`` after FETCH's items -> (changedsince, vanished)."""
    if reader.at_end():
        return None, False
    reader.sp()
    changedsince = None
    vanished = False
    for name in reader.names("fetch modifier"):
        if name == "CHANGEDSINCE":
            reader.sp()
            changedsince = reader.modseq()
        elif name == "VANISHED":
            vanished = True
        else:
            raise ParseError(f"unknown FETCH modifier {name}")
    if vanished and changedsince is None:
        raise ParseError("VANISHED needs CHANGEDSINCE")
    return changedsince, vanished


def parse_store_modifiers(reader: Reader) -> int | None:
    """``(UNCHANGEDSINCE n) `` before STORE's action, or None."""
    if reader.peek() != b"(":
        return None
    reader.expect(b"(")
    name = reader.atom("store modifier").upper()
    if name != "UNCHANGEDSINCE":
        raise ParseError(f"unknown STORE modifier {name}")
    reader.sp()
    value = reader.modseq()
    reader.expect(b")")
    reader.sp()
    return value


async def vanished_earlier(
    server: "IMAPServer", mailbox: "SelectedMailbox", modseq: int, within: SequenceSet | None
) -> bytes | None:
    """
    ``VANISHED (EARLIER) uids``: UIDs (within C{within}, if given) expunged
    after C{modseq}.  When the folder no longer remembers expunges that old,
    every UID up to the last known one that is not in the folder is named,
    which RFC 7162 3.2.5.2 allows.
    """
    uids, exact = await server.account.run(mailbox.index.vanished_since, modseq)
    largest = mailbox.uids[-1] if mailbox.uids else 0
    if not exact:
        top = mailbox.getUIDNext() - 1
        ranges = within.resolve(largest) if within is not None else [(1, top)]
        gaps = _gaps(ranges, mailbox.uids, top)
        return b"* VANISHED (EARLIER) " + gaps if gaps else None
    if within is not None:
        uids = [u for u in uids if within.contains(u, largest)]
    live = set(mailbox.uids)
    uids = [u for u in uids if u not in live]
    return b"* VANISHED (EARLIER) " + sequence_set(uids) if uids else None


def _gaps(ranges: list[tuple[int, int]], present: list[int], top: int) -> bytes:
    """The numbers in C{ranges} (capped at C{top}) not in sorted C{present}, as a sequence set."""
    out: list[str] = []
    for low, high in sorted(ranges):
        high = min(high, top)
        start = low
        i = bisect.bisect_left(present, start)
        while i < len(present) and present[i] <= high:
            uid = present[i]
            if uid > start:
                out.append(f"{start}:{uid - 1}" if uid - 1 > start else str(start))
            start = uid + 1
            i += 1
        if start <= high:
            out.append(f"{start}:{high}" if high > start else str(start))
    return ",".join(out).encode("ascii")


async def resync_on_select(server: "IMAPServer", mailbox: "SelectedMailbox", params: Qresync) -> None:
    """After SELECT (QRESYNC ...): VANISHED (EARLIER) and FETCH for what changed since the client's MODSEQ."""
    if params.uidvalidity != mailbox.uidvalidity:
        return  # the client's cache is void: it must resynchronise from scratch
    line = await vanished_earlier(server, mailbox, params.modseq, params.known_uids)
    lines = [line] if line is not None else []
    for seq, uid in enumerate(mailbox.uids, 1):
        if mailbox.modseqs.get(uid, 0) > params.modseq:
            lines.append(mailbox.flags_response(seq, uid))
    server.send_lines(lines)
