"""
Delivery to alias targets C{/path/file} (mbox append) and C{|command}
(a program reading the message on stdin), never as root.

As in Postfix's local(8), both run as the owner of the alias table, or as
C{default_privs} when that owner is root (L{resolve_run_as}).  A daemon
running as root appends through a child process that runs as that user
(C{mbox.py}), so the kernel checks the file permissions; an unprivileged
daemon appends in a thread and runs commands as itself.
"""

from __future__ import annotations

import errno
import os
import pwd
import sys
from dataclasses import dataclass
from typing import Any

from twisted.internet import threads
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from mailserver.delivery import mbox
from mailserver.envelope import CommandTarget, FileTarget
from mailserver.errors import MailError

log = Logger(namespace="mailserver.delivery.local")

EX_TEMPFAIL = 75
#: PATH given to commands (Postfix local(8)'s _PATH_DEFPATH).
COMMAND_PATH = "/usr/bin:/bin"
#: Output kept from a command or helper, for the error text.
_OUTPUT_LIMIT = 8192

# Seams for tests: who we run as, and the interpreter that runs mbox.py
# (it must be executable by the unprivileged users).
_geteuid = os.geteuid
_helper_python = sys.executable


def resolve_run_as(owner_uid: int | None, owner_gid: int | None, default_privs: str) -> tuple[int, int]:
    """
    (uid, gid) for a file or command delivery: the alias table's owner
    unless that is root (or unknown), else the C{default_privs} user.
    C{owner_gid} None means the owner's primary group (Postfix uses the
    owner's passwd entry, not the file's group).

    @raise MailError: 451 4.3.0 for an unknown user; 550 5.7.1 if
        C{default_privs} is root.
    """
    if owner_uid is not None and owner_uid != 0:
        if owner_gid is None:
            try:
                owner_gid = pwd.getpwuid(owner_uid).pw_gid
            except KeyError:
                raise MailError(451, "4.3.0", f"Alias owner uid {owner_uid} has no passwd entry") from None
        return owner_uid, owner_gid
    try:
        entry = pwd.getpwnam(default_privs)
    except KeyError:
        raise MailError(451, "4.3.0", f"default_privs user {default_privs!r} does not exist") from None
    if entry.pw_uid == 0:
        raise MailError(550, "5.7.1", "default_privs must not be root")
    return entry.pw_uid, entry.pw_gid


def _refuse_root(run_as: tuple[int, int] | None, what: str) -> MailError | None:
    if run_as is None:
        return MailError(550, "5.7.1", f"Refusing to deliver to {what} as root") if _geteuid() == 0 else None
    if run_as[0] == 0 or run_as[1] == 0:
        return MailError(550, "5.7.1", f"Refusing to deliver to {what} as root")
    return None


# -- child processes -------------------------------------------------------------------


@dataclass(frozen=True)
class ChildResult:
    """How a child process ended."""

    exit_code: int | None
    signal: int | None
    output: bytes
    timed_out: bool = False

    def first_line(self) -> str:
        """The first non-empty output line, printable ASCII, at most 200 characters."""
        for line in self.output.decode("utf-8", "replace").splitlines():
            line = "".join(c if " " <= c <= "~" else "?" for c in line.strip())
            if line:
                return line[:200]
        return ""


class _Child(ProcessProtocol):
    """Feed stdin, collect stdout+stderr, kill after C{timeout}, fire a L{ChildResult}."""

    def __init__(self, reactor: Any, stdin: bytes, timeout: float) -> None:
        self.reactor = reactor
        self.stdin = stdin
        self.timeout = timeout
        self.output = b""
        self.timed_out = False
        self.timer: Any = None
        self.ended: Deferred[ChildResult] = Deferred()

    def connectionMade(self) -> None:
        self.timer = self.reactor.callLater(self.timeout, self.kill)
        self.transport.write(self.stdin)
        self.transport.closeStdin()

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        room = _OUTPUT_LIMIT - len(self.output)
        if room > 0:
            self.output += data[:room]

    def kill(self) -> None:
        self.timed_out = True
        try:
            self.transport.signalProcess("KILL")
        except ProcessExitedAlready:
            pass

    def processEnded(self, reason: Failure) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        value = reason.value
        result = ChildResult(
            getattr(value, "exitCode", None), getattr(value, "signal", None), self.output, self.timed_out
        )
        self.ended.callback(result)


