"""
One Maildir folder as IMAP sees it: messages with UIDs, flags, internal
dates, sizes and parsed summaries, kept consistent with the directory.

L{FolderIndex.refresh} stats ``new/`` and ``cur/`` and only re-lists them
when their mtimes changed (or changed too recently to be trusted, as
Dovecot does); messages it has not seen are read once, described by the
injected C{describe} function (the IMAP package computes envelopes and body
structures) and cached on disk by L{SummaryCache}, so the second SELECT of
a big folder costs two C{stat}s, and the first in a new process one
directory listing.  Files renamed by other programs (POP3 marking a
message seen, another IMAP process) are followed by their base name.

Every method here blocks (directory listings, renames, fsync): the IMAP
layer calls them through a thread pool.  One instance per folder is shared
by all sessions of this process (see L{FolderRegistry}); a lock serialises
its operations, and L{Snapshot}s are immutable so the reactor thread can
read them while a refresh runs.

L{FolderIndex} provides L{mailserver.interfaces.IFolder} (the read and
write sides IMAP uses) and hands out the values of
L{mailserver.store.records}; IMAP depends on those, never on this module.
"""

from __future__ import annotations

import errno
import itertools
import os
import secrets
import socket
import threading
import time
from typing import Any, Callable, Iterable, Sequence

from twisted.logger import Logger
from zope.interface import implementer

from mailserver.durable import unlink_quietly, write_new_file
from mailserver.interfaces import IFolder, IFolderRegistry
from mailserver.spooled import to_crlf
from mailserver.store.quota import add_usage_blocking
from mailserver.store import flags as flagmod
from mailserver.store.modseq import ModseqState
from mailserver.store.names import escape_host, parse_name
from mailserver.store.records import MessageRecord, Snapshot
from mailserver.store.summaries import Summary, SummaryCache
from mailserver.store.uidlist import UidList, fsync_directory, write_atomically

KEYWORDS_FILE = "dovecot-keywords"
#: A directory mtime this close to now may still change within the same tick:
#: seconds where the filesystem keeps whole seconds, a few jiffies where its
#: times have sub-second parts (ext4, XFS, tmpfs, btrfs).
_MTIME_TRUST = 2.0
_MTIME_TRUST_FINE = 0.05


def _trust_window(stamp: tuple[int, ...]) -> float:
    """How old a directory mtime must be to be trusted, from its granularity."""
    return _MTIME_TRUST_FINE if any(ns % 1_000_000_000 for ns in stamp) else _MTIME_TRUST

Describe = Callable[[bytes], dict[str, Any]]

log = Logger()
_counter = itertools.count(1)
_counter_lock = threading.Lock()


def _read_file(path: str, size: int) -> bytes | None:
    """The file's bytes, with one C{os.read} when C{size} is right; None if it is gone."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        data = os.read(fd, size + 1)  # one more byte: a wrong size shows as a short or long read
        if len(data) == size + 1 or len(data) < size or size == 0:
            chunks = [data]
            for _ in range(1 << 20):  # bounded: up to 4 TB at the 4 MB reads below
                more = os.read(fd, 4 * 1024 * 1024)
                if not more:
                    break
                chunks.append(more)
            data = b"".join(chunks)
        return data
    finally:
        os.close(fd)


def to_lf(data: bytes) -> bytes:
    """The message as we store it: every line ending LF."""
    return data.replace(b"\r\n", b"\n")


def new_base(now: float, size: int, vsize: int, host: str | None = None) -> str:
    """
    A unique base name for a message this process writes (APPEND, COPY).

    Like the delivery store's names, with a ``V`` counter and a random part
    instead of ``Q`` so the two never collide within a process.
    """
    with _counter_lock:
        n = next(_counter)
    sec, usec = divmod(int(now * 1_000_000), 1_000_000)
    host = escape_host(host or socket.gethostname() or "localhost")
    return f"{sec}.M{usec}P{os.getpid()}V{n}R{secrets.token_hex(4)}.{host},S={size},W={vsize}"


class FolderGone(OSError):
    """The folder's directory no longer exists."""


