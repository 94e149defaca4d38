"""
Pure: the values a folder's read side hands out (L{MessageRecord},
L{Snapshot}), kept apart from the index that builds them so readers (IMAP)
depend on these and on L{mailserver.interfaces.IFolderReader}, not on
L{mailserver.store.index}.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mailserver.store import flags as flagmod

__all__ = ["MessageRecord", "Snapshot"]


@dataclass(frozen=True, slots=True)
class MessageRecord:
    """One message as last seen on disk."""

    uid: int
    base: str
    subdir: str  # "new" or "cur"
    name: str  # the file name in subdir
    letters: str  # Maildir info letters
    mtime: float  # INTERNALDATE: delivery time
    size: int  # bytes on disk (LF line ends)
    summary: dict[str, Any]

    @property
    def vsize(self) -> int:
        """RFC822.SIZE: the size with CRLF line ends."""
        return int(self.summary.get("size", self.size))

    @property
    def recent(self) -> bool:
        """Still in new/: no session has claimed it (Maildir's \\Recent)."""
        return self.subdir == "new"


@dataclass(frozen=True)
class Snapshot:
    """The folder at one moment; immutable, shared between sessions."""

    uidvalidity: int
    uidnext: int
    records: tuple[MessageRecord, ...]
    keywords: tuple[str | None, ...]
    exists: bool = True
    by_uid: dict[int, MessageRecord] = field(default_factory=dict, compare=False)
    #: UIDs this process put in cur/ (COPY, MOVE, APPEND with flags) that no
    #: session has claimed yet: \\Recent like the files of new/.
    unclaimed: frozenset[int] = frozenset()
    #: uid -> MODSEQ of its last change (RFC 7162), and the folder's highest.
    modseqs: dict[int, int] = field(default_factory=dict, compare=False)
    highestmodseq: int = 0

    def __post_init__(self) -> None:
        if not self.by_uid:
            self.by_uid.update((r.uid, r) for r in self.records)

    def modseq(self, uid: int) -> int:
        return self.modseqs.get(uid, self.highestmodseq)

    def flags(self, record: MessageRecord) -> frozenset[str]:
        return flagmod.letters_to_flags(record.letters, self.keywords)

    @property
    def unseen(self) -> int:
        return sum(1 for r in self.records if "S" not in r.letters)

    @property
    def recent(self) -> int:
        return sum(1 for r in self.records if self.is_recent(r))

    def is_recent(self, record: MessageRecord) -> bool:
        """Not yet claimed by any session: in new/, or put in cur/ by us and unclaimed."""
        return record.recent or record.uid in self.unclaimed

    @property
    def keyword_names(self) -> list[str]:
        return [k for k in self.keywords if k]
