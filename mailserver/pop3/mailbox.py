"""
The POP3 maildrop: the INBOX of a Maildir, read through an IMailboxReader.

At login the session takes the maildrop lock and lists the messages once,
in a thread: numbers, sizes and UIDLs then stay fixed for the session as
RFC 1939 requires, and the answers twisted.mail's C{POP3} wants
synchronously come from that list.  Opening a message, marking it seen and
deleting at QUIT run in a thread too.  Any of these tolerates another
program (an IMAP session, a second server) having renamed or removed the
file meanwhile: the file is found again by its unique name, and a file that
is gone is simply gone.
"""

from __future__ import annotations

import functools
import io
import os
from dataclasses import dataclass
from typing import IO, Any, Callable, Iterable

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.mail import pop3
from zope.interface import implementer

from mailserver.pop3.stream import CHUNK_SIZE
from mailserver.pop3.lock import MaildropInUse, SessionRegistry, lock_maildir, unlock_maildir
from mailserver.interfaces import IMailboxReader
from mailserver.pop3.wire import uidl_for

RunInThread = Callable[..., Deferred]
"""C{run(f, *args) -> Deferred}: call C{f} off the reactor thread."""

Changed = Callable[[Iterable[str]], object]
"""C{changed([maildir])}: tell IMAP sessions that a folder changed (store.notify)."""

__all__ = [
    "IMaildrop",
    "MaildirMailbox",
    "MaildropInUse",
    "MessageVanished",
    "in_thread_pool",
    "pop3_mailbox_factory",
]


class IMaildrop(pop3.IMailbox):
    """A C{pop3.IMailbox} that must be opened (locked and listed) first."""

    def open():
        """
        Lock the maildrop and list its messages.

        @return: a Deferred firing when the mailbox is ready, or failing with
            L{MaildropInUse} when another session holds it.
        """

    def markSeen(index):
        """
        Mark message C{index} (0-based) as read, as an IMAP client would see it.

        @return: a Deferred firing when done (a vanished file is not an error).
        """

    def logout():
        """Release the lock; safe to call at any time, more than once."""


class MessageVanished(Exception):
    """The message file was removed by another program during the session."""


@dataclass
class Message:
    """One message of the listing: fixed at login but for its current path."""

    unique: str
    path: str
    size: int
    uidl: str


def in_thread_pool(reactor: Any) -> RunInThread:
    """A L{RunInThread} over C{reactor}'s thread pool."""
    return functools.partial(deferToThreadPool, reactor, reactor.getThreadPool())


def pop3_mailbox_factory(
    maildir_of: Callable[[str], str],
    reactor: Any,
    reader_of: Callable[[str], IMailboxReader],
    run_in_thread: RunInThread | None = None,
    changed: Changed | None = None,
) -> Callable[[str], MaildirMailbox]:
    """
    The C{pop3.IMailbox} avatar factory for L{mailserver.auth.realm.MailRealm}.

    @param maildir_of: user name -> that user's Maildir directory.
    @param reactor: gives the thread pool for disk I/O.
    @param reader_of: Maildir directory -> its L{IMailboxReader} (the
        composition root gives L{mailserver.store.reader.MaildirReader}).
    @param run_in_thread: replaces the thread pool (tests).
    @param changed: called with C{[maildir]} after messages were marked
        seen or deleted, so IMAP sessions of this process notice at once
        (C{MailboxNotifier.changed}).
    """
    registry = SessionRegistry()
    run = run_in_thread if run_in_thread is not None else in_thread_pool(reactor)

    def factory(user: str) -> MaildirMailbox:
        return MaildirMailbox(reader_of(maildir_of(user)), registry, run, changed)

    return factory


