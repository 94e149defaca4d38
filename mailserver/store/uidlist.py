"""
The per-folder UID list (``dovecot-uidlist``), persisted and locked.

IMAP UIDs must never change and never be reused within one UIDVALIDITY.
Each Maildir folder keeps a ``dovecot-uidlist`` file in Dovecot's version 3
format::

    3 V1700000000 N43
    41 :1700000000.M1P2Q3.mx,S=1234,W=1260
    42 :1700000001.M5P2Q4.mx,S=99,W=102

mapping each message's unique base name (the file name before ``:2,``) to
its UID.  New UIDs are handed out only while holding
``dovecot-uidlist.lock``, created with ``O_EXCL`` like Dovecot's dotlock
(removed when older than C{stale_after} seconds or when its holder's
process is gone, as a crashed holder left it); the file is rewritten as
``tmp`` + fsync + rename, so two server processes (or this one and
Dovecot) never give two messages one UID.  A write that fails (a full
disk) leaves the file, the lock and the UIDVALIDITY as they were.

All methods block (file I/O, lock waits): call them from a thread.
"""

from __future__ import annotations

import errno
import os
import re
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Sequence

from twisted.logger import Logger
from mailserver.durable import fsync_directory, replace_atomically, unlink_quietly  # noqa: F401 (fsync_directory: store.folders, store.index)


FILE_NAME = "dovecot-uidlist"
LOCK_SUFFIX = ".lock"
#: The Maildir root's record of the last UIDVALIDITY handed out.
UIDVALIDITY_FILE = "dovecot-uidvalidity"

#: Dovecot's dotlock defaults for the uidlist: stale after 2 minutes.
STALE_AFTER = 120.0
LOCK_TIMEOUT = 30.0
_POLL = 0.05
_MAX_UID = 2**32 - 1

log = Logger()
_DIGITS = re.compile(r"([0-9]+)")  # ASCII: \d and str.isdigit() also take "٣" and "²"


class UidListError(OSError):
    """The UID list could not be locked or written."""


@dataclass
class UidMap:
    """A consistent view of a folder's UIDs."""

    uidvalidity: int
    uidnext: int
    uids: dict[str, int] = field(default_factory=dict)


def parse_uidlist(text: str) -> UidMap | None:
    """
    Parse a ``dovecot-uidlist`` (version 3, or Dovecot's older version 1).

    Returns None when the header is unusable (the caller starts a new
    UIDVALIDITY).  Extension fields between the UID and ``:`` are ignored.
    """
    lines = text.split("\n")
    header = lines[0].split()
    if not header:
        return None
    version = header[0]
    uidvalidity = uidnext = 0
    if version == "3":
        for item in header[1:]:
            key, value = item[:1], item[1:]
            if key == "V" and _is_number(value):
                uidvalidity = int(value)
            elif key == "N" and _is_number(value):
                uidnext = int(value)
    elif version == "1" and len(header) >= 3 and _is_number(header[1]) and _is_number(header[2]):
        uidvalidity, uidnext = int(header[1]), int(header[2])
    else:
        return None
    if not 0 < uidvalidity <= _MAX_UID or uidnext < 1:
        return None
    uids: dict[str, int] = {}
    for line in lines[1:]:
        if not line:
            continue
        number, _, rest = line.partition(" ")
        if not _is_number(number):
            continue
        if version == "3":
            _, colon, base = rest.partition(":")
            if not colon:
                continue
        else:
            base = rest
        base = base.partition(":2,")[0]
        if not base or "/" in base:
            continue
        uid = int(number)
        uids[base] = uid
        uidnext = max(uidnext, uid + 1)
    return UidMap(uidvalidity, uidnext, uids)


def _is_number(text: str) -> bool:
    """ASCII digits only (C{str.isdigit} accepts "²", which C{int} refuses), and not absurdly long."""
    return text.isascii() and text.isdigit() and len(text) <= 20


def delivery_order(base: str) -> list:
    """
    Sort key for new base names: digit runs compare as numbers, so
    ``<sec>.M<usec>P<pid>Q<n>`` names sort by delivery time and counter.
    """
    # split() with a group alternates text and digit runs: odd indexes are digits.
    pieces = _DIGITS.split(base)
    return [(0, int(part), "") if index % 2 else (1, 0, part) for index, part in enumerate(pieces) if part]


def format_uidlist(uidmap: UidMap) -> str:
    """The file text for C{uidmap}, entries in UID order."""
    lines = [f"3 V{uidmap.uidvalidity} N{uidmap.uidnext}\n"]
    for base, uid in sorted(uidmap.uids.items(), key=lambda item: item[1]):
        lines.append(f"{uid} :{base}\n")
    return "".join(lines)


