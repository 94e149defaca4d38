"""
A selected mailbox: one session's view of a folder (L{SelectedMailbox}).

The view is the session's own list of UIDs in sequence-number order with
the flags last reported; the folder index (shared by every session) moves
on independently.  L{SelectedMailbox.sync} compares the two and yields the
untagged responses that bring the client up to date: EXPUNGE (only when
the command allows it, RFC 3501 7.4.1), FETCH FLAGS for changes made by
others, EXISTS and RECENT for new mail.  \\Recent follows Maildir: a
read-write session moves new/ files to cur/ and those it moved are recent
for it alone; a read-only (EXAMINE) session reports them without moving.

It provides twisted's C{IMailbox} (IMailboxIMAP) so the account can be
handed around as twisted.mail expects; our server uses the richer
coroutine methods directly.
"""

from __future__ import annotations

import bisect
import email.utils
from io import BytesIO
from typing import TYPE_CHECKING, Any, Iterable

from twisted.internet.defer import Deferred
from twisted.mail.imap4 import IMailboxInfo, IMessage, MessageSet
from twisted.mail.interfaces import IMailboxIMAP
from zope.interface import implementer

from mailserver.imap import parts as mime
from mailserver.imap.syntax import ParseError, SequenceSet
from mailserver.imap.wire import flag_list, sequence_set
from mailserver.interfaces import IFolder
from mailserver.store import flags as flagmod
from mailserver.store import shared_refresh
from mailserver.store.folder_names import DELIMITER, FolderNotFoundError
from mailserver.store.records import MessageRecord, Snapshot

if TYPE_CHECKING:
    from mailserver.imap.account import MaildirAccount

#: Flags every folder offers (PERMANENTFLAGS adds \\* while keywords fit).
SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")


#: Most distinct flag sets remembered per session.
_FLAG_SET_CACHE = 4096


class MailboxReset(Exception):
    """The folder's UIDVALIDITY changed or the folder vanished: the session must end."""


