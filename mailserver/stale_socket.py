"""
A unix socket left behind by a process that died (kill -9, power loss)
makes the next listen fail with EADDRINUSE, and twisted's C{lockfile=1} does
not help.  Postfix and Dovecot remove such sockets at start; so do we, but
only when nothing answers on it (a running instance keeps its socket).
"""

from __future__ import annotations

import errno
import os
import socket
import stat


def remove_stale_socket(path: str) -> bool:
    """
    Unlink C{path} if it is a unix socket nobody listens on; True if removed.
    Blocking (one local connect): for start-up, before the reactor serves.
    """
    try:
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            return False
    except FileNotFoundError:
        return False
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError as error:
        if error.errno != errno.ECONNREFUSED:
            return False
    else:
        return False  # alive: leave it, the listen will report the conflict
    finally:
        probe.close()
    os.unlink(path)
    return True