def _stamp(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


write_atomically = replace_atomically  # kept for the store's callers; one implementation in durable



#: Lock files this process holds now (to tell them from ones it left behind).
_held_locks: set[str] = set()
_held_guard = threading.Lock()


class DotLock:
    """
    A Dovecot-style dotlock: C{path}.lock made with O_EXCL, holding
    ``<pid>:<host>``.

    A lock file is stale, and removed, when it is older than C{stale_after}
    seconds (by its mtime), or when it names a process of this host that no
    longer runs, or this process while no L{DotLock} of it holds the file
    (left by an earlier failure).  C{acquire} waits up to C{timeout}
    seconds; if writing the lock's content fails (ENOSPC) the half-made lock
    is removed before the error is raised.  Not re-entrant; pair it with a
    threading lock.
    """

    def __init__(
        self,
        path: str,
        stale_after: float = STALE_AFTER,
        timeout: float = LOCK_TIMEOUT,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.path = path + LOCK_SUFFIX
        self.stale_after = stale_after
        self.timeout = timeout
        self._clock = clock
        self._sleep = sleep

    def acquire(self) -> None:
        deadline = self._clock() + self.timeout
        content = f"{os.getpid()}:{socket.gethostname()}\n".encode()
        while True:
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            except FileExistsError:
                if self._break_if_stale():
                    continue
                if self._clock() >= deadline:
                    raise UidListError(errno.ETIMEDOUT, "timed out waiting for lock", self.path)
                self._sleep(_POLL)
                continue
            # Marked held before the pid is written: a thread of ours that
            # reads our pid in the file must find it held, or it breaks it.
            with _held_guard:
                _held_locks.add(self.path)
            try:
                try:
                    os.write(fd, content)
                finally:
                    os.close(fd)
            except BaseException:
                self.release()  # ENOSPC: never leave a lock behind
                raise
            return

    def _break_if_stale(self) -> bool:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return True
        reason = "old" if self._clock() - st.st_mtime >= self.stale_after else self._dead_holder()
        if reason is None:
            return False
        try:
            if os.stat(self.path).st_ino != st.st_ino:
                return True  # replaced meanwhile: look again
        except FileNotFoundError:
            return True
        log.warn("removing stale lock {path} ({reason})", path=self.path, reason=reason)
        unlink_quietly(self.path)
        return True

    def _dead_holder(self) -> str | None:
        """Why the lock's holder cannot hold it any more, or None if it may."""
        try:
            with open(self.path, "rb") as f:
                text = f.read(256).decode("ascii", "replace").strip()
        except FileNotFoundError:
            return "gone"
        pid_text, _, host = text.partition(":")
        if not pid_text.isdigit() or host != socket.gethostname():
            return None  # being written, or another host's: only age tells
        pid = int(pid_text)
        if pid == os.getpid():
            with _held_guard:
                return None if self.path in _held_locks else "left by this process"
        if not _process_exists(pid):
            return f"process {pid} is gone"
        return None

    def release(self) -> None:
        with _held_guard:
            _held_locks.discard(self.path)
        unlink_quietly(self.path)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


class UidList:
    """
    One folder's UIDs: read without locking, assign under the dotlock.

    Thread-safe: one instance is shared by every session on the folder.
    """

    def __init__(
        self,
        folder: str,
        root: str | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        stale_after: float = STALE_AFTER,
        timeout: float = LOCK_TIMEOUT,
    ) -> None:
        self.folder = folder
        self.path = os.path.join(folder, FILE_NAME)
        self.root = root if root is not None else folder
        self._clock = clock
        self._dotlock = DotLock(self.path, stale_after, timeout, clock, sleep)
        self._mutex = threading.RLock()
        self._held = 0
        self._map: UidMap | None = None
        self._stamp: tuple[int, int, int] | None = None
        # A UIDVALIDITY allocated for a first write that failed (disk
        # full): the retry uses it instead of consuming another.
        self._unwritten_uidvalidity = 0

    @contextmanager
    def locked(self) -> Iterator[UidMap]:
        """Hold the lock (re-entrant in this process); yield the fresh map."""
        with self._mutex:
            if self._held == 0:
                self._dotlock.acquire()
            self._held += 1
            try:
                yield self._reload(force=self._held == 1)
            finally:
                self._held -= 1
                if self._held == 0:
                    self._dotlock.release()

    def current(self) -> UidMap:
        """The map as on disk now (re-read only when the file changed)."""
        with self._mutex:
            return self._reload()

    def _reload(self, force: bool = False) -> UidMap:
        stamp = _stamp(self.path)
        if self._map is not None and stamp == self._stamp and not force:
            return self._map
        uidmap = None
        if stamp is not None:
            try:
                with open(self.path, encoding="utf-8", errors="surrogateescape") as f:
                    uidmap = parse_uidlist(f.read())
            except FileNotFoundError:
                stamp = None
            if uidmap is None and stamp is not None:
                log.warn("unreadable {path}: starting a new UIDVALIDITY", path=self.path)
        if uidmap is None:
            if self._map is not None and stamp is None:
                # The file vanished under us: keep what we handed out.
                return self._map
            uidmap = UidMap(0, 1, {})
        self._map = uidmap
        self._stamp = stamp
        return uidmap

    def sync(
        self,
        present: Iterable[str],
        first: Sequence[str] = (),
        forget_absent: bool = True,
        listed_before: int | None = None,
    ) -> UidMap:
        """
        Make sure every base name of C{present} has a UID.

        New names get UIDs in the order of C{first}, then by
        L{delivery_order}.  With C{forget_absent}, names not in
        C{present} are dropped from the file when it is rewritten anyway;
        C{listed_before} is the UIDNEXT seen before C{present} was listed,
        so names another process added since (UID >= it) are kept.  Only
        takes the lock when something must be assigned.
        """
        present = set(present)
        current = self.current()
        if current.uidvalidity and present.issubset(current.uids):
            return current
        with self.locked() as uidmap:
            missing = present - uidmap.uids.keys()
            if uidmap.uidvalidity and not missing:
                return uidmap
            return self._assign(uidmap, present, first, missing, forget_absent, listed_before)

    def assign_locked(self, new: Sequence[str]) -> UidMap:
        """Under L{locked}: give C{new} base names UIDs in this order, keep the rest."""
        with self.locked() as uidmap:
            missing = set(new) - uidmap.uids.keys()
            return self._assign(uidmap, set(uidmap.uids) | missing, new, missing, False)

    def _assign(
        self,
        uidmap: UidMap,
        present: set[str],
        first: Sequence[str],
        missing: set[str],
        forget_absent: bool,
        listed_before: int | None = None,
    ) -> UidMap:
        uidvalidity = uidmap.uidvalidity
        if not uidvalidity:
            if not self._unwritten_uidvalidity:
                self._unwritten_uidvalidity = allocate_uidvalidity(self.root, self._clock())
            uidvalidity = self._unwritten_uidvalidity
        uids = dict(uidmap.uids)
        if forget_absent:
            keep_from = uidmap.uidnext if listed_before is None else listed_before
            uids = {base: uid for base, uid in uids.items() if base in present or uid >= keep_from}
        uidnext = uidmap.uidnext
        ordered = [b for b in dict.fromkeys(first) if b in missing]
        ordered += sorted(missing - set(ordered), key=delivery_order)
        for base in ordered:
            if uidnext > _MAX_UID:
                raise UidListError(errno.EOVERFLOW, "UIDs exhausted", self.path)
            uids[base] = uidnext
            uidnext += 1
        new = UidMap(uidvalidity, uidnext, uids)
        write_atomically(self.path, format_uidlist(new).encode("utf-8", "surrogateescape"))
        self._unwritten_uidvalidity = 0
        self._map = new
        self._stamp = _stamp(self.path)
        return new

    def reset(self) -> None:
        """Forget the cached map (the folder was renamed or recreated)."""
        with self._mutex:
            self._map = None
            self._stamp = None
            self._unwritten_uidvalidity = 0


def allocate_uidvalidity(root: str, now: float) -> int:
    """
    A new UIDVALIDITY for a folder of the Maildir C{root}: the current time,
    or one more than the last value handed out if that is not smaller, so a
    folder deleted and created again within a second still gets a new one.
    """
    path = os.path.join(root, UIDVALIDITY_FILE)
    lock = DotLock(path)
    lock.acquire()
    try:
        last = 0
        try:
            with open(path, encoding="ascii", errors="replace") as f:
                text = f.read().strip()
            if text.isdigit():
                last = int(text)
        except FileNotFoundError:
            pass
        value = max(int(now), last + 1)
        if value > _MAX_UID:
            value = 1
        write_atomically(path, f"{value}\n".encode("ascii"))
        return value
    finally:
        lock.release()
