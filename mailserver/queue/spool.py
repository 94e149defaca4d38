"""
The outbound queue on disk: a message's state is the directory it sits in.

Layout under the spool directory (all 0700)::

    tmp/        files being written (never read)
    data/ID     the message content, written once
    incoming/ID  envelope of a message not yet tried
    active/ID    envelope of a message being delivered right now
    deferred/ID  envelope of a message waiting for its next attempt
    corrupt/ID   envelopes that cannot be read, kept for the administrator
    flush        trigger file: "try every deferred message now" (queue flush)

The envelope is small versioned JSON (L{mailserver.queue.envelope}); moving
a message between states is one C{rename} of its envelope.  Every write is
tmp file, fsync, rename, fsync of the directory, so C{enqueue} fires only
once the message cannot be lost.  On start, L{Spool.recover} puts whatever
was left in C{active/} by a crash back into C{incoming/}: such a message is
delivered again (at least once), never dropped.

L{SpoolDirectory} does the blocking work (the command-line tools use it
directly); L{Spool} runs it in a thread pool for the reactor and provides
L{IOutboundQueue}.
"""

from __future__ import annotations

import errno
import os
import secrets
import threading
import time
from typing import Callable, Iterable, Sequence

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from zope.interface import implementer

from mailserver.errors import MailError
from mailserver.interfaces import IOutboundQueue
from mailserver.queue.envelope import (
    EnvelopeError,
    QueueEnvelope,
    RecipientState,
    dumps,
    is_queue_id,
    loads,
)
from mailserver.durable import fsync_directory, write_new_file
from mailserver.spooled import SpooledMessage, write_message

INCOMING = "incoming"
ACTIVE = "active"
DEFERRED = "deferred"
STATES = (INCOMING, ACTIVE, DEFERRED)
CORRUPT = "corrupt"
DATA = "data"
TMP = "tmp"
FLUSH_TRIGGER = "flush"

DIR_MODE = 0o700
FILE_MODE = 0o600

#: tmp/ and orphaned data/ files older than this are removed by clean():
#: far longer than any write of a message (tmp/) or between the content and
#: its envelope (data/) takes.
STALE_AGE = 3600.0

_READ_FLAGS = os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)


class QueueEntryGone(LookupError):
    """The message is no longer queued (delivered, or deleted by the administrator)."""


class NotDue(Exception):
    """The deferred message's next attempt is later (another scan got there first)."""