def _spawn(
    reactor: Any,
    argv: list[str],
    env: dict[str, str],
    stdin: bytes,
    uid: int | None,
    gid: int | None,
    timeout: float,
) -> Deferred[ChildResult]:
    child = _Child(reactor, stdin, timeout)
    try:
        reactor.spawnProcess(
            child, argv[0], argv, env=env, path="/", uid=uid, gid=gid, childFDs={0: "w", 1: "r", 2: "r"}
        )
    except OSError as error:
        log.error("cannot start {argv}: {error}", argv=argv[0], error=str(error))
        return fail(MailError(451, "4.3.0", "Cannot start delivery process"))
    return child.ended


# -- files -----------------------------------------------------------------------------------

_TEMPORARY_ERRNOS = {errno.EAGAIN, errno.EINTR, errno.EIO, errno.ENOMEM, errno.ESTALE, errno.EMFILE, errno.ENFILE}


def _file_error(number: int, text: str) -> MailError:
    """Postfix's mbox_dsn: which errno is temporary, which means the mailbox is full."""
    if number == errno.ENOSPC:
        return MailError(452, "4.3.1", f"Cannot append to file: {text}")
    if number in (errno.EDQUOT, errno.EFBIG):
        return MailError(552, "5.2.2", f"Cannot append to file: {text}")
    if number in _TEMPORARY_ERRNOS:
        return MailError(451, "4.2.0", f"Cannot append to file: {text}")
    return MailError(550, "5.2.0", f"Cannot append to file: {text}")


def _append_in_thread(reactor: Any, path: str, data: bytes) -> Deferred[None]:
    def failed(failure: Failure) -> None:
        failure.trap(OSError)
        error = failure.value
        log.error("cannot append to {path}: {error}", path=path, error=str(error))
        raise _file_error(error.errno or 0, error.strerror or str(error))

    d = threads.deferToThreadPool(reactor, reactor.getThreadPool(), mbox.append, path, data)
    return d.addCallbacks(lambda _: None, failed)


def append_as(
    reactor: Any, path: str, data: bytes, uid: int | None, gid: int | None, timeout: float
) -> Deferred[None]:
    """Append an mbox record through the C{mbox.py} child running as uid/gid (None: as we are)."""
    argv = [_helper_python, "-I", "-S", mbox.__file__, path]

    def ended(result: ChildResult) -> None:
        if result.exit_code == 0 and not result.timed_out:
            return None
        number, _, text = result.first_line().partition(" ")
        if result.exit_code == 1 and number.isdigit():
            log.error("cannot append to {path}: {text}", path=path, text=text)
            raise _file_error(int(number), text)
        log.error(
            "file delivery helper for {path} failed: exit {code}, signal {signal}, timed out {timed_out}: {out}",
            path=path, code=result.exit_code, signal=result.signal, timed_out=result.timed_out,
            out=result.first_line(),
        )  # fmt: skip
        raise MailError(451, "4.3.0", "File delivery failed")

    env = {"PATH": COMMAND_PATH}
    return _spawn(reactor, argv, env, data, uid, gid, timeout).addCallback(ended)


def deliver_to_file(
    reactor: Any,
    target: FileTarget,
    sender: str,
    message: bytes,
    run_as: tuple[int, int] | None,
    *,
    now: float | None = None,
    timeout: float = 600.0,
) -> Deferred[None]:
    """
    Append C{message} (already carrying its Delivered-To/X-Original-To
    headers) to C{target.path} in mbox format, locked and fsynced.
    C{/dev/null} discards.  Fires with None, or fails with L{MailError}.
    """
    if target.path == "/dev/null":
        log.info("discarded: delivered to /dev/null")
        return succeed(None)
    refusal = _refuse_root(run_as, "a file")
    if refusal is not None:
        return fail(refusal)
    data = mbox.format_message(sender, message, reactor.seconds() if now is None else now)
    if _geteuid() != 0:
        return _append_in_thread(reactor, target.path, data)
    assert run_as is not None
    return append_as(reactor, target.path, data, run_as[0], run_as[1], timeout)


