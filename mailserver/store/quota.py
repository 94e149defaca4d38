"""
Per-user quotas over a Maildir++ ``maildirsize`` file.

The file sits in the user's Maildir (the INBOX, parent of every folder).
Its first line holds the limits, ``<bytes>S,<count>C``; each later line is
``<bytes> <count>``, a change appended as it happens (a delivery ``1234 1``,
an expunge ``-1234 -1``).  Usage is the sum of those lines.  As the
Maildir++ specification says, the file is recalculated from the Maildir
(every folder's ``new/`` and ``cur/``, sizes from ``,S=``) when it is
missing, larger than 5120 bytes, unreadable, has other limits on its first
line, or is older than 15 minutes while it says the user is over quota.
Dovecot and Courier read and write the same file.

Users without a limit get no file: appends only go to existing files.
All functions named C{*_blocking} or used by them do disk I/O: call them
in a thread (L{MaildirQuota} does).
"""

from __future__ import annotations

import email.utils
import os
import time
from typing import Any, Callable

from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from zope.interface import implementer

from mailserver.durable import replace_atomically
from mailserver.errors import MailError
from mailserver.interfaces import IMailStore, IQuota
from mailserver.quota_rule import QuotaLimits, Usage, over_quota
from mailserver.store.names import parse_name

MAILDIRSIZE = "maildirsize"
#: Maildir++: a larger file is recalculated (and so shrinks to two lines).
MAX_FILE_SIZE = 5120
#: Maildir++: a file this old that says "over quota" is recalculated first.
STALE_AFTER = 15 * 60
#: Folders of a Maildir scanned at most (a bound on the recalculation loop).
MAX_FOLDERS = 100_000

#: RCPT checks may use a usage read this recently (seconds), and how many such reads are kept.
RECENT_SECONDS = 2.0
RECENT_LIMIT = 10_000

log = Logger(namespace="mailserver.quota")


def quota_root(maildir: str) -> str:
    """The Maildir holding ``maildirsize`` for C{maildir} (a folder ``M/.Name`` -> ``M``)."""
    maildir = os.path.normpath(maildir)
    if os.path.basename(maildir).startswith("."):
        return os.path.dirname(maildir)
    return maildir


def file_size(path: str) -> int:
    """A message file's size: its ``,S=`` field, else C{stat()} (0 if it is gone)."""
    size = parse_name(os.path.basename(path)).size
    if size is not None:
        return size
    try:
        return os.stat(path).st_size
    except FileNotFoundError:  # expunged meanwhile
        return 0


def calculate_blocking(root: str) -> Usage:
    """Usage of the Maildir C{root} and its folders, counted from the directories."""
    storage = messages = 0
    folders = [root]
    try:
        with os.scandir(root) as entries:
            for entry in entries:
                if len(folders) >= MAX_FOLDERS:
                    break
                if entry.name.startswith(".") and entry.name not in (".", "..") and entry.is_dir():
                    folders.append(entry.path)
    except FileNotFoundError:
        return Usage()
    for folder in folders:
        for sub in ("new", "cur"):
            directory = os.path.join(folder, sub)
            try:
                names = os.listdir(directory)
            except (FileNotFoundError, NotADirectoryError):
                continue
            for name in names:
                if not name.startswith("."):
                    storage += file_size(os.path.join(directory, name))
                    messages += 1
    return Usage(storage, messages)


def _parse(text: str, limits: QuotaLimits) -> Usage | None:
    """The usage a file states, or None when it must be recalculated."""
    lines = text.split("\n")
    if lines[0].strip() != limits.maildirsize_line():
        return None
    storage = messages = 0
    for line in lines[1:]:
        if not line.strip():
            continue
        fields = line.split()
        try:
            storage += int(fields[0])
            messages += int(fields[1]) if len(fields) > 1 else 0
        except ValueError:
            return None
    return Usage(max(storage, 0), max(messages, 0))


def _rewrite(root: str, limits: QuotaLimits, usage: Usage) -> None:
    """Replace ``maildirsize`` atomically and durably (written in ``tmp/`` as Maildir++ says, renamed)."""
    text = f"{limits.maildirsize_line()}\n{usage.storage} {usage.messages}\n"
    try:
        replace_atomically(os.path.join(root, MAILDIRSIZE), text.encode("ascii"), 0o600, tmp_dir=os.path.join(root, "tmp"))
    except FileNotFoundError:  # no tmp/: not a Maildir yet, nothing to remember
        return


def read_usage_blocking(maildir: str, limits: QuotaLimits, now: float | None = None) -> Usage:
    """Usage of C{maildir}'s account, recalculating ``maildirsize`` when Maildir++ says so."""
    root = quota_root(maildir)
    path = os.path.join(root, MAILDIRSIZE)
    now = time.time() if now is None else now
    usage: Usage | None = None
    try:
        stat = os.stat(path)
        if stat.st_size <= MAX_FILE_SIZE:
            with open(path, encoding="ascii", errors="replace") as handle:
                usage = _parse(handle.read(MAX_FILE_SIZE + 1), limits)
            if usage is not None and now - stat.st_mtime > STALE_AFTER and usage.exceeds(limits):
                usage = None
    except FileNotFoundError:
        pass
    if usage is None:
        usage = calculate_blocking(root)
        if limits.limited:
            try:
                _rewrite(root, limits, usage)
            except OSError as error:
                log.warn("quota: cannot write {path}: {error}", path=path, error=error)
    return usage