class _QueueIds:
    """
    Postfix-like queue ids: seconds and microseconds in hex plus a counter.

    Unique in practice; L{SpoolDirectory.store} makes sure by creating
    C{data/ID} exclusively and drawing another id on a collision.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counter = secrets.randbelow(0x10000)

    def __call__(self, now: float) -> str:
        with self._lock:
            self._counter = (self._counter + 1) & 0xFFFF
            counter = self._counter
        seconds = int(now)
        micros = int((now - seconds) * 1_000_000) & 0xFFFFF
        return f"{seconds & 0xFFFFF:05X}{micros:05X}{counter:04X}"


_new_queue_id = _QueueIds()


def _read_file(path: str) -> bytes:
    fd = os.open(path, _READ_FLAGS)
    try:
        chunks = []
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
    finally:
        os.close(fd)


class SpoolDirectory:
    """
    Blocking operations on one spool directory.  Call them from a thread
    (L{Spool} does) or from a command-line tool.
    """

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        self._ensured = False

    def _dir(self, name: str) -> str:
        return os.path.join(self.path, name)

    def _file(self, state: str, queue_id: str) -> str:
        if not is_queue_id(queue_id):
            raise ValueError(f"bad queue id {queue_id!r}")
        return os.path.join(self.path, state, queue_id)

    # -- set-up and recovery ---------------------------------------------

    def ensure(self) -> None:
        """Create the spool directory and its subdirectories (mode 0700)."""
        if self._ensured:
            return
        created = []
        for directory in [self.path] + [self._dir(d) for d in (TMP, DATA, CORRUPT) + STATES]:
            try:
                os.makedirs(directory, DIR_MODE)
            except FileExistsError:
                if not os.path.isdir(directory):
                    raise NotADirectoryError(errno.ENOTDIR, "not a directory", directory)
            else:
                created.append(directory)
        for parent in dict.fromkeys(os.path.dirname(d) for d in created):
            fsync_directory(parent)
        self._ensured = True

    def recover(self) -> list[str]:
        """
        Return messages left in C{active/} by a crash to C{incoming/}.

        Call once at start, before delivering.  Returns the recovered ids.
        """
        self.ensure()
        recovered = []
        for queue_id in self.ids(ACTIVE):
            try:
                os.rename(self._file(ACTIVE, queue_id), self._file(INCOMING, queue_id))
            except FileNotFoundError:
                continue
            recovered.append(queue_id)
        if recovered:
            fsync_directory(self._dir(INCOMING))
            fsync_directory(self._dir(ACTIVE))
        return recovered

    def clean(self, now: float | None = None, limit: int = 10000) -> list[tuple[str, float]]:
        """
        Remove crash leftovers older than L{STALE_AGE}: files in C{tmp/} and
        data files no envelope refers to (envelopes are listed first, so a
        message being queued meanwhile is young and kept).  At most C{limit}
        removals per call.  Returns C{(path relative to the spool, age)}.
        """
        self.ensure()
        now = time.time() if now is None else now
        removed: list[tuple[str, float]] = []
        referenced = {queue_id for state in STATES + (CORRUPT,) for queue_id in self.ids(state)}
        candidates = [os.path.join(TMP, name) for name in sorted(os.listdir(self._dir(TMP)))]
        candidates += [os.path.join(DATA, queue_id) for queue_id in self.ids(DATA) if queue_id not in referenced]
        for relative in candidates:
            if len(removed) >= limit:
                break
            path = os.path.join(self.path, relative)
            try:
                age = now - os.lstat(path).st_mtime
                if age <= STALE_AGE:
                    continue
                os.unlink(path)
            except FileNotFoundError:
                continue
            removed.append((relative, age))
        for directory in dict.fromkeys(os.path.dirname(r) for r, _ in removed):
            fsync_directory(self._dir(directory))
        return removed

    # -- writing ---------------------------------------------------------

    def store(self, sender: str, recipients: Sequence[str], message: bytes | SpooledMessage, now: float) -> str:
        """
        Queue a message durably in C{incoming/}; return its queue id.

        The content goes to C{data/ID} first (created exclusively, so two
        messages can never share an id), then the envelope is renamed into
        C{incoming/}; each step is fsynced.  On failure nothing is left behind.
        """
        self.ensure()
        data_tmp = self._write_tmp(message)
        try:
            queue_id = self._link_data(data_tmp, now)
        finally:
            os.unlink(data_tmp)
        try:
            fsync_directory(self._dir(DATA))
            envelope = QueueEnvelope(
                queue_id=queue_id,
                sender=sender,
                recipients=[RecipientState(address) for address in recipients],
                arrival=now,
                next_attempt=now,
                size=len(message),
            )
            self._write_envelope(INCOMING, envelope)
        except BaseException:
            self._unlink_quietly(self._file(DATA, queue_id))
            raise
        return queue_id

    def _link_data(self, tmp_path: str, now: float) -> str:
        for _ in range(100):
            queue_id = _new_queue_id(now)
            try:
                os.link(tmp_path, self._file(DATA, queue_id))
            except FileExistsError:
                continue
            return queue_id
        raise FileExistsError(errno.EEXIST, "no free queue id", self._dir(DATA))

    def _write_tmp(self, content: bytes | SpooledMessage) -> str:
        """Write C{content} to a new file in tmp/, fsynced; return its path."""
        for _ in range(10):
            path = os.path.join(self._dir(TMP), f"{os.getpid()}.{secrets.token_hex(8)}")
            try:
                write_new_file(path, content, FILE_MODE, write=write_message)
            except FileExistsError:
                continue
            return path
        raise FileExistsError(errno.EEXIST, "no free name", self._dir(TMP))

    def _write_envelope(self, state: str, envelope: QueueEnvelope) -> None:
        """Replace C{state/ID} with C{envelope}, atomically and durably."""
        tmp_path = self._write_tmp(dumps(envelope))
        try:
            os.rename(tmp_path, self._file(state, envelope.queue_id))
        except BaseException:
            self._unlink_quietly(tmp_path)
            raise
        fsync_directory(self._dir(state))
        envelope.state = state

    @staticmethod
    def _unlink_quietly(path: str) -> None:
        try:
            os.unlink(path)
        except OSError:
            pass

    # -- reading ---------------------------------------------------------

    def ids(self, state: str) -> list[str]:
        """The queue ids in directory C{state}, oldest id first."""
        try:
            names = os.listdir(self._dir(state))
        except FileNotFoundError:
            return []
        return sorted(name for name in names if is_queue_id(name))

    def load(self, state: str, queue_id: str) -> QueueEnvelope:
        """
        Read the envelope of C{queue_id} in C{state}.

        @raise QueueEntryGone: no such file.
        @raise EnvelopeError: unreadable; the file has been moved to corrupt/.
        """
        path = self._file(state, queue_id)
        try:
            data = _read_file(path)
        except FileNotFoundError:
            raise QueueEntryGone(queue_id) from None
        try:
            envelope = loads(data, state)
            if envelope.queue_id != queue_id:
                raise EnvelopeError(f"envelope names queue id {envelope.queue_id}")
        except EnvelopeError:
            self._move_to_corrupt(state, queue_id)
            raise
        return envelope

    def _move_to_corrupt(self, state: str, queue_id: str) -> None:
        try:
            os.rename(self._file(state, queue_id), self._file(CORRUPT, queue_id))
        except FileNotFoundError:
            return
        fsync_directory(self._dir(CORRUPT))
        fsync_directory(self._dir(state))

    def find(self, queue_id: str) -> QueueEnvelope:
        """The envelope of C{queue_id} in whichever state it is; L{QueueEntryGone} if none."""
        for state in STATES:
            try:
                return self.load(state, queue_id)
            except QueueEntryGone:
                continue
        raise QueueEntryGone(queue_id)

    def read_message(self, queue_id: str) -> bytes:
        """The content of C{queue_id}; L{QueueEntryGone} if it has been removed."""
        try:
            return _read_file(self._file(DATA, queue_id))
        except FileNotFoundError:
            raise QueueEntryGone(queue_id) from None

    def entries(self) -> list[QueueEnvelope]:
        """Every readable envelope, active first, then incoming and deferred (as mailq)."""
        found: list[QueueEnvelope] = []
        for state in (ACTIVE, INCOMING, DEFERRED):
            for queue_id in self.ids(state):
                try:
                    found.append(self.load(state, queue_id))
                except (QueueEntryGone, EnvelopeError):
                    continue
        return found

    def due(self, now: float, flush: bool = False, busy: Iterable[str] = ()) -> list[str]:
        """
        Ids worth an attempt now: everything in incoming/, deferred messages
        whose time has come (all of them when C{flush}), and entries of
        active/ that nobody is working on (C{busy} are the ones in progress:
        an active entry otherwise means a failed state change).
        """
        busy = set(busy)
        due = [i for i in self.ids(INCOMING) if i not in busy]
        due += [i for i in self.ids(ACTIVE) if i not in busy]
        for queue_id in self.ids(DEFERRED):
            if queue_id in busy:
                continue
            try:
                envelope = self.load(DEFERRED, queue_id)
            except (QueueEntryGone, EnvelopeError):
                continue
            if flush or envelope.next_attempt <= now:
                due.append(queue_id)
        return list(dict.fromkeys(due))

    # -- state changes (the queue manager) --------------------------------

    def activate(self, queue_id: str, due_by: float | None = None) -> tuple[QueueEnvelope, bytes]:
        """
        Move C{queue_id} into active/ and return its envelope and content.

        @param due_by: leave a deferred message alone unless its next attempt
            is at or before this time (None: whenever, as for a flush).
        @raise QueueEntryGone: it is not queued any more.
        @raise NotDue: deferred until after C{due_by}.
        @raise EnvelopeError: unreadable (moved to corrupt/).
        """
        if due_by is not None and os.path.exists(self._file(DEFERRED, queue_id)):
            try:
                if self.load(DEFERRED, queue_id).next_attempt > due_by:
                    raise NotDue(queue_id)
            except QueueEntryGone:
                pass
        # Not in incoming/ or deferred/: already in active/ (left by a failed state change).
        for state in (INCOMING, DEFERRED):
            try:
                os.rename(self._file(state, queue_id), self._file(ACTIVE, queue_id))
            except FileNotFoundError:
                continue
            fsync_directory(self._dir(ACTIVE))
            fsync_directory(self._dir(state))
            break
        envelope = self.load(ACTIVE, queue_id)
        try:
            message = self.read_message(queue_id)
        except QueueEntryGone:
            # Content deleted (queue delete raced a state change): drop the envelope too.
            self._unlink_quietly(self._file(ACTIVE, queue_id))
            raise
        return envelope, message

    def save(self, envelope: QueueEnvelope) -> None:
        """Rewrite the envelope where it is (in active/): recipient progress."""
        if not os.path.exists(self._file(ACTIVE, envelope.queue_id)):
            raise QueueEntryGone(envelope.queue_id)
        self._write_envelope(ACTIVE, envelope)

    def defer(self, envelope: QueueEnvelope) -> None:
        """Write C{envelope} and move it from active/ to deferred/."""
        self.save(envelope)
        os.rename(self._file(ACTIVE, envelope.queue_id), self._file(DEFERRED, envelope.queue_id))
        fsync_directory(self._dir(DEFERRED))
        fsync_directory(self._dir(ACTIVE))
        envelope.state = DEFERRED

    def remove(self, queue_id: str) -> bool:
        """Remove a message in any state (envelope first, then content); True if it existed."""
        found = False
        for state in STATES:
            try:
                os.unlink(self._file(state, queue_id))
            except FileNotFoundError:
                continue
            fsync_directory(self._dir(state))
            found = True
        try:
            os.unlink(self._file(DATA, queue_id))
        except FileNotFoundError:
            pass
        else:
            fsync_directory(self._dir(DATA))
        return found

    def remove_all(self) -> int:
        """Remove every queued message (C{postsuper -d ALL}); return how many."""
        ids = {queue_id for state in STATES for queue_id in self.ids(state)}
        return sum(1 for queue_id in sorted(ids) if self.remove(queue_id))

    # -- flush trigger -----------------------------------------------------

    def request_flush(self) -> None:
        """Ask the running queue manager to try every deferred message now."""
        self.ensure()
        flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
        os.close(os.open(self._dir(FLUSH_TRIGGER), flags, FILE_MODE))

    def take_flush_request(self) -> bool:
        """True (and the trigger removed) if a flush was requested."""
        try:
            os.unlink(self._dir(FLUSH_TRIGGER))
        except FileNotFoundError:
            return False
        return True


@implementer(IOutboundQueue)
class Spool:
    """
    The outbound queue for the reactor: L{SpoolDirectory} in a thread pool.

    @param directory: the spool directory (C{$data_directory/queue}).
    @param reactor: gives the time and the thread pool.
    @param threadpool: the pool for disk work; the reactor's by default.
    @param clock: where arrival times come from (C{IReactorTime}); the
        reactor by default.  Give the queue manager's clock.
    """

    log = Logger()

    def __init__(self, directory: str, reactor, threadpool=None, clock=None) -> None:
        self.directory = SpoolDirectory(directory)
        self._reactor = reactor
        self._threadpool = threadpool
        self._clock = clock or reactor
        self._listeners: list[Callable[[str], object]] = []

    def _run(self, function, *args) -> Deferred:
        pool = self._threadpool or self._reactor.getThreadPool()
        return deferToThreadPool(self._reactor, pool, function, *args)

    def add_listener(self, listener: Callable[[str], object]) -> None:
        """Call C{listener(queue_id)} after each message is durably queued."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[str], object]) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def enqueue(
        self, sender: str, recipients: Sequence[str], message: bytes | SpooledMessage, client: object = None
    ) -> Deferred:
        """
        Queue C{message} from C{sender} (C{""} for the null sender) to
        C{recipients} (C{client}, the origin, is not recorded); fire with the queue id once it is durable, or fail
        with L{MailError} 451 having queued nothing.
        """
        if not isinstance(sender, str) or not isinstance(message, (bytes, SpooledMessage)):
            raise TypeError("sender must be str and message bytes or a SpooledMessage")
        recipients = list(dict.fromkeys(recipients))
        if not recipients or not all(isinstance(r, str) and r for r in recipients):
            raise ValueError("enqueue needs at least one non-empty recipient")
        d = self._run(self.directory.store, sender, recipients, message, self._clock.seconds())

        def failed(failure):
            failure.trap(OSError)
            self.log.error(
                "cannot queue message from <{sender}>: {error}",
                sender=sender,
                error=failure.getErrorMessage(),
            )
            raise MailError(451, "4.3.0", "Queue file write error")

        def queued(queue_id: str) -> str:
            self.log.info(
                "{queue_id}: from=<{sender}>, size={size}, nrcpt={nrcpt} (queue active)",
                queue_id=queue_id,
                sender=sender,
                size=len(message),
                nrcpt=len(recipients),
            )
            for listener in list(self._listeners):
                try:
                    listener(queue_id)
                except Exception:
                    self.log.failure("queue listener failed for {queue_id}", queue_id=queue_id)
            return queue_id

        return d.addCallbacks(queued, failed)

    # Administration (the same as the command-line tools, off the reactor thread).

    def list(self) -> Deferred:
        """Fire with every queued L{QueueEnvelope} (C{state} says where it is)."""
        return self._run(self.directory.entries)

    def delete(self, queue_id: str) -> Deferred:
        """Remove one message; fire with True if it was queued."""
        return self._run(self.directory.remove, queue_id)

    def delete_all(self) -> Deferred:
        """Remove every message; fire with how many."""
        return self._run(self.directory.remove_all)

    # For the queue manager.

    def recover(self) -> Deferred:
        return self._run(self.directory.recover)

    def clean(self) -> Deferred:
        return self._run(self.directory.clean, self._clock.seconds())

    def due(self, now: float, flush: bool = False, busy: Iterable[str] = ()) -> Deferred:
        return self._run(self.directory.due, now, flush, list(busy))

    def activate(self, queue_id: str, due_by: float | None = None) -> Deferred:
        return self._run(self.directory.activate, queue_id, due_by)

    def save(self, envelope: QueueEnvelope) -> Deferred:
        return self._run(self.directory.save, envelope)

    def defer(self, envelope: QueueEnvelope) -> Deferred:
        return self._run(self.directory.defer, envelope)

    def remove(self, queue_id: str) -> Deferred:
        return self._run(self.directory.remove, queue_id)

    def take_flush_request(self) -> Deferred:
        return self._run(self.directory.take_flush_request)