@implementer(IFolder)
class FolderIndex:
    """
    The index of the Maildir folder at C{path}.

    @param root: the user's Maildir (for the shared UIDVALIDITY counter).
    @param describe: C{describe(crlf_bytes) -> dict} with at least ``size``
        (the CRLF size); stored as each record's C{summary}.
    @param describe_version: changes when C{describe}'s output changes,
        which invalidates cached summaries.
    @param clock: C{time.time}-like, for the mtime-trust check and new names.
    """

    def __init__(
        self,
        path: str,
        root: str,
        describe: Describe,
        describe_version: str,
        clock: Callable[[], float] = time.time,
        uidlist: UidList | None = None,
    ) -> None:
        self.path = os.path.abspath(path)
        self.root = root
        self._describe = describe
        self._clock = clock
        self.uidlist = uidlist or UidList(self.path, root=root, clock=clock)
        self.cache = SummaryCache(self.path, describe_version)
        self.modseq = ModseqState(self.path)
        self._lock = threading.RLock()
        self._dir_stamp: tuple[int, int] | None = None
        self._suspect = True
        self._keywords_stamp: tuple[int, int] | None = None
        self._keywords: list[str | None] = []
        self._by_base: dict[str, MessageRecord] = {}
        self._unclaimed: set[int] = set()
        #: The UID map the records were last matched with (to skip an idle re-listing's rebuild).
        self._listed_uids: Any = None
        #: The file names of the records in new/ and cur/ (None: to be computed).
        self._expected_names: tuple[frozenset[str], frozenset[str]] | None = None
        self.snapshot = Snapshot(0, 1, (), ())

    # ------------------------------------------------------------ reading

    def refresh(self, force: bool = False) -> Snapshot:
        """Bring the snapshot up to date with the directory; return it."""
        with self._lock:
            stamp = self._stat_dirs()
            keywords_changed = self._load_keywords()
            if stamp is None:
                if self.snapshot.exists or self.snapshot.records:
                    self._by_base = {}
                    self.snapshot = Snapshot(self.snapshot.uidvalidity, self.snapshot.uidnext, (), (), exists=False)
                self._dir_stamp = None
                return self.snapshot
            now = self._clock()
            window = _trust_window(stamp)
            if not force and stamp == self._dir_stamp and not keywords_changed:
                if not self._suspect:
                    return self.snapshot
                if any(now - ns / 1e9 < window for ns in stamp):
                    # Still within the mtime's tick: listing now would prove
                    # nothing more than the last listing did; the first
                    # refresh after the tick lists again and settles it.
                    return self.snapshot
            self._suspect = any(now - ns / 1e9 < window for ns in stamp)
            if not keywords_changed and self._names_unchanged():
                self._dir_stamp = stamp
                return self.snapshot
            known = self.uidlist.current()
            listing = self._list()
            missing = (self._by_base.keys() | known.uids.keys()) - listing.keys()
            if missing:
                # readdir may skip an entry renamed while we read: look again
                # before believing that a message is gone.
                again = self._list()
                for base in missing & again.keys():
                    listing[base] = again[base]
            if not keywords_changed and known is self._listed_uids and self._matches_records(listing):
                # Only looked again because the mtime was too fresh to trust: nothing moved.
                self._dir_stamp = stamp
                return self.snapshot
            try:
                self._rebuild(listing, known.uidnext)
            except BaseException:
                # No UIDs could be given (disk full, lock timeout): the next
                # refresh must list again, not trust the old snapshot.
                self._dir_stamp = None
                self._suspect = True
                raise
            self._dir_stamp = stamp
            self._listed_uids = self.uidlist.current()
            return self.snapshot

    def _names_unchanged(self) -> bool:
        """
        Whether ``new/`` and ``cur/`` hold exactly the files of our records
        (our own renames included): two listings compared as sets, no
        per-name work, so re-checking a big folder after a change is cheap.
        """
        if self._listed_uids is None or self._listed_uids is not self.uidlist.current():
            return False
        if self._expected_names is None:
            new = frozenset(r.name for r in self._by_base.values() if r.subdir == "new")
            self._expected_names = (new, frozenset(r.name for r in self._by_base.values() if r.subdir == "cur"))
        try:
            return all(
                len(names) == len(expected) and expected.issuperset(names)
                for names, expected in zip(
                    (os.listdir(os.path.join(self.path, sub)) for sub in ("new", "cur")), self._expected_names
                )
            )
        except FileNotFoundError:
            return False

    def _matches_records(self, listing: dict[str, tuple[str, str, str]]) -> bool:
        """Whether a listing shows exactly the records we hold (our own changes included)."""
        by_base = self._by_base
        if len(listing) != len(by_base):
            return False
        for base, entry in listing.items():
            record = by_base.get(base)
            if record is None or (record.subdir, record.name, record.letters) != entry:
                return False
        return True

    def _stat_dirs(self) -> tuple[int, int] | None:
        try:
            return (
                os.stat(os.path.join(self.path, "new")).st_mtime_ns,
                os.stat(os.path.join(self.path, "cur")).st_mtime_ns,
            )
        except FileNotFoundError:
            return None

    def _load_keywords(self) -> bool:
        path = os.path.join(self.path, KEYWORDS_FILE)
        try:
            st = os.stat(path)
            stamp = (st.st_mtime_ns, st.st_ino)
        except FileNotFoundError:
            stamp = None
        if stamp == self._keywords_stamp:
            return False
        table: list[str | None] = []
        if stamp is not None:
            try:
                with open(path, encoding="utf-8", errors="replace") as f:
                    table = flagmod.parse_keywords(f.read())
            except FileNotFoundError:
                stamp = None
        self._keywords_stamp = stamp
        self._keywords = table
        return True

    def _list(self) -> dict[str, tuple[str, str, str]]:
        """base -> (subdir, name, letters); new/ first so a move to cur/ is never missed."""
        found: dict[str, tuple[str, str, str]] = {}
        for sub in ("new", "cur"):
            try:
                names = os.listdir(os.path.join(self.path, sub))
            except FileNotFoundError:
                continue
            known = self._by_base
            for name in names:
                base = name.partition(":")[0]
                record = known.get(base)
                if record is not None and record.name == name and record.subdir == sub:
                    letters = record.letters  # unchanged since the last listing: no parsing
                elif name.startswith(".") or not name.isprintable():
                    continue
                else:
                    letters = flagmod.info_letters(parse_name(name).info)
                if base in found and sub == "new":
                    continue
                found[base] = (sub, name, letters)
        return found

    def _rebuild(self, listing: dict[str, tuple[str, str, str]], listed_before: int) -> None:
        uidmap = self.uidlist.sync(listing.keys(), listed_before=listed_before)
        by_base: dict[str, MessageRecord] = {}
        described: list[tuple[str, Summary]] = []
        for base, (sub, name, letters) in listing.items():
            uid = uidmap.uids.get(base)
            if uid is None:
                continue
            old = self._by_base.get(base)
            if old is not None and old.uid == uid:
                if (old.subdir, old.name, old.letters) != (sub, name, letters):
                    old = MessageRecord(uid, base, sub, name, letters, old.mtime, old.size, old.summary)
                by_base[base] = old
                continue
            summary = self.cache.get(base)
            if summary is None:
                summary = self._describe_file(sub, name)
                if summary is None:
                    continue  # vanished between listing and reading
                described.append((base, summary))
            by_base[base] = MessageRecord(uid, base, sub, name, letters, summary.mtime, summary.size, summary.data)
        self.cache.add(described)
        self.cache.compact(by_base.keys())
        self._by_base = by_base
        self._publish(uidmap.uidvalidity, uidmap.uidnext)

    def _describe_file(self, sub: str, name: str) -> Summary | None:
        path = os.path.join(self.path, sub, name)
        try:
            with open(path, "rb") as f:
                st = os.fstat(f.fileno())
                data = f.read()
        except FileNotFoundError:
            return None
        except OSError as e:
            # One unreadable file must not make the whole folder unusable.
            log.error("skipping unreadable message {path}: {error}", path=path, error=e)
            return None
        return Summary(st.st_mtime, len(data), self._describe(to_crlf(data)))

    def read(self, uid: int) -> bytes | None:
        """The message with CRLF line ends, or None if it was expunged."""
        return self.read_many([uid])[uid]

    def read_many(
        self, uids: Sequence[int], transform: Callable[[bytes], Any] | None = None
    ) -> dict[int, Any]:
        """
        Several messages with CRLF line ends (None for an expunged one), in
        one call: for a FETCH batch, one thread trip reads them all.
        C{transform}, when given, is applied to each text in the same thread
        trip, and its result stands for the text (the FETCH items' values).

        Each file is read with one C{os.read} of its known size (Maildir
        files never change once delivered); a file renamed under us (flags
        changed by another session) is looked up again in a fresh snapshot.
        """
        by_uid = self.snapshot.by_uid
        path = self.path
        out: dict[int, Any] = {}
        moved: list[int] = []
        for uid in uids:
            record = by_uid.get(uid)
            if record is None:
                out[uid] = None
                continue
            data = _read_file(f"{path}/{record.subdir}/{record.name}", record.size)
            if data is None:
                moved.append(uid)
            else:
                out[uid] = to_crlf(data) if transform is None else transform(to_crlf(data))
        for uid in moved:  # rare: look again, at most twice, in fresh snapshots
            out[uid] = None
            for _attempt in range(2):
                record = self.refresh(force=True).by_uid.get(uid)
                if record is None:
                    break
                data = _read_file(f"{path}/{record.subdir}/{record.name}", record.size)
                if data is not None:
                    out[uid] = to_crlf(data) if transform is None else transform(to_crlf(data))
                    break
        return out

    # ------------------------------------------------------------ writing

    def _rename_record(self, record: MessageRecord, letters: str) -> MessageRecord | None:
        """Give C{record} new letters (moving it to cur/); None if it vanished."""
        name = f"{record.base}:{flagmod.make_info(letters)}"
        source = os.path.join(self.path, record.subdir, record.name)
        target = os.path.join(self.path, "cur", name)
        if source != target:
            try:
                os.rename(source, target)
            except FileNotFoundError:
                return None
        updated = MessageRecord(record.uid, record.base, "cur", name, letters, record.mtime, record.size, record.summary)
        self._by_base[record.base] = updated
        return updated

    def _publish(self, uidvalidity: int | None = None, uidnext: int | None = None) -> None:
        """
        Make the records the new snapshot, after giving every new, changed
        or vanished message the next MODSEQ (persisted first).
        """
        self._expected_names = None
        records = tuple(sorted(self._by_base.values(), key=lambda r: r.uid))
        s = self.snapshot
        uidvalidity = s.uidvalidity if uidvalidity is None else uidvalidity
        uidnext = s.uidnext if uidnext is None else uidnext
        modseq = self.modseq
        if modseq.update(uidvalidity, ((r.uid, r.letters) for r in records)) or not s.modseqs and records:
            modseqs = dict(modseq.modseqs)
        else:
            modseqs = s.modseqs
        self.snapshot = Snapshot(
            uidvalidity, uidnext, records, tuple(self._keywords), unclaimed=frozenset(self._unclaimed),
            modseqs=modseqs, highestmodseq=modseq.highest,
        )

    def vanished_since(self, modseq: int) -> tuple[list[int], bool]:
        """UIDs expunged after C{modseq}; False with them if older expunges were forgotten."""
        with self._lock:
            return self.modseq.expunged_since(modseq)

    def _ensure_keywords(self, wanted: Iterable[str]) -> None:
        wanted = [f for f in wanted if not flagmod.is_system_flag(f)]
        if all(flagmod.keyword_index(self._keywords, k) is not None for k in wanted):
            return
        with self.uidlist.locked():
            self._keywords_stamp = None
            self._load_keywords()
            table = flagmod.add_keywords(self._keywords, wanted)
            if table != self._keywords:
                write_atomically(
                    os.path.join(self.path, KEYWORDS_FILE), flagmod.format_keywords(table).encode("utf-8")
                )
                self._keywords = table
                self._keywords_stamp = None
                self._load_keywords()

    def store(self, uids: Iterable[int], flags: Iterable[str], mode: int) -> dict[int, MessageRecord]:
        """
        Change the flags of C{uids} (C{mode} 0 set, 1 add, -1 remove).

        Each message's current flags are re-read if its file moved, so a
        concurrent change (POP3 marking it seen) is kept.  Returns the
        updated records of the messages that still exist.

        @raise flags.FlagError: a bad keyword, or too many keywords.
        """
        return self.conditional_store(uids, flags, mode, None)[0]

    def conditional_store(
        self, uids: Iterable[int], flags: Iterable[str], mode: int, unchangedsince: int | None
    ) -> tuple[dict[int, MessageRecord], list[int]]:
        """
        L{store}, but messages whose MODSEQ is above C{unchangedsince} (when
        given) are left alone and returned second (RFC 7162 UNCHANGEDSINCE).
        """
        flags = [flagmod.canonical_flag(f) for f in flags]
        with self._lock:
            if unchangedsince is not None:
                self.refresh()
            if mode >= 0:
                self._ensure_keywords(flags)
            changed: dict[int, MessageRecord] = {}
            modified: list[int] = []
            for uid in uids:
                if unchangedsince is not None and self.snapshot.modseq(uid) > unchangedsince:
                    if uid in self.snapshot.by_uid:
                        modified.append(uid)
                    continue
                for attempt in range(3):
                    snap = self.snapshot if attempt == 0 else self.refresh(force=True)
                    record = snap.by_uid.get(uid)
                    if record is None:
                        break
                    current = flagmod.letters_to_flags(record.letters, self._keywords)
                    wanted = flagmod.apply_store(current, flags, mode)
                    letters = flagmod.flags_to_letters(wanted, self._keywords, keep=record.letters)
                    if letters == record.letters and record.subdir == "cur":
                        changed[uid] = record
                        break
                    updated = self._rename_record(record, letters)
                    if updated is not None:
                        changed[uid] = updated
                        break
            self._publish()
            return changed, modified

    def claim_recent(self) -> set[int]:
        """
        Move every message of new/ to cur/; return the UIDs this call moved,
        and those this process copied, moved or appended into cur/ since
        the last claim.

        Whoever moves a file first saw it first: those messages are
        \\Recent for the calling session only (RFC 3501 2.3.2).
        """
        with self._lock:
            claimed = {uid for uid in self._unclaimed if uid in self.snapshot.by_uid}
            self._unclaimed.clear()
            for record in [r for r in self.snapshot.records if r.subdir == "new"]:
                if self._rename_record(record, record.letters) is not None:
                    claimed.add(record.uid)
            if claimed:
                self._publish()
            return claimed

    def expunge(self, uids: Iterable[int] | None = None) -> list[int]:
        """Remove the messages flagged \\Deleted (only among C{uids} if given)."""
        with self._lock:
            snap = self.refresh(force=True)
            allowed = None if uids is None else set(uids)
            removed = []
            for record in snap.records:
                if allowed is not None and record.uid not in allowed:
                    continue
                current = record
                for attempt in range(3):
                    if "T" not in current.letters:
                        break
                    try:
                        os.unlink(os.path.join(self.path, current.subdir, current.name))
                    except FileNotFoundError:
                        again = self.refresh(force=True).by_uid.get(record.uid)
                        if again is None:
                            break
                        current = again
                        continue
                    removed.append(record.uid)
                    self._by_base.pop(record.base, None)
                    break
            if removed:
                self._publish()
                fsync_directory(os.path.join(self.path, "cur"))
                size, count = self.size_of(removed, snap)
                add_usage_blocking(self.path, -size, -count)
            return removed

    def size_of(self, uids: Iterable[int], snap: Snapshot | None = None) -> tuple[int, int]:
        """Bytes and count of the messages C{uids} that exist (for quotas)."""
        snap = snap or self.snapshot
        records = [snap.by_uid[uid] for uid in uids if uid in snap.by_uid]
        return sum(record.size for record in records), len(records)

    def append(self, data: bytes, flags: Iterable[str], mtime: float | None) -> tuple[int, int]:
        """
        Store a new message durably; return (UIDVALIDITY, UID).

        C{data} may have CRLF or LF line ends; it is stored with LF.  It is
        written to tmp/, fsynced, given C{mtime} as internal date, then
        renamed into new/ (no flags: it stays \\Recent) or cur/ and the
        directory is fsynced, all before the UID is returned.
        """
        data = to_lf(data)
        flags = [flagmod.canonical_flag(f) for f in flags]
        crlf = to_crlf(data)
        summary = Summary(0.0, len(data), self._describe(crlf))
        with self._lock:
            self._require_folder()
            self._ensure_keywords(flags)
            letters = flagmod.flags_to_letters(flags, self._keywords)
            now = self._clock()
            base = new_base(now, len(data), len(crlf))
            tmp = os.path.join(self.path, "tmp", base)
            write_new_file(tmp, data, 0o600)
            when = now if mtime is None else mtime
            summary = Summary(when, summary.size, summary.data)
            sub, name = ("cur", f"{base}:{flagmod.make_info(letters)}") if letters else ("new", base)
            current = tmp
            try:
                os.utime(tmp, (when, when))
                with self.uidlist.locked():
                    os.rename(tmp, os.path.join(self.path, sub, name))
                    current = os.path.join(self.path, sub, name)
                    fsync_directory(os.path.join(self.path, sub))
                    uidmap = self.uidlist.assign_locked([base])
            except BaseException:
                # Without a UID the client hears NO: the message must not
                # stay, or a retrying client stores it twice.
                _remove_placed([current])
                raise
            self.cache.add([(base, summary)])
            uid = uidmap.uids[base]
            if sub == "cur":
                self._unclaimed.add(uid)
            self._by_base[base] = MessageRecord(uid, base, sub, name, letters, when, summary.size, summary.data)
            self._publish(uidmap.uidvalidity, uidmap.uidnext)
            add_usage_blocking(self.path, len(data), 1)
            return uidmap.uidvalidity, uid

    def _require_folder(self) -> None:
        if not os.path.isdir(os.path.join(self.path, "cur")):
            raise FolderGone(errno.ENOENT, "folder does not exist", self.path)

    def status(self) -> Snapshot:
        """Refresh and return the snapshot (STATUS, SELECT)."""
        return self.refresh()

    def transfer(self, uids: Sequence[int], target: "FolderIndex", move: bool) -> list[tuple[int, int]]:
        """COPY or MOVE C{uids} into C{target}: see L{transfer}."""
        return transfer(self, uids, target, move)

    def forget(self) -> None:
        """The directory was renamed or deleted: drop everything cached in memory."""
        with self._lock:
            self._dir_stamp = None
            self._suspect = True
            self._by_base = {}
            self._unclaimed = set()
            self._listed_uids = None
            self._expected_names = None
            self._keywords_stamp = None
            self.uidlist.reset()
            self.modseq.reset()
            self.snapshot = Snapshot(0, 1, (), ())