def add_usage_blocking(maildir: str, size: int, count: int) -> None:
    """
    Append a change to C{maildir}'s ``maildirsize`` if it has one.  One
    short O_APPEND write, atomic against other appenders; if it fails the
    file is removed, so the next reader recalculates.
    """
    path = os.path.join(quota_root(maildir), MAILDIRSIZE)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    except FileNotFoundError:
        return
    except OSError:
        _forget(path)
        return
    try:
        os.write(fd, f"{size} {count}\n".encode("ascii"))
    except OSError:
        _forget(path)
    finally:
        os.close(fd)


def _forget(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def forget_usage_blocking(maildir: str) -> None:
    """Remove C{maildir}'s ``maildirsize`` (a folder was deleted): the next read recalculates."""
    _forget(os.path.join(quota_root(maildir), MAILDIRSIZE))


def warning_message(user: str, hostname: str, usage: Usage, limits: QuotaLimits, now: float) -> bytes:
    """The notice delivered into the INBOX when usage crosses C{quota_warning} percent."""
    percent = usage.percent(limits)
    parts = []
    if limits.storage:
        parts.append(f"{usage.storage // 1024} KB of {limits.storage // 1024} KB")
    if limits.messages:
        parts.append(f"{usage.messages} of {limits.messages} messages")
    text = (
        f"From: Mail Delivery System <MAILER-DAEMON@{hostname}>\n"
        f"To: <{user}>\n"
        f"Subject: Your mailbox is {percent}% full\n"
        f"Date: {email.utils.formatdate(now)}\n"
        f"Message-ID: <quota.{int(now * 1000)}.{os.getpid()}@{hostname}>\n"
        "Auto-Submitted: auto-generated\n"
        "MIME-Version: 1.0\n"
        "Content-Type: text/plain; charset=us-ascii\n"
        "\n"
        f"Your mailbox {user} uses {' and '.join(parts)} ({percent}%).\n"
        "When it is full, new mail to you is refused (552 5.2.2 Mailbox full).\n"
        "Please delete or archive some messages.\n"
    )
    return text.encode("utf-8", "replace")


@implementer(IQuota)
class MaildirQuota:
    """
    Quota decisions for the delivery pipeline and IMAP: usage read in a
    thread, limits from C{limits_of(user)}, a warning delivered once when a
    delivery crosses C{warning_percent}.
    """

    def __init__(
        self,
        reactor: Any,
        limits_of: Callable[[str], QuotaLimits],
        store: IMailStore | None = None,
        hostname: str = "localhost",
        warning_percent: int = 90,
        threadpool: Any = None,
    ) -> None:
        self._reactor = reactor
        self.limits_of = limits_of
        self._store = store
        self._hostname = hostname
        self.warning_percent = warning_percent
        self._threadpool = threadpool
        self._recent: dict[str, tuple[float, Usage, QuotaLimits]] = {}  # maildir -> (when read, usage, limits)

    def _in_thread(self, function: Callable, *args: Any) -> Deferred:
        pool = self._threadpool or self._reactor.getThreadPool()
        return deferToThreadPool(self._reactor, pool, function, *args)

    def usage(self, user: str, maildir: str) -> Deferred:
        """Fires with C{(Usage, QuotaLimits)}, read now (end of DATA, IMAP)."""
        limits = self.limits_of(user)
        if not limits.limited:
            return succeed((Usage(), limits))
        now = self._reactor.seconds()

        def read(usage: Usage) -> tuple[Usage, QuotaLimits]:
            if len(self._recent) >= RECENT_LIMIT:
                self._recent.clear()
            self._recent[maildir] = (now, usage, limits)
            return usage, limits

        return self._in_thread(read_usage_blocking, maildir, limits, now).addCallback(read)

    def _recent_usage(self, user: str, maildir: str) -> Deferred:
        """A usage read less than L{RECENT_SECONDS} ago with the same limits, else a new read."""
        seen = self._recent.get(maildir)
        if seen is not None and self._reactor.seconds() - seen[0] < RECENT_SECONDS and seen[2] == self.limits_of(user):
            return succeed((seen[1], seen[2]))
        return self.usage(user, maildir)

    def check(self, user: str, maildir: str, size: int) -> Deferred:
        """
        None if a message of C{size} bytes fits, else the L{MailError} 552
        5.2.2.  For RCPT: it may answer from a read of the last
        L{RECENT_SECONDS} (end of DATA reads again, so a stale answer only
        moves a refusal from RCPT to the end of DATA).
        """

        def decide(result: tuple[Usage, QuotaLimits]) -> MailError | None:
            usage, limits = result
            if usage.exceeds(limits, size, 1):
                return over_quota(user)
            return None

        return self._recent_usage(user, maildir).addCallback(decide)

    def warn(self, user: str, maildir: str, before: Usage, size: int) -> Deferred:
        """The notice, if going from C{before} to C{before} + this message crossed C{warning_percent}."""
        limits = self.limits_of(user)
        after = Usage(before.storage + size, before.messages + 1)
        level = self.warning_percent
        if not level or self._store is None or not before.percent(limits) < level <= after.percent(limits):
            return succeed(None)
        log.info("quota: {user} at {percent}% of quota, warning delivered", user=user, percent=after.percent(limits))
        notice = warning_message(user, self._hostname, after, limits, self._reactor.seconds())
        return self._store.deliver(notice, [(quota_root(maildir), b"")])
