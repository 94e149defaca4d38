"""
Durable delivery into Maildirs: the writing half of L{IMailStore}.

One message goes to several Maildirs at once, all or nothing: every copy is
written into ``tmp/`` and fsynced, then every copy is renamed into ``new/``
and each ``new/`` directory is fsynced; only then does C{deliver} fire.  If
anything fails, every file this call made is removed again and the caller
gets a 451, so the client retries and no recipient gets the message twice.
All disk work runs in a thread pool; the reactor only schedules it.

Folders follow Maildir++: a folder ``Name`` of the Maildir ``M`` is the
Maildir ``M/.Name``.  Delivery only writes the INBOX (the Maildir it is
given); the reading side (POP3/IMAP) owns folders, flags and UIDs.
"""

from __future__ import annotations

import errno
import itertools
import os
import threading
from typing import Callable, NoReturn, Sequence

from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from mailserver.errors import MailError
from mailserver.interfaces import IMailStore
from mailserver.store.names import make_name
from mailserver.store.quota import add_usage_blocking
from mailserver.durable import fsync_directory
from mailserver.spooled import SpooledMessage, write_message

#: The three directories of a Maildir.
SUBDIRS = ("tmp", "new", "cur")

#: Mode of the directories we create and of message files.
DIR_MODE = 0o700
FILE_MODE = 0o600

#: errnos for which a hard link is replaced by a second write.
_LINK_FALLBACK = frozenset({errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP})

#: How many fresh names to try when one already exists in tmp/.
_NAME_ATTEMPTS = 5

_OPEN_FLAGS = (
    os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
)