def _remove_placed(paths: Iterable[str]) -> None:
    """Undo the placing of messages whose UIDs could not be recorded (best effort)."""
    directories = set()
    for path in paths:
        try:
            unlink_quietly(path)
            directories.add(os.path.dirname(path))
        except OSError as e:
            log.error("cannot remove {path} after a failed write: {error}", path=path, error=e)
    _fsync_quietly(directories)


def _fsync_quietly(directories: Iterable[str]) -> None:
    for directory in directories:
        try:
            fsync_directory(directory)
        except OSError as e:
            log.error("cannot fsync {path} after a failed write: {error}", path=directory, error=e)


def transfer(source: FolderIndex, uids: Sequence[int], target: FolderIndex, move: bool) -> list[tuple[int, int]]:
    """
    COPY or MOVE messages C{uids} of C{source} into C{target}.

    Copies are hard links (a second file when links fail) named afresh and
    placed in the target's cur/ with the same flags (keywords re-lettered
    for the target); a move renames the file.  The target's UIDs are given
    in the order of C{uids} while its UID list is locked, and the directory
    is fsynced before returning.  Messages expunged meanwhile are skipped.

    @return: (source UID, target UID) pairs, in order.
    """
    first, second = sorted([source, target], key=lambda f: f.path)
    with first._lock, second._lock:
        target._require_folder()
        snap = source.refresh()
        wanted = [snap.by_uid[u] for u in uids if u in snap.by_uid]
        all_flags = set()
        for record in wanted:
            all_flags |= snap.flags(record)
        target._ensure_keywords(all_flags)
        placed: list[tuple[int, str, MessageRecord, str, str]] = []
        with target.uidlist.locked():
            try:
                for record in wanted:
                    done = _place(source, record, target, move)
                    if done is not None:
                        placed.append(done)
                if not placed:
                    return []
                fsync_directory(os.path.join(target.path, "cur"))
                if move:
                    fsync_directory(os.path.join(source.path, "cur"))
                    fsync_directory(os.path.join(source.path, "new"))
                uidmap = target.uidlist.assign_locked([p[1] for p in placed])
            except BaseException:
                # NO to the client: leave both folders as they were.
                _unplace(source, target, placed, move)
                raise
        pairs = []
        target.cache.add((base, Summary(r.mtime, r.size, r.summary)) for _, base, r, _, _ in placed)
        for src_uid, base, record, name, letters in placed:
            uid = uidmap.uids[base]
            target._by_base[base] = MessageRecord(uid, base, "cur", name, letters, record.mtime, record.size, record.summary)
            pairs.append((src_uid, uid))
            target._unclaimed.add(uid)
            if move:
                source._by_base.pop(record.base, None)
        target._publish(uidmap.uidvalidity, uidmap.uidnext)
        if move:
            source._publish()
        else:
            add_usage_blocking(target.path, sum(r.size for _, _, r, _, _ in placed), len(placed))
        return pairs


