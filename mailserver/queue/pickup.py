"""
The maildrop: local submission (sendmail) that works while the daemon is down.

C{sendmail} writes each message as one file into C{$data_directory/maildrop}
(L{write_pickup}: tmp name, fsync, rename); L{PickupService}, running in
the daemon, polls the directory (and scans it on start), hands each file to
C{inject} and deletes it only after C{inject} succeeded.  A file that
C{inject} refuses for good (a 5xx L{MailError}) or that cannot be read is
moved to C{maildrop/corrupt/} and logged; anything else is retried later.

File format: one line of JSON (version, sender, recipients, flags, time),
then the message bytes (LF line ends).

Permission model (Postfix's maildrop without a setgid postdrop): the
directory is created mode 1733 (everyone may create files, nobody but its
owner may list it, the sticky bit stops users removing each other's
files), owned by the user the daemon runs as.  Files are made readable by
the daemon (0644) and get 128-bit random names that others cannot list.
The daemon treats every file as untrusted: it opens without following
symlinks and without blocking (a FIFO cannot stall it), reads only
regular, single-link files up to a size limit, and logs the owner's uid
with each message.  An administrator who wants only root (or the daemon's
user) to submit sets the directory to 0700 or 0730 with a group.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure

from mailserver.durable import fsync_directory, unlink_quietly, write_all, write_new_file
from mailserver.errors import MailError
from mailserver.periodic import PeriodicTask

MAILDROP_VERSION = 1
MAILDROP_MODE = 0o1733
FILE_MODE = 0o644
CORRUPT = "corrupt"

#: Largest envelope line accepted.
_MAX_HEADER = 1 << 20
#: .tmp files left by a sendmail that died are removed after this long.
_STALE_TMP = 86400.0

_OPEN = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0)

Inject = Callable[[str, list, bytes, bool], Deferred]
"""C{inject(sender, recipients, message, extract_recipients) -> Deferred}."""


class PickupError(ValueError):
    """A maildrop file that cannot be used (bad format, not a regular file, too big)."""


@dataclass(frozen=True)
class PickupFile:
    """One parsed maildrop file."""

    sender: str
    recipients: list[str]
    message: bytes
    extract_recipients: bool = False
    flags: Mapping[str, object] = field(default_factory=dict)


def _ensure_directory(directory: str, mode: int = MAILDROP_MODE) -> None:
    try:
        os.mkdir(directory, 0o700)
    except FileExistsError:
        return
    os.chmod(directory, mode)  # mkdir's mode is filtered by the umask


def write_pickup(
    directory: str,
    sender: str,
    recipients: Sequence[str],
    message: bytes,
    flags: Mapping[str, object] | None = None,
) -> str:
    """
    Write one message into the maildrop, durably; return the file name.

    Blocking: for the sendmail command.  C{flags} may hold
    C{extract_recipients} (C{-t} was given) and anything else worth
    recording; it must be JSON-serialisable.

    @raise OSError: the directory is missing and cannot be made, or the file
        cannot be written (nothing is left behind).
    """
    flags = dict(flags or {})
    header = {
        "version": MAILDROP_VERSION,
        "sender": sender,
        "recipients": list(recipients),
        "flags": flags,
        "time": time.time(),
    }
    line = json.dumps(header, ensure_ascii=True, sort_keys=True).encode("ascii") + b"\n"
    _ensure_directory(directory)
    token = secrets.token_hex(16)
    tmp_path = os.path.join(directory, f".tmp.{token}")
    name = f"{int(time.time()):08X}.{token}"
    try:
        write_new_file(tmp_path, (line, message), FILE_MODE, _write_pickup_file)
        os.rename(tmp_path, os.path.join(directory, name))
    except BaseException:
        unlink_quietly(tmp_path)
        raise
    try:
        fsync_directory(directory)
    except PermissionError:
        pass  # a 1733 directory cannot be opened by others: the rename is all we can do
    return name


def _write_pickup_file(fd: int, chunks: tuple[bytes, bytes]) -> None:
    os.fchmod(fd, FILE_MODE)  # readable by the daemon whatever the umask
    for chunk in chunks:
        write_all(fd, chunk)


def parse_pickup(data: bytes) -> PickupFile:
    """Pure: parse a maildrop file; raise L{PickupError} if it is not one of ours."""
    end = data.find(b"\n", 0, _MAX_HEADER)
    if end < 0:
        raise PickupError("no envelope line")
    try:
        header = json.loads(data[:end].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise PickupError(f"bad envelope line: {e}") from None
    if not isinstance(header, dict) or header.get("version") != MAILDROP_VERSION:
        raise PickupError("unknown maildrop format")
    sender = header.get("sender")
    recipients = header.get("recipients")
    flags = header.get("flags", {})
    if not isinstance(sender, str) or not _printable(sender):
        raise PickupError("bad sender")
    if not isinstance(recipients, list) or not all(
        isinstance(r, str) and r and _printable(r) for r in recipients
    ):
        raise PickupError("bad recipients")
    if not isinstance(flags, dict):
        raise PickupError("bad flags")
    extract = flags.get("extract_recipients", False)
    if not isinstance(extract, bool):
        raise PickupError("bad extract_recipients flag")
    if not recipients and not extract:
        raise PickupError("no recipients")
    return PickupFile(sender, recipients, data[end + 1 :], extract, flags)


def _printable(text: str) -> bool:
    return len(text) <= 1000 and all(0x20 < ord(c) != 0x7F for c in text)


def read_pickup(path: str, max_size: int) -> tuple[PickupFile, int]:
    """
    Blocking: open C{path} as an untrusted file and parse it; return the
    file and the owner's uid.

    @raise PickupError: not a regular single-link file, too big, or bad format.
    @raise FileNotFoundError: gone meanwhile.
    """
    try:
        fd = os.open(path, _OPEN)
    except OSError as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise PickupError(f"cannot open safely: {e.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise PickupError("not a regular file")
        if info.st_nlink != 1:
            raise PickupError("file has other hard links")
        if info.st_size > max_size:
            raise PickupError(f"file too large ({info.st_size} bytes)")
        chunks = []
        total = 0
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            total += len(chunk)
            if total > max_size:
                raise PickupError("file too large")
            chunks.append(chunk)
    finally:
        os.close(fd)
    return parse_pickup(b"".join(chunks)), info.st_uid


class _MaildropDirectory:
    """Blocking operations of the pickup service, run in a thread."""

    def __init__(self, path: str, mode: int) -> None:
        self.path = os.path.abspath(path)
        self.mode = mode

    def ensure(self) -> None:
        _ensure_directory(self.path, self.mode)
        corrupt = os.path.join(self.path, CORRUPT)
        try:
            os.mkdir(corrupt, 0o700)
        except FileExistsError:
            pass

    def names(self, now: float) -> list[str]:
        """Files ready to be picked up (oldest first); removes stale tmp files."""
        ready = []
        for name in sorted(os.listdir(self.path)):
            if name == CORRUPT:
                continue
            if name.startswith("."):
                path = os.path.join(self.path, name)
                try:
                    if now - os.lstat(path).st_mtime > _STALE_TMP:
                        os.unlink(path)
                except FileNotFoundError:
                    pass
                continue
            ready.append(name)
        return ready

    def remove(self, name: str) -> None:
        try:
            os.unlink(os.path.join(self.path, name))
        except FileNotFoundError:
            return
        fsync_directory(self.path)

    def set_aside(self, name: str) -> str:
        """Move C{name} into corrupt/ if that is ours and private; else remove it."""
        corrupt = os.path.join(self.path, CORRUPT)
        try:
            info = os.lstat(corrupt)
            private = (
                stat.S_ISDIR(info.st_mode)
                and info.st_uid == os.geteuid()
                and not info.st_mode & 0o077
            )
        except FileNotFoundError:
            private = False
        if private:
            os.rename(os.path.join(self.path, name), os.path.join(corrupt, name))
            return f"moved to {CORRUPT}/"
        self.remove(name)
        return "removed (no private corrupt/ directory)"


class PickupService(Service):
    """
    Poll the maildrop and inject what local users submitted.

    @param directory: the maildrop (C{$data_directory/maildrop}).
    @param reactor: for the thread pool and (unless C{clock}) the timer.
    @param inject: C{inject(sender, recipients, message, extract_recipients)
        -> Deferred}; the recipients are complete already (sendmail
        extracted them for C{-t} and removed C{Bcc:}), C{extract_recipients}
        only says they came from the header.
    @param interval: seconds between scans.
    @param retry_delay: how long a file that failed temporarily is left alone.
    @param max_size: the largest file accepted (C{message_size_limit} plus
        room for the envelope line).
    @param mode: the maildrop's mode when this service creates it.
    """

    log = Logger()
    name = "pickup"

    def __init__(
        self,
        directory: str,
        reactor,
        inject: Inject,
        *,
        interval: float = 2.0,
        retry_delay: float = 60.0,
        max_size: int = 10240000 + 65536,
        clock=None,
        mode: int = MAILDROP_MODE,
    ) -> None:
        self.directory = _MaildropDirectory(directory, mode)
        self._reactor = reactor
        self._clock = clock or reactor
        self._inject = inject
        self.interval = interval
        self.retry_delay = retry_delay
        self.max_size = max_size
        self._not_before: dict[str, float] = {}
        self._waiting: list[Deferred[int]] | None = None  # callers of the scan in progress
        self._loop: PeriodicTask | None = None
        self.ready: Deferred | None = None

    def _run(self, function, *args) -> Deferred:
        return deferToThreadPool(self._reactor, self._reactor.getThreadPool(), function, *args)

    def startService(self) -> None:
        super().startService()
        d = self._run(self.directory.ensure)
        d.addErrback(
            lambda f: self.log.failure("cannot create the maildrop {path}", f, path=self.directory.path)
        )
        d.addCallback(lambda _: self._start_loop())
        self.ready = d  # fires after the first scan (what was dropped while the daemon was down)

    def _start_loop(self):
        if not self.running:
            return None
        self._loop = PeriodicTask("maildrop pickup", self._tick, self.interval, self._clock)
        self._loop.start(now=True)
        return self.scan() if self._waiting is not None else None

    def stopService(self):
        if self._loop is not None:
            self._loop.stop()
        self._loop = None
        return super().stopService()

    def _tick(self) -> Deferred | None:
        if self._waiting is None:
            return self.scan()
        return None

    def scan(self) -> Deferred[int]:
        """
        Pick up every ready file once; fire with the number picked up.  A
        call during a scan waits for that scan; each caller gets a Deferred
        of its own.
        """
        waiter: Deferred[int] = Deferred()
        if self._waiting is not None:
            self._waiting.append(waiter)
            return waiter
        self._waiting = [waiter]

        def done(result: object) -> None:
            waiting, self._waiting = self._waiting or [], None
            for each in waiting:
                if isinstance(result, Failure):
                    each.errback(result)
                else:
                    each.callback(result)

        maybeDeferred(lambda: Deferred.fromCoroutine(self._scan())).addBoth(done)
        return waiter

    async def _scan(self) -> int:
        now = self._clock.seconds()
        try:
            names = await self._run(self.directory.names, now)
        except OSError as e:
            self.log.error("cannot read the maildrop {path}: {error}", path=self.directory.path, error=e)
            return 0
        present = set(names)
        for name in list(self._not_before):
            if name not in present:
                del self._not_before[name]
        picked = 0
        for name in names:
            if self._not_before.get(name, 0) > now:
                continue
            if await self._pick(name):
                picked += 1
        return picked

    async def _pick(self, name: str) -> bool:
        path = os.path.join(self.directory.path, name)
        try:
            entry, uid = await self._run(read_pickup, path, self.max_size)
        except FileNotFoundError:
            return False
        except (PickupError, OSError) as e:
            await self._set_aside(name, f"unusable maildrop file: {e}")
            return False
        self.log.info(
            "pickup {name}: uid={uid} from=<{sender}> nrcpt={nrcpt}",
            name=name,
            uid=uid,
            sender=entry.sender,
            nrcpt=len(entry.recipients),
        )
        try:
            await self._inject(entry.sender, list(entry.recipients), entry.message, entry.extract_recipients)
        except MailError as e:
            if not e.temporary:
                await self._set_aside(name, f"refused: {e}")
                return False
            self._later(name, str(e))
            return False
        except Exception as e:  # keep the file and try again: never lose it
            self.log.failure("pickup {name}: inject failed", name=name)
            self._later(name, str(e))
            return False
        try:
            await self._run(self.directory.remove, name)
        except OSError as e:
            self.log.error("pickup {name}: delivered but not removed: {error}", name=name, error=e)
        self._not_before.pop(name, None)
        return True

    def _later(self, name: str, why: str) -> None:
        self._not_before[name] = self._clock.seconds() + self.retry_delay
        self.log.warn("pickup {name}: will retry: {why}", name=name, why=why)

    async def _set_aside(self, name: str, why: str) -> None:
        try:
            where = await self._run(self.directory.set_aside, name)
        except OSError as e:
            self._later(name, f"{why}; cannot move it aside: {e}")
            return
        self.log.error("pickup {name}: {why}; {where}", name=name, why=why, where=where)
