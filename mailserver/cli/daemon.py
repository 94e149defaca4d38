"""The running daemon, as the commands see it: its status file and its pid."""

from __future__ import annotations

import json
import os
import signal


class NotRunning(Exception):
    """No live daemon for this configuration (the reason is the message)."""


def read_status(config) -> dict:
    """The daemon's C{status.json} if its pid is alive; raise L{NotRunning} otherwise."""
    from mailserver.service import status_path

    path = status_path(config)
    try:
        with open(path, encoding="utf-8") as handle:
            status = json.load(handle)
        pid = int(status["pid"])
        os.kill(pid, 0)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise NotRunning(f"no live process in {path}: {error}") from None
    status["pid"] = pid
    return status


def notify(config, signum: int = signal.SIGHUP) -> int:
    """Make the running daemon re-read its tables and users now; its pid."""
    pid = read_status(config)["pid"]
    try:
        os.kill(pid, signum)
    except OSError as error:
        raise NotRunning(f"cannot signal pid {pid}: {error}") from None
    return pid