def _unplace(source: FolderIndex, target: FolderIndex, placed: list, move: bool) -> None:
    """Undo L{_place}s after a failure: copies removed, moved files put back."""
    if not move:
        _remove_placed(os.path.join(target.path, "cur", name) for _, _, _, name, _ in placed)
        return
    for _, _, record, name, _ in placed:
        try:
            os.rename(os.path.join(target.path, "cur", name), os.path.join(source.path, record.subdir, record.name))
        except OSError as e:
            log.error("cannot move {name} back after a failed MOVE: {error}", name=name, error=e)
    _fsync_quietly({os.path.join(source.path, r.subdir) for _, _, r, _, _ in placed})


def _place(source: FolderIndex, record: MessageRecord, target: FolderIndex, move: bool):
    for attempt in range(3):
        if attempt:
            record = source.refresh(force=True).by_uid.get(record.uid)
            if record is None:
                return None
        flags = flagmod.letters_to_flags(record.letters, source._keywords)
        letters = flagmod.flags_to_letters(flags, target._keywords, keep=record.letters)
        base = new_base(target._clock(), record.size, record.vsize)
        name = f"{base}:{flagmod.make_info(letters)}"
        src = os.path.join(source.path, record.subdir, record.name)
        dst = os.path.join(target.path, "cur", name)
        try:
            if move:
                os.rename(src, dst)
            else:
                _link_or_copy(src, dst, target.path)
        except FileNotFoundError:
            continue
        return (record.uid, base, record, name, letters)
    return None


