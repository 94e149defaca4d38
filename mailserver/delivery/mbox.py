"""
Stdlib only: the mbox format and a locked, fsynced append.

This file is also run on its own (C{python -I -S mbox.py PATH}, the message
on stdin) by L{mailserver.delivery.local_targets} to append as an
unprivileged user when the daemon runs as root: the kernel then checks the
permissions, not us.  On failure it prints C{"ERRNO message"} on stderr
and exits with status 1.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import stat
import sys
import time
from typing import Callable

_FROM = re.compile(rb"^From ", re.MULTILINE)


def from_line(sender: str, now: float) -> bytes:
    """C{From sender Thu Jan  1 00:00:00 1970}: the mbox separator (local time, as Postfix)."""
    who = re.sub(r"\s", "_", sender) or "MAILER-DAEMON"
    return f"From {who} {time.asctime(time.localtime(now))}\n".encode("utf-8", "surrogateescape")


def format_message(sender: str, message: bytes, now: float) -> bytes:
    """
    One mbox record: the C{From } line, the message with LF line ends and
    every line starting with C{From } quoted as C{>From } (Postfix's
    mboxo quoting), a final new line and a blank line.
    """
    body = message.replace(b"\r\n", b"\n")
    if body and not body.endswith(b"\n"):
        body += b"\n"
    return from_line(sender, now) + _FROM.sub(b">From ", body) + b"\n"


def append(
    path: str,
    data: bytes,
    lock_attempts: int = 20,
    lock_delay: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """
    Append C{data} to the mbox file C{path} (created mode 0600) under an
    exclusive C{lockf} lock, then fsync.  Symbolic links, non-regular files
    and files with several hard links are refused.  A failed write is cut
    back so the file never ends with half a message.

    @raise OSError: with the errno that says why (EAGAIN: still locked).
    """
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    fd = os.open(path, flags, 0o600)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        if st.st_nlink > 1:
            raise OSError(errno.EMLINK, "file has several hard links")
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        for attempt in range(lock_attempts):
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as error:
                if error.errno not in (errno.EACCES, errno.EAGAIN):
                    raise
                if attempt + 1 == lock_attempts:
                    raise OSError(errno.EAGAIN, "file is locked by another process") from None
                sleep(lock_delay)
        size = os.fstat(fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        except OSError:
            try:
                os.ftruncate(fd, size)
            except OSError:
                pass
            raise
    finally:
        os.close(fd)


def main(argv: list[str]) -> int:
    """C{mbox.py PATH}: append stdin (an mbox record) to PATH; errors as C{ERRNO text} on stderr."""
    if len(argv) != 2:
        sys.stderr.write(f"{errno.EINVAL} usage: mbox.py PATH\n")
        return 1
    data = sys.stdin.buffer.read()
    try:
        append(argv[1], data)
    except OSError as error:
        sys.stderr.write(f"{error.errno or 0} {error.strerror or error}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
