"""
Per-message modification sequences of one folder (CONDSTORE/QRESYNC,
RFC 7162), persisted in ``mailserver.modseq``.

Each message has the MODSEQ of its last change (delivery, flag change);
each expunged UID is kept with the MODSEQ of its expunge, the newest
L{KEEP_EXPUNGED} of them, for ``VANISHED (EARLIER)``.  The folder's
HIGHESTMODSEQ never goes backwards, across restarts and UIDVALIDITY
changes alike.

Changes are found by comparing the folder's records with the letters
remembered here, so a flag changed by POP3 or another program (a renamed
file) bumps the MODSEQ just as a STORE does.  The file is a header line
``M1 V<uidvalidity> H<highest> F<floor>`` and then lines ``<uid> <modseq>
<letters>`` and ``E <uid> <modseq>`` where a later line wins; changes are
appended and fsynced (before the client hears of them), and the file is
rewritten (tmp + fsync + rename) when it holds many dead lines.  A torn
last line is ignored.  Blocking: call from a thread, under the folder's lock.
"""

from __future__ import annotations

import bisect
import os
from typing import Iterable

from twisted.logger import Logger

from mailserver.durable import write_and_fsync
from mailserver.store.uidlist import write_atomically

FILE_NAME = "mailserver.modseq"
#: Expunged UIDs remembered for VANISHED (EARLIER); older ones raise the floor.
KEEP_EXPUNGED = 50_000
_COMPACT_SLACK = 1000

log = Logger()