def _link_or_copy(src: str, dst: str, folder: str) -> None:
    try:
        os.link(src, dst)
        return
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
            raise
    with open(src, "rb") as f:
        data = f.read()
        st = os.fstat(f.fileno())
    tmp = os.path.join(folder, "tmp", os.path.basename(dst).partition(":")[0])
    write_new_file(tmp, data, 0o600)
    os.utime(tmp, (st.st_mtime, st.st_mtime))
    os.rename(tmp, dst)


@implementer(IFolderRegistry)
class FolderRegistry:
    """
    One L{FolderIndex} per folder path in this process, shared by sessions.

    @param describe: see L{FolderIndex}.
    """

    def __init__(self, describe: Describe, describe_version: str, clock: Callable[[], float] = time.time) -> None:
        self._describe = describe
        self._version = describe_version
        self._clock = clock
        self._lock = threading.Lock()
        self._folders: dict[str, FolderIndex] = {}

    def get(self, path: str, root: str) -> FolderIndex:
        key = os.path.normpath(os.path.abspath(path))
        with self._lock:
            index = self._folders.get(key)
            if index is None:
                index = FolderIndex(key, root, self._describe, self._version, self._clock)
                self._folders[key] = index
            return index

    def forget(self, path: str) -> None:
        """C{path} and the folders below it were renamed or deleted."""
        key = os.path.normpath(os.path.abspath(path))
        with self._lock:
            gone = [k for k in self._folders if k == key or k.startswith(key + ".")]
            indexes = [self._folders.pop(k) for k in gone]
        for index in indexes:
            index.forget()