@implementer(IMailboxIMAP, IMailboxInfo)
class SelectedMailbox:
    """One session's view of the folder C{name}."""

    def __init__(self, account: "MaildirAccount", name: str, index: IFolder, readwrite: bool) -> None:
        self.account = account
        self.name = name
        self.index = index
        self.readwrite = readwrite
        self.uids: list[int] = []
        self.records: dict[int, MessageRecord] = {}
        self._reported: dict[int, tuple[str, bool]] = {}
        self.recent: set[int] = set()
        self.uidvalidity = 0
        self._keywords: tuple[str | None, ...] = ()
        #: (letters, recent) -> flags, for the current keyword table: few distinct values per folder.
        self._flag_sets: dict[tuple[str, bool], frozenset[str]] = {}
        self._seen_snapshot: Snapshot | None = None
        self._listeners: list[Any] = []
        #: MODSEQ of each message as last reported (RFC 7162).
        self.modseqs: dict[int, int] = {}
        #: UIDs kept by SEARCH RETURN (SAVE) for ``$`` (RFC 5182), in order.
        self.saved: list[int] = []
        #: The session's enabled extensions (shared with the server): CONDSTORE, QRESYNC.
        self.enabled: set[str] = set()

    # ------------------------------------------------------------ opening and syncing

    async def open(self) -> None:
        snap = await self.account.run(self.index.refresh)
        if not snap.exists:
            raise FolderNotFoundError(f"mailbox {self.name} does not exist")
        snap = await self._claim(snap)
        self.uidvalidity = snap.uidvalidity
        self._keywords = snap.keywords
        self._flag_sets = {}
        self.uids = [r.uid for r in snap.records]
        self.records = dict(snap.by_uid)
        self.modseqs = {u: snap.modseq(u) for u in self.uids}
        self._reported = {r.uid: (r.letters, r.uid in self.recent) for r in snap.records}
        self._seen_snapshot = snap

    @property
    def highestmodseq(self) -> int:
        """HIGHESTMODSEQ of the view (the folder's when the view was last brought up to date)."""
        return self._seen_snapshot.highestmodseq if self._seen_snapshot is not None else 0

    async def _claim(self, snap: Snapshot) -> Snapshot:
        known = self.uids[-1] if self.uids else 0
        start = bisect.bisect_right(snap.records, known, key=lambda r: r.uid)
        fresh = [r.uid for r in snap.records[start:] if snap.is_recent(r)]
        if not fresh:
            return snap
        if self.readwrite:
            self.recent |= await shared_refresh.claim_recent(self.index, self.account.run)
            return self.index.snapshot
        self.recent |= set(fresh)
        return snap

    async def sync(self, allow_expunge: bool) -> list[bytes]:
        """Refresh from disk (shared with other sessions' overlapping syncs); what changed."""
        snap = await shared_refresh.refresh(self.index, self.account.run)
        if not snap.exists:
            raise MailboxReset(f"mailbox {self.name} was deleted or renamed")
        if snap.uidvalidity != self.uidvalidity and snap.records:
            raise MailboxReset(f"UIDVALIDITY of {self.name} changed")
        snap = await self._claim(snap)
        return self.changes(snap, allow_expunge)

    def changes(self, snap: Snapshot, allow_expunge: bool) -> list[bytes]:
        """Apply C{snap} to the view; return the untagged responses."""
        lines: list[bytes] = []
        current = snap.by_uid
        if snap is self._seen_snapshot and not self._ghosts(current, allow_expunge):
            return lines
        if allow_expunge:
            gone = [i for i, uid in enumerate(self.uids) if uid not in current]
            vanished = []
            for i in reversed(gone):
                uid = self.uids.pop(i)
                self.records.pop(uid, None)
                self.modseqs.pop(uid, None)
                self._reported.pop(uid, None)
                self.recent.discard(uid)
                vanished.append(uid)
                if "QRESYNC" not in self.enabled:
                    lines.append(b"* %d EXPUNGE" % (i + 1))
            if vanished and "QRESYNC" in self.enabled:
                lines.append(b"* VANISHED " + sequence_set(sorted(vanished)))
        lines += self.adopt_keywords(snap.keywords)
        for seq, uid in enumerate(self.uids, 1):
            record = current.get(uid)
            if record is None:
                continue
            self.records[uid] = record
            self.modseqs[uid] = snap.modseq(uid)
            state = (record.letters, uid in self.recent)
            if state != self._reported.get(uid):
                self._reported[uid] = state
                lines.append(self.flags_response(seq, uid))
        last = self.uids[-1] if self.uids else 0
        start = bisect.bisect_right([r.uid for r in snap.records], last) if snap.records else 0
        new = snap.records[start:]
        if new:
            for record in new:
                self.uids.append(record.uid)
                self.records[record.uid] = record
                self.modseqs[record.uid] = snap.modseq(record.uid)
                self._reported[record.uid] = (record.letters, record.uid in self.recent)
            lines.append(b"* %d EXISTS" % len(self.uids))
            if "IMAP4REV2" not in self.enabled:  # RFC 9051 has no \Recent
                lines.append(b"* %d RECENT" % self.recent_count)
        self._seen_snapshot = snap
        return lines

    def adopt_keywords(self, keywords: tuple[str | None, ...]) -> list[bytes]:
        """
        Take the folder's (grown) keyword table; the FLAGS and PERMANENTFLAGS
        responses, and FETCH FLAGS for messages whose letters gained a name.
        """
        if keywords == self._keywords:
            return []
        old = self._keywords
        self._keywords = keywords
        self._flag_sets = {}
        slots = {
            chr(ord("a") + i)
            for i in range(max(len(old), len(keywords)))
            if (old[i] if i < len(old) else None) != (keywords[i] if i < len(keywords) else None)
        }
        lines = [b"* FLAGS " + flag_list(self.known_flags())]
        if self.readwrite:
            lines.append(b"* OK [PERMANENTFLAGS " + flag_list(self.permanent_flags()) + b"] Flags permitted")
        for seq, uid in enumerate(self.uids, 1):
            record = self.records[uid]
            if slots.intersection(record.letters) and self._reported.get(uid) == (record.letters, uid in self.recent):
                lines.append(self.flags_response(seq, uid))
        return lines

    def flags_response(self, seq: int, uid: int, with_uid: bool = True) -> bytes:
        """``* seq FETCH (UID u FLAGS (...))``, with MODSEQ once CONDSTORE is enabled."""
        uid_part = b"UID %d " % uid if with_uid else b""
        return b"* %d FETCH (%sFLAGS %s%s)" % (seq, uid_part, flag_list(self.flags(uid)), self.modseq_item(uid))

    def modseq_item(self, uid: int) -> bytes:
        """`` MODSEQ (n)`` when CONDSTORE is enabled, else nothing."""
        return b" MODSEQ (%d)" % self.modseqs.get(uid, 0) if "CONDSTORE" in self.enabled else b""

    def _ghosts(self, current: dict[int, MessageRecord], allow_expunge: bool) -> bool:
        return allow_expunge and len(current) != len(self.uids)

    # ------------------------------------------------------------ what the view holds

    @property
    def exists(self) -> int:
        return len(self.uids)

    @property
    def recent_count(self) -> int:
        return sum(1 for uid in self.recent if uid in self.records)

    def flags(self, uid: int) -> frozenset[str]:
        key = (self.records[uid].letters, uid in self.recent and "IMAP4REV2" not in self.enabled)
        flags = self._flag_sets.get(key)
        if flags is None:
            flags = flagmod.letters_to_flags(key[0], self._keywords)
            if key[1]:
                flags = flags | {flagmod.RECENT}
            if len(self._flag_sets) < _FLAG_SET_CACHE:
                self._flag_sets[key] = flags
        return flags

    def note_reported(self, uid: int) -> None:
        """The client was just told this message's flags (a STORE or FETCH response)."""
        snap = self.index.snapshot
        record = snap.by_uid.get(uid) or self.records.get(uid)
        if record is not None:
            self.records[uid] = record
            if uid in snap.by_uid:
                self.modseqs[uid] = snap.modseq(uid)
            self._reported[uid] = (record.letters, uid in self.recent)

    def seq_of(self, uid: int) -> int | None:
        i = bisect.bisect_left(self.uids, uid)
        if i < len(self.uids) and self.uids[i] == uid:
            return i + 1
        return None

    def first_unseen(self) -> int | None:
        for seq, uid in enumerate(self.uids, 1):
            if "S" not in self.records[uid].letters:
                return seq
        return None

    @property
    def unseen_count(self) -> int:
        return sum(1 for uid in self.uids if "S" not in self.records[uid].letters)

    def permanent_flags(self) -> list[str]:
        names = list(SYSTEM_FLAGS) + [k for k in self._keywords if k]
        if len([k for k in self._keywords if k]) < flagmod.MAX_KEYWORDS:
            names.append("\\*")
        return names

    def known_flags(self) -> list[str]:
        return list(SYSTEM_FLAGS) + [k for k in self._keywords if k]

    def select(self, messages: SequenceSet, uid: bool) -> list[tuple[int, int]]:
        """
        (seq, uid) of the messages a set names, in sequence order.

        A sequence number beyond EXISTS is an error (BAD); UIDs that are not
        in the view are skipped, as RFC 3501 says.  ``$`` names the saved
        search result (messages expunged since are left out).
        """
        if messages.saved:
            found = ((self.seq_of(u), u) for u in self.saved)
            return [(seq, u) for seq, u in found if seq is not None]
        if uid:
            largest = self.uids[-1] if self.uids else 0
            chosen: set[int] = set()
            for low, high in messages.resolve(largest):
                lo = bisect.bisect_left(self.uids, low)
                hi = bisect.bisect_right(self.uids, high)
                chosen.update(range(lo, hi))
            return [(i + 1, self.uids[i]) for i in sorted(chosen)]
        if not self.uids:
            if all(high is None for _, high in messages.ranges):
                return []  # "1:*" or "*" in an empty mailbox: nothing, not an error
            raise ParseError("no messages in this mailbox")
        largest = len(self.uids)
        ranges = messages.resolve(largest)
        for low, high in ranges:
            if high > largest:
                raise ParseError(f"invalid message sequence number {high} (mailbox has {largest})")
        if len(ranges) == 1:  # "1:*" and the like: no set needed
            low, high = ranges[0]
            return list(zip(range(low, high + 1), self.uids[low - 1:high]))
        chosen = set()
        for low, high in ranges:
            chosen.update(range(low - 1, high))
        return [(i + 1, self.uids[i]) for i in sorted(chosen)]

    # ------------------------------------------------------------ twisted's IMailboxIMAP

    def getFlags(self) -> list[str]:
        return self.known_flags()

    def getHierarchicalDelimiter(self) -> str:
        return DELIMITER

    def getUIDValidity(self) -> int:
        return self.uidvalidity

    def getUIDNext(self) -> int:
        return max(self.index.snapshot.uidnext, (self.uids[-1] + 1) if self.uids else 1)

    def getUID(self, message: int) -> int:
        return self.uids[message - 1]

    def getMessageCount(self) -> int:
        return self.exists

    def getRecentCount(self) -> int:
        return self.recent_count

    def getUnseenCount(self) -> int:
        return self.unseen_count

    def isWriteable(self) -> bool:
        return self.readwrite

    def destroy(self) -> None:
        raise NotImplementedError("use DELETE on the account")

    def requestStatus(self, names: Iterable[str]) -> dict[str, int]:
        values = {
            "MESSAGES": self.exists,
            "RECENT": self.recent_count,
            "UIDNEXT": self.getUIDNext(),
            "UIDVALIDITY": self.uidvalidity,
            "UNSEEN": self.unseen_count,
        }
        return {n.upper(): values[n.upper()] for n in names if n.upper() in values}

    def addListener(self, listener: Any) -> None:
        self._listeners.append(listener)

    def removeListener(self, listener: Any) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def addMessage(self, message: Any, flags: Iterable[str] = (), date: Any = None) -> Deferred:
        data = message.read() if hasattr(message, "read") else bytes(message)
        return self.account.run(self.index.append, data, list(flags), None).addCallback(lambda r: r[1])

    def expunge(self) -> Deferred:
        async def run() -> list[int]:
            removed = set(await self.account.run(self.index.expunge))
            seqs = [seq for seq, uid in enumerate(self.uids, 1) if uid in removed]
            await self.sync(allow_expunge=True)
            return seqs

        return Deferred.fromCoroutine(run())

    def fetch(self, messages: MessageSet, uid: bool) -> Deferred:
        """Twisted's fetch: (seq, IMessage) pairs; bodies are read in a thread first."""
        chosen = [(seq, u, self.flags(u), self.records[u].mtime) for seq, u in self.select(_from_twisted(messages), uid)]

        def load() -> list[tuple[int, "MessageView"]]:
            texts = self.index.read_many([u for _, u, _, _ in chosen])
            return [(seq, MessageView(u, flags, mtime, texts[u] or b"")) for seq, u, flags, mtime in chosen]

        return self.account.run(load)

    def store(self, messages: MessageSet, flags: Iterable[str], mode: int, uid: bool) -> Deferred:
        chosen = self.select(_from_twisted(messages), uid)

        async def run() -> dict[int, list[str]]:
            await self.account.run(self.index.store, [u for _, u in chosen], list(flags), mode)
            out = {}
            for seq, u in chosen:
                self.note_reported(u)
                out[seq] = sorted(self.flags(u))
            return out

        return Deferred.fromCoroutine(run())