# -- commands ----------------------------------------------------------------------------------


def command_environment(
    uid: int, sender: str, recipient: str, original_recipient: str | None = None
) -> dict[str, str]:
    """Postfix local(8)'s environment for a C{|command}: who and what the mail is."""
    try:
        entry = pwd.getpwuid(uid)
    except KeyError:
        raise MailError(451, "4.3.0", f"No passwd entry for uid {uid}") from None
    local, at, domain = recipient.rpartition("@")
    env = {
        "SENDER": sender,
        "RECIPIENT": recipient,
        "LOCAL": local if at else recipient,
        "DOMAIN": domain if at else "",
        "USER": entry.pw_name,
        "LOGNAME": entry.pw_name,
        "HOME": entry.pw_dir or "/",
        "SHELL": entry.pw_shell or "/bin/sh",
        "PATH": COMMAND_PATH,
    }
    if original_recipient is not None:
        env["ORIGINAL_RECIPIENT"] = original_recipient
    return env


def _command_error(result: ChildResult) -> MailError | None:
    """sysexits(3) to SMTP: 0 ok, EX_TEMPFAIL and signals temporary, anything else permanent."""
    line = result.first_line()
    if result.timed_out:
        return MailError(451, "4.3.0", "Command time limit exceeded")
    if result.signal is not None:
        return MailError(451, "4.3.0", f"Command died with signal {result.signal}")
    if result.exit_code == 0:
        return None
    detail = f": {line}" if line else ""
    if result.exit_code == EX_TEMPFAIL:
        return MailError(451, "4.3.0", f"Command temporarily failed{detail}")
    return MailError(550, "5.3.0", f"Command failed with status {result.exit_code}{detail}")


def deliver_to_command(
    reactor: Any,
    target: CommandTarget,
    sender: str,
    recipient: str,
    message: bytes,
    run_as: tuple[int, int],
    timeout: float,
    *,
    original_recipient: str | None = None,
    now: float | None = None,
) -> Deferred[None]:
    """
    Run C{/bin/sh -c command} as C{run_as} (never root) with C{message} on
    stdin after a C{From sender date} line, as Postfix's local(8) does
    (procmail and friends expect it), and Postfix's environment (SENDER, RECIPIENT, HOME, SHELL, PATH
    ...).  Exit 0 succeeds; 75 (EX_TEMPFAIL), a signal or C{timeout}
    seconds give 451 4.3.0; any other status 550 5.3.0 with the command's
    first output line.  The timeout kills the shell; processes it left
    behind see end of file on their input.
    """
    refusal = _refuse_root(run_as, "a command")
    if refusal is not None:
        return fail(refusal)
    privileged = _geteuid() == 0
    try:
        env = command_environment(run_as[0] if privileged else _geteuid(), sender, recipient, original_recipient)
    except MailError as error:
        return fail(error)
    uid, gid = run_as if privileged else (None, None)

    def ended(result: ChildResult) -> None:
        error = _command_error(result)
        if error is not None:
            log.warn(
                "command {command} for {recipient} failed: {reply}",
                command=target.command, recipient=recipient, reply=error.reply(),
            )  # fmt: skip
            raise error
        log.info("delivered to command {command} for {recipient}", command=target.command, recipient=recipient)

    stdin = mbox.from_line(sender, reactor.seconds() if now is None else now) + message.replace(b"\r\n", b"\n")
    argv = ["/bin/sh", "-c", target.command]
    return _spawn(reactor, argv, env, stdin, uid, gid, timeout).addCallback(ended)