class _Counter:
    """The per-process delivery counter in file names; safe across threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next = itertools.count(1)

    def __call__(self) -> int:
        with self._lock:
            return next(self._next)


# One per process, shared by every store: two stores in one process must
# not hand out the same (time, pid, counter).
_counter = _Counter()

#: Directory changes in one Maildir (a file made or linked in tmp/, a rename
#: into new/) are serialised among this process's writer threads by one of
#: these locks (striped by Maildir path).  The kernel serialises them anyway,
#: on the directories' locks, but a thread waiting there spins on a CPU for
#: as long as the other one allocates an inode, which on ext4 without a
#: journal can be long; waiting here it sleeps (bench/README.rst, "SMTP CPU
#: per message").
_DIRECTORY_LOCKS = tuple(threading.Lock() for _ in range(64))


def _inside(directory: str, sub: str, name: str) -> str:
    """C{os.path.join(directory, sub, name)} for a subdirectory and a file name without slashes, cheaper."""
    if directory and not directory.endswith("/"):
        return f"{directory}/{sub}/{name}"
    return os.path.join(directory, sub, name)


def _directory_lock(maildir: str) -> threading.Lock:
    return _DIRECTORY_LOCKS[hash(maildir) % len(_DIRECTORY_LOCKS)]


def ensure_maildir(path: str) -> bool:
    """
    Create the Maildir C{path} (``tmp new cur``) and its missing parents.

    Directories are created with mode 0700 and each new directory entry is
    fsynced, so a delivery acknowledged afterwards cannot vanish with the
    directory.  Blocking: call it from a thread.

    @return: True if anything was created.
    @raise OSError: when a part exists and is not a directory, or on any
        other failure (NotADirectoryError, PermissionError, ...).
    """
    if all(os.path.isdir(os.path.join(path, sub)) for sub in SUBDIRS):
        return False
    created = _makedirs(path)
    for sub in SUBDIRS:
        sub_path = os.path.join(path, sub)
        if _mkdir(sub_path):
            created.append(sub_path)
    for parent in dict.fromkeys(os.path.dirname(d) or "." for d in created):
        fsync_directory(parent)
    return bool(created)


def _makedirs(path: str) -> list[str]:
    """Create C{path} and missing parents (0700); return those created, outermost first."""
    missing: list[str] = []
    current = os.path.abspath(path)
    while not os.path.isdir(current):
        missing.append(current)
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    created = []
    for directory in reversed(missing):
        if _mkdir(directory):
            created.append(directory)
    return created


def _mkdir(path: str) -> bool:
    """mkdir 0700; False if a directory is already there (a concurrent delivery)."""
    try:
        os.mkdir(path, DIR_MODE)
    except FileExistsError:
        if not os.path.isdir(path):
            raise NotADirectoryError(errno.ENOTDIR, "exists and is not a directory", path)
        return False
    return True


def _virtual_size(data: bytes | SpooledMessage) -> int:
    """Size with every line ending as CRLF (IMAP's RFC822.SIZE)."""
    if isinstance(data, SpooledMessage):
        return data.virtual_size()
    return len(data) + data.count(b"\n") - data.count(b"\r\n")


class _Delivery:
    """
    The disk work of one C{deliver} call, run in a thread.

    It remembers every file it made so a failure can remove them all;
    problems met while cleaning up are kept for the reactor thread to log.
    """

    def __init__(
        self,
        message: bytes | SpooledMessage,
        copies: Sequence[tuple[str, bytes, str]],
        now: float,
        host: str,
        plan: Callable[[], Sequence[tuple]] | None = None,
    ) -> None:
        self.message = message
        self.copies = copies  # (Maildir, prefix, Maildir info letters or "")
        self.plan = plan  # called first, in the writer thread, for the copies
        self.now = now
        self.host = host
        self.tmp_files: list[str] = []
        self.new_files: list[str] = []
        self.cleanup_errors: list[OSError] = []
        self.sizes: list[int] = []  # file size of each copy, for the quota files

    def record_usage(self) -> None:
        """Add each durable copy to its Maildir's ``maildirsize`` (when it has one)."""
        for copy, size in zip(self.copies, self.sizes):
            add_usage_blocking(copy[0], size, 1)  # copy: (Maildir, prefix, ...)

    def run(self) -> list[str]:
        done = False
        try:
            names, new_dirs = self._deliver()
            for new_dir in new_dirs:
                fsync_directory(new_dir)
            done = True
            self.record_usage()
            return names
        finally:
            if not done:
                self._clean_up()

    def run_unsynced(self) -> tuple[list[str], list[str]]:
        """Everything but the final C{new/} fsyncs, which the caller does for a whole batch."""
        done = False
        try:
            result = self._deliver()
            done = True
            return result
        finally:
            if not done:
                self._clean_up()

    def _deliver(self) -> tuple[list[str], list[str]]:
        if self.plan is not None:
            self.copies = _checked_copies(self.plan())
        # 1. every copy into tmp/, fsynced.
        pid = os.getpid()
        written: dict[bytes, str] = {}  # prefix -> tmp file holding that content
        sizes: dict[bytes, tuple[int, int]] = {}
        placed: list[tuple[str, str]] = []  # (tmp path, final name)
        message_size, message_vsize = len(self.message), _virtual_size(self.message)
        for maildir, prefix, _ in self.copies:
            if prefix not in sizes:
                sizes[prefix] = (len(prefix) + message_size, _virtual_size(prefix) + message_vsize)
            size, vsize = sizes[prefix]
            source = written.get(prefix)
            tmp_path, name = self._place(maildir, pid, size, vsize, prefix, source)
            self.sizes.append(size)
            written.setdefault(prefix, tmp_path)
            placed.append((tmp_path, name))
        # 2. every copy into new/, then each new/ fsynced once.
        new_dirs: dict[str, None] = {}
        for (maildir, _, info), (tmp_path, name) in zip(self.copies, placed):
            # Flagged copies (Sieve :flags) go straight to cur/ with their info, as Dovecot's LDA does.
            sub = "cur" if info else "new"
            new_path = _inside(maildir, sub, name + (":2," + info if info else ""))
            try:
                with _directory_lock(maildir):
                    os.rename(tmp_path, new_path)
            except FileNotFoundError:  # new/ removed behind our back
                ensure_maildir(maildir)
                os.rename(tmp_path, new_path)
            self.tmp_files.remove(tmp_path)
            self.new_files.append(new_path)
            new_dirs[os.path.normpath(os.path.dirname(new_path))] = None
        return [name for _, name in placed], list(new_dirs)

    def _place(
        self,
        maildir: str,
        pid: int,
        size: int,
        vsize: int,
        prefix: bytes,
        source: str | None,
    ) -> tuple[str, str]:
        """
        Put one copy in C{maildir}/tmp: a hard link of C{source}, or a new
        file.  The Maildir is made (L{ensure_maildir}) only when its tmp/ is
        missing, so a delivery to an existing one costs no C{stat()}.
        """
        made = False
        lock = _directory_lock(maildir)
        for _ in range(_NAME_ATTEMPTS):
            name = make_name(self.now, pid, _counter(), self.host, size, vsize)
            tmp_path = _inside(maildir, "tmp", name)
            try:
                if source is not None and self._link(source, tmp_path, lock):
                    return tmp_path, name
                self._write(tmp_path, prefix, lock)
            except FileExistsError:
                continue
            except FileNotFoundError:
                if made:
                    raise
                ensure_maildir(maildir)
                made = True
                continue
            return tmp_path, name
        raise FileExistsError(errno.EEXIST, "no free name in tmp/", maildir)

    def _link(self, source: str, tmp_path: str, lock: threading.Lock) -> bool:
        """Hard-link C{source} to C{tmp_path}; False if this file system can't."""
        try:
            with lock:
                os.link(source, tmp_path)
        except FileExistsError:
            raise
        except OSError as e:
            if e.errno in _LINK_FALLBACK:
                return False
            raise
        self.tmp_files.append(tmp_path)
        return True

    def _write(self, tmp_path: str, prefix: bytes, lock: threading.Lock) -> None:
        with lock:  # only the file's creation: writing and fsyncing it need no directory lock
            fd = os.open(tmp_path, _OPEN_FLAGS, FILE_MODE)
        self.tmp_files.append(tmp_path)
        try:
            write_message(fd, self.message, prefix)
            os.fsync(fd)
        finally:
            os.close(fd)

    def _clean_up(self) -> None:
        """Remove every file this delivery made, tmp/ and new/ alike."""
        touched: dict[str, None] = {}
        for path in self.tmp_files + self.new_files:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError as e:
                self.cleanup_errors.append(e)
        for path in self.new_files:
            touched[os.path.dirname(path)] = None
        # Make the removals from new/ durable too, so a crash now cannot
        # bring back a copy of a message the client will send again.
        for directory in touched:
            try:
                fsync_directory(directory)
            except OSError as e:
                self.cleanup_errors.append(e)
        self.tmp_files = []
        self.new_files = []


def _checked_copies(copies: Sequence[tuple]) -> list[tuple[str, bytes, str]]:
    """C{(path, prefix[, info])} copies as C{(path, prefix, info or "")}; TypeError/ValueError when malformed."""
    checked = []
    for copy in copies:
        path, prefix, *info = copy
        path = os.fspath(path)
        if not isinstance(path, str) or not isinstance(prefix, bytes):
            raise TypeError("copies must be (str path, bytes prefix) pairs")
        if not path or "\0" in path:
            raise ValueError(f"bad Maildir path {path!r}")
        if info and not (len(info) == 1 and isinstance(info[0], str) and info[0].isalpha()):
            raise ValueError(f"bad Maildir info {info!r}")
        checked.append((path, prefix, info[0] if info else ""))
    return checked


def _run_batch(deliveries: list[_Delivery]) -> list[list[str] | Exception]:
    """
    Group commit: write and rename every delivery of the batch, then fsync
    each C{new/} directory once for all of them.  A delivery fails alone
    (its files removed); a failed directory fsync fails every delivery that
    renamed into that directory.
    """
    results: list[list[str] | Exception] = []
    users: dict[str, list[int]] = {}
    for index, delivery in enumerate(deliveries):
        try:
            names, new_dirs = delivery.run_unsynced()
        except Exception as error:  # handed to that delivery's Deferred
            results.append(error)
            continue
        results.append(names)
        for new_dir in new_dirs:
            users.setdefault(new_dir, []).append(index)
    for new_dir, indexes in users.items():
        try:
            fsync_directory(new_dir)
        except OSError as error:
            for index in indexes:
                if not isinstance(results[index], Exception):
                    deliveries[index]._clean_up()
                    results[index] = error
    for delivery, result in zip(deliveries, results):
        if not isinstance(result, Exception):
            delivery.record_usage()
    return results


@implementer(IMailStore)
class MaildirStore:
    """
    Deliver messages into Maildirs, durably, off the reactor thread.

    @param reactor: gives the time (C{seconds()}), the default thread pool
        (C{getThreadPool()}) and C{callFromThread}.
    @param hostname: the host name written into file names (C{myhostname}).
    @param on_delivered: called on the reactor thread after each successful
        delivery with the list of Maildir paths written to (distinct, in
        order), e.g. to wake IMAP IDLE sessions.
    @param threadpool: the pool for disk work; the reactor's by default.
    """

    log = Logger()

    def __init__(
        self,
        reactor,
        hostname: str,
        on_delivered: Callable[[list[str]], object] | None = None,
        threadpool=None,
    ) -> None:
        if not hostname:
            raise ValueError("hostname must not be empty")
        self._reactor = reactor
        self._hostname = hostname
        self._on_delivered = on_delivered
        self._threadpool = threadpool
        # Group commit: deliveries that arrive while others are being written
        # wait for the next batch, which shares one fsync per new/ directory.
        self._waiting: list[tuple[_Delivery, Deferred]] = []
        self._writers = 0
        # Two writers, not four: concurrent writers into one Maildir spin on
        # its directory locks in the kernel while another allocates an inode,
        # and fewer writers make bigger batches (fewer new/ fsyncs, thread
        # trips).  bench/README.rst, "SMTP CPU per message": 1 KB at C = 8,
        # 1.40 -> 1.17 ms CPU/msg at the same rate; one writer halves the
        # rate at C = 32.
        self.max_writers = 2
        self.max_batch = 64

    def deliver(
        self, message: bytes | SpooledMessage, copies: Sequence[tuple[str, bytes]]
    ) -> Deferred[list[str]]:
        """
        Write C{prefix + message} into each C{(maildir_path, prefix)}; a
        L{SpooledMessage} is copied from its spool file, never loaded whole.
        A copy C{(maildir_path, prefix, info)} with Maildir info letters
        (C{"FS"}, from Sieve's :flags) goes into C{cur/} as C{name:2,info}.

        C{copies} may instead be a blocking callable returning them: it is
        called first in the writer thread, so a caller whose copies depend
        on the disk (Sieve scripts) needs no thread trip of its own.

        Fires with the new file names (one per copy, in order) once every
        copy is fsynced in C{new/}; fails with L{MailError} 451 having left
        no file behind.  Wrong argument types raise at once (TypeError,
        ValueError), before any disk work (from a callable: the delivery
        fails with them).
        """
        if not isinstance(message, (bytes, SpooledMessage)):
            raise TypeError("message must be bytes or a SpooledMessage")
        if callable(copies):
            planned, plan = [], copies
        else:
            planned, plan = _checked_copies(copies), None
            if not planned:
                return succeed([])
        delivery = _Delivery(message, planned, self._reactor.seconds(), self._hostname, plan)
        d: Deferred[list[str]] = Deferred()
        self._waiting.append((delivery, d))
        self._start_writers()
        d.addCallbacks(self._delivered, self._failed, callbackArgs=(delivery,), errbackArgs=(delivery,))
        return d

    def file_into(
        self, maildir: str, folder: str, flags: Sequence[str] = (), create: bool = False
    ) -> tuple[str, str, list[str]]:
        """The folder a Sieve fileinto copy goes to, and its info letters (blocking; L{filing.file_into})."""
        from mailserver.store import filing  # filing -> folders -> this module: imported when first used

        return filing.file_into(maildir, folder, flags, create)

    def _start_writers(self) -> None:
        pool = self._threadpool
        if pool is None:
            pool = self._reactor.getThreadPool()
        while self._waiting and self._writers < self.max_writers:
            batch, self._waiting = self._waiting[: self.max_batch], self._waiting[self.max_batch :]
            self._writers += 1
            done = deferToThreadPool(self._reactor, pool, _run_batch, [delivery for delivery, _ in batch])
            done.addBoth(self._batch_done, batch)

    def _batch_done(self, results, batch: list[tuple[_Delivery, Deferred]]) -> None:
        self._writers -= 1
        for index, (_, d) in enumerate(batch):
            result = results if isinstance(results, Failure) else results[index]
            if isinstance(result, (Failure, Exception)):
                d.errback(result)
            else:
                d.callback(result)
        self._start_writers()

    def _log_cleanup(self, delivery: _Delivery) -> None:
        for error in delivery.cleanup_errors:
            self.log.error(
                "maildir: could not remove {filename} after a failed delivery: {error}",
                filename=error.filename,
                error=error,
            )

    def _delivered(self, names: list[str], delivery: _Delivery) -> list[str]:
        if delivery.cleanup_errors:  # a copy failed and was cleaned up, yet the delivery stands (never expected)
            self._log_cleanup(delivery)
        if self._on_delivered is not None and delivery.copies:
            maildirs = list(dict.fromkeys(copy[0] for copy in delivery.copies))
            try:
                self._on_delivered(maildirs)
            except Exception:
                # The mail is safely stored: a failing listener must not
                # turn that into an error the client would retry.
                self.log.failure("maildir: on_delivered callback failed")
        return names

    def _failed(self, failure: Failure, delivery: _Delivery) -> NoReturn:
        self._log_cleanup(delivery)
        failure.trap(OSError)
        error = failure.value
        self.log.error(
            "maildir: delivery failed, nothing delivered: {error}",
            error=error,
        )
        raise MailError(451, "4.3.0", "Error: mail store write error") from error