def _from_twisted(messages: MessageSet) -> SequenceSet:
    ranges = []
    for low, high in messages.ranges:
        ranges.append((low, high))
    return SequenceSet(tuple(ranges))


@implementer(IMessage)
class MessageView:
    """A loaded message for twisted's generic IMessage consumers."""

    def __init__(self, uid: int, flags: Iterable[str], mtime: float, data: bytes, entity: mime.Entity | None = None) -> None:
        self._uid = uid
        self._flags = list(flags)
        self._mtime = mtime
        self._data = data
        self._entity = entity or mime.parse(data)

    def getUID(self) -> int:
        return self._uid

    def getFlags(self) -> list[str]:
        return self._flags

    def getInternalDate(self) -> str:
        return email.utils.formatdate(self._mtime, localtime=True)

    def getHeaders(self, negate: bool, *names: str) -> dict[str, str]:
        wanted = {n.lower() for n in names}
        out = {}
        for name, raw in self._entity.fields:
            if not names or (name in wanted) != negate:
                out.setdefault(name, mime.field_value(raw).decode("latin-1"))
        return out

    def getBodyFile(self) -> BytesIO:
        return BytesIO(self._data[self._entity.body_start:self._entity.end])

    def getSize(self) -> int:
        return self._entity.end - self._entity.start

    def isMultipart(self) -> bool:
        return bool(self._entity.children)

    def getSubPart(self, part: int) -> "MessageView":
        if not 0 <= part < len(self._entity.children):
            raise IndexError(part)
        return MessageView(self._uid, self._flags, self._mtime, self._data, self._entity.children[part])