@implementer(IMaildrop)
class MaildirMailbox:
    """The INBOX of one Maildir, for one POP3 session."""

    loginDelay = 0
    messageExpiration = None
    _log = Logger()

    def __init__(
        self,
        reader: IMailboxReader,
        registry: SessionRegistry,
        run_in_thread: RunInThread,
        changed: Changed | None = None,
    ) -> None:
        self.maildir = reader.path
        self._reader = reader
        self._registry = registry
        self._run = run_in_thread
        self._changed = changed
        self._messages: list[Message] = []
        self._deleted: set[int] = set()
        self._claimed = False
        self._lock_fd: int | None = None
        self._pending = 0  # opening, marking seen, deleting: hold the lock meanwhile
        self._closed = False

    # Session

    def open(self) -> Deferred:
        if self._claimed or self._closed:
            raise RuntimeError("a maildrop is opened once")
        try:
            self._registry.claim(self.maildir)
        except MaildropInUse:
            return fail()
        self._claimed = True
        d = self._run(_open_maildrop, self._reader)

        def opened(result: tuple[int, list[Message]]) -> None:
            self._lock_fd, self._messages = result

        def failed(failure):
            self._registry.release(self.maildir)
            self._claimed = False
            return failure

        return self._holding(d.addCallbacks(opened, failed))

    def logout(self) -> None:
        self._closed = True
        if not self._pending:
            self._release()

    def _holding(self, d: Deferred) -> Deferred:
        """
        Keep the lock until C{d} is done, even if the session ends first:
        no other session may list the Maildir halfway through our change.
        """
        self._pending += 1

        def done(result: object) -> object:
            self._pending -= 1
            if self._closed and not self._pending:
                self._release()
            return result

        return d.addBoth(done)

    def _release(self) -> None:
        if self._lock_fd is not None:
            unlock_maildir(self._lock_fd)
            self._lock_fd = None
        if self._claimed:
            self._registry.release(self.maildir)
            self._claimed = False

    # pop3.IMailbox

    def listMessages(self, i: int | None = None) -> int | list[int]:
        if i is None:
            return [0 if n in self._deleted else m.size for n, m in enumerate(self._messages)]
        return 0 if self._index(i) in self._deleted else self._messages[i].size

    def getUidl(self, i: int) -> bytes:
        return self._messages[self._index(i)].uidl.encode("ascii")

    def getMessage(self, i: int) -> Deferred:
        """A Deferred firing with the message file, opened in a thread."""
        message = self._messages[self._index(i)]

        def opened(result: tuple[IO[bytes], str]) -> IO[bytes]:
            fp, message.path = result
            return fp

        d = self._run(_open_message, self._reader, message.path, message.unique)
        return d.addCallback(opened)

    def deleteMessage(self, i: int) -> None:
        self._deleted.add(self._index(i))

    def undeleteMessages(self) -> None:
        self._deleted.clear()

    def sync(self) -> Deferred:
        """Remove the messages marked deleted; a Deferred firing with how many were."""
        doomed = [self._messages[n] for n in sorted(self._deleted)]
        self._deleted.clear()
        if not doomed:
            return succeed(0)

        def deleted(count: int) -> int:
            if count:
                self._notify()
            return count

        pairs = [(message.path, message.unique) for message in doomed]
        return self._holding(self._run(self._reader.delete, pairs)).addCallback(deleted)

    # IMaildrop

    def markSeen(self, i: int) -> Deferred:
        message = self._messages[self._index(i)]

        def moved(path: str | None) -> None:
            if path is None:
                self._log.info(
                    "pop3 message {unique} vanished before it could be marked seen",
                    unique=message.unique,
                )
            elif path != message.path:
                message.path = path
                self._notify()

        d = self._run(self._reader.mark_seen, message.path, message.unique)
        return self._holding(d).addCallback(moved)

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed([self.maildir])

    def _index(self, i: int) -> int:
        if not 0 <= i < len(self._messages):
            raise ValueError(f"no message {i + 1}")
        return i


# Blocking helpers: these run in a thread.


def _open_maildrop(reader: IMailboxReader) -> tuple[int, list[Message]]:
    """Create the Maildir if needed, lock it, list the INBOX."""
    reader.prepare()
    fd = lock_maildir(reader.path)
    try:
        return fd, _listing(reader)
    except BaseException:
        unlock_maildir(fd)
        raise


def _listing(reader: IMailboxReader) -> list[Message]:
    """The reader's listing with the UIDLs (derived from the unique names)."""
    return [Message(m.unique, m.path, m.size, uidl_for(m.unique)) for m in reader.list()]


def scan_inbox(reader: IMailboxReader) -> list[Message]:
    """The messages of C{new/} and C{cur/} of C{reader}'s Maildir, oldest delivery first."""
    return _listing(reader)


def _open_message(reader: IMailboxReader, path: str, unique: str) -> tuple[IO[bytes], str]:
    opened = reader.open(path, unique)
    if opened is None:
        raise MessageVanished(unique)
    fp, path = opened
    return _read_if_small(fp), path


def _read_if_small(fp: IO[bytes]) -> IO[bytes]:
    """
    A message of at most one streaming chunk, read now (in the same thread
    trip as the open) and handed over in memory, so sending it needs no
    more trips to the thread pool; a larger one stays the open file.
    """
    if os.fstat(fp.fileno()).st_size > CHUNK_SIZE:
        return fp
    with fp:
        return io.BytesIO(fp.read())