class ModseqState:
    """The MODSEQs of one folder, loaded lazily from C{folder}/mailserver.modseq."""

    def __init__(self, folder: str, keep_expunged: int = KEEP_EXPUNGED) -> None:
        self.path = os.path.join(folder, FILE_NAME)
        self.keep_expunged = keep_expunged
        self.uidvalidity = 0
        self.highest = 0
        #: Expunges older than this are forgotten: a client that knows less must be told every gap.
        self.floor = 0
        self.modseqs: dict[int, int] = {}
        self.letters: dict[int, str] = {}
        #: (modseq, uid) of expunged messages, oldest first.
        self.expunged: list[tuple[int, int]] = []
        self._lines = 0
        self._stamp: tuple[int, int, int] | None = None
        self._loaded = False
        #: A write failed (disk full): memory is ahead of the file, which is rewritten next time.
        self._dirty = False

    # ------------------------------------------------------------ loading

    def _file_stamp(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _load(self) -> None:
        """(Re)read the file if another process changed it since we last wrote."""
        stamp = self._file_stamp()
        if self._loaded and (stamp == self._stamp or self._dirty):
            return  # unchanged, or our unwritten memory is newer than the file
        highest = self.highest
        self.modseqs, self.letters, self.expunged = {}, {}, []
        self.uidvalidity = self.floor = self._lines = 0
        try:
            with open(self.path, encoding="ascii", errors="replace") as f:
                text = f.read()
        except FileNotFoundError:
            text = ""
        gone: dict[int, int] = {}
        for n, line in enumerate(text.split("\n")):
            fields = line.split()
            if n == 0:
                for item in fields[1:] if fields[:1] == ["M1"] else ():
                    key, value = item[:1], item[1:]
                    if value.isdigit():
                        if key == "V":
                            self.uidvalidity = int(value)
                        elif key == "H":
                            highest = max(highest, int(value))
                        elif key == "F":
                            self.floor = int(value)
                continue
            if not fields:
                continue
            self._lines += 1
            if fields[0] == "E" and len(fields) == 3 and fields[1].isdigit() and fields[2].isdigit():
                uid, modseq = int(fields[1]), int(fields[2])
                gone[uid] = modseq
                self.modseqs.pop(uid, None)
                self.letters.pop(uid, None)
            elif len(fields) in (2, 3) and fields[0].isdigit() and fields[1].isdigit():
                uid, modseq = int(fields[0]), int(fields[1])
                self.modseqs[uid] = modseq
                self.letters[uid] = fields[2] if len(fields) == 3 and fields[2] != "-" else ""
                gone.pop(uid, None)
            else:
                continue  # a torn line
            highest = max(highest, modseq)
        self.expunged = sorted((m, u) for u, m in gone.items())
        self.highest = highest
        self._stamp = stamp
        self._loaded = True

    # ------------------------------------------------------------ updating

    def update(self, uidvalidity: int, present: Iterable[tuple[int, str]]) -> bool:
        """
        Compare the folder's C{(uid, letters)} with what is recorded; give
        new messages, changed ones and expunged ones the next MODSEQ and
        persist that.  Returns whether anything changed.
        """
        self._load()
        if not uidvalidity:
            return False
        fresh_file = self._stamp is None
        if uidvalidity != self.uidvalidity:
            # A new UID space: forget the old UIDs but never lower HIGHESTMODSEQ.
            self.modseqs, self.letters, self.expunged = {}, {}, []
            self.floor = self.highest
            self.uidvalidity = uidvalidity
            fresh_file = True
        current = dict(present)
        changed = [(u, l) for u, l in current.items() if self.letters.get(u) != l or u not in self.modseqs]
        vanished = [u for u in self.modseqs if u not in current]
        if not changed and not vanished and not fresh_file and not self._dirty:
            return False
        modseq = self.highest + 1
        lines = []
        for uid, letters in changed:
            self.modseqs[uid] = modseq
            self.letters[uid] = letters
            lines.append(f"{uid} {modseq} {letters or '-'}\n")
        for uid in vanished:
            del self.modseqs[uid]
            self.letters.pop(uid, None)
            self.expunged.append((modseq, uid))
            lines.append(f"E {uid} {modseq}\n")
        self.highest = max(self.highest, modseq)
        overflow = len(self.expunged) - self.keep_expunged
        if overflow > 0:
            self.floor = max(self.floor, self.expunged[overflow - 1][0])
            del self.expunged[:overflow]
        self._lines += len(lines)
        try:
            if (
                fresh_file
                or self._dirty
                or overflow > 0
                or self._lines > 2 * (len(self.modseqs) + len(self.expunged)) + _COMPACT_SLACK
            ):
                self._rewrite()
            else:
                self._append("".join(lines))
        except OSError as e:
            # The change happened (a file was renamed): keep serving it from
            # memory, and write the whole state once the disk allows.
            self._dirty = True
            log.error("cannot write {path}: {error}; MODSEQs kept in memory", path=self.path, error=e)
            return True
        self._dirty = False
        return True

    def _append(self, text: str) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        try:
            write_and_fsync(fd, text.encode("ascii"))
        finally:
            os.close(fd)
        self._stamp = self._file_stamp()

    def _rewrite(self) -> None:
        lines = [f"M1 V{self.uidvalidity} H{self.highest} F{self.floor}\n"]
        lines += [f"E {uid} {modseq}\n" for modseq, uid in self.expunged]
        lines += [f"{uid} {m} {self.letters.get(uid) or '-'}\n" for uid, m in sorted(self.modseqs.items())]
        write_atomically(self.path, "".join(lines).encode("ascii"))
        self._lines = len(lines) - 1
        self._stamp = self._file_stamp()

    def reset(self) -> None:
        """The folder was renamed or deleted: re-read the file next time."""
        self._loaded = False
        self._stamp = None
        self._dirty = False

    # ------------------------------------------------------------ queries

    def expunged_since(self, modseq: int) -> tuple[list[int], bool]:
        """
        UIDs expunged after C{modseq}, and whether that list is exact (False
        when C{modseq} is below the floor: older expunges were forgotten).
        """
        start = bisect.bisect_right(self.expunged, (modseq, 2**32))
        return sorted(uid for _, uid in self.expunged[start:]), modseq >= self.floor
