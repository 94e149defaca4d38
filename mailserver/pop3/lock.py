"""
One POP3 session per Maildir, in this process and across processes.

RFC 1939 gives a POP3 session an exclusive lock on its maildrop.  An
in-process registry answers quickly and needs no disk; a lock file in the
Maildir, held with C{flock()} for as long as the session lives, keeps a
second server process out as well.  The kernel drops a C{flock()} when its
holder dies, so a crash never leaves a stale lock behind.
"""

from __future__ import annotations

import errno
import fcntl
import os

#: The lock file's name in the Maildir (beside Dovecot's ``dovecot-uidlist``).
LOCK_NAME = "mailserver-pop3.lock"


class MaildropInUse(Exception):
    """Another POP3 session holds this Maildir."""


class SessionRegistry:
    """The Maildirs that POP3 sessions of this process hold (reactor thread only)."""

    def __init__(self) -> None:
        self._held: set[str] = set()

    def claim(self, maildir: str) -> None:
        """Mark C{maildir} as held, or raise L{MaildropInUse}."""
        key = _key(maildir)
        if key in self._held:
            raise MaildropInUse(maildir)
        self._held.add(key)

    def release(self, maildir: str) -> None:
        """Forget C{maildir}; releasing twice is harmless."""
        self._held.discard(_key(maildir))

    def held(self, maildir: str) -> bool:
        return _key(maildir) in self._held


def lock_maildir(maildir: str) -> int:
    """
    Take the lock file of C{maildir} (blocking I/O: call it in a thread).

    @return: the open file descriptor that holds the lock; pass it to
        L{unlock_maildir}.
    @raise MaildropInUse: another process (or session) holds it.
    """
    fd = os.open(
        os.path.join(maildir, LOCK_NAME),
        os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW,
        0o600,
    )
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise MaildropInUse(maildir) from e
        raise
    return fd


def unlock_maildir(fd: int) -> None:
    """Release a lock taken by L{lock_maildir} (closing the descriptor drops it)."""
    os.close(fd)


def _key(maildir: str) -> str:
    return os.path.normpath(os.path.abspath(maildir))
