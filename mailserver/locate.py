"""
Which main configuration a command or the daemon uses, found the same way by all.

The order: the C{-c}/C{--config} option (C{-C} for sendmail), then
C{$MAILSERVER_CONFIG}, then the embedded default.  The embedded default's
relative paths (C{data_directory = ./mailserver-data}) resolve against the
directory of the daemon that runs on it, which the daemon records in
C{$XDG_STATE_HOME/mailserver/embedded.json} (C{~/.local/state/...}) while
it runs; with no such daemon alive, against the current directory.  So
C{mailserver status}, C{mailq} and C{mailserver user add} run from any
directory talk to the running daemon.
"""

from __future__ import annotations

import json
import os
from typing import Mapping, Sequence

from twisted.application.service import Service

from mailserver.config.parameters import Config
from mailserver.durable import replace_atomically
from mailserver.errors import Problem

ENVIRONMENT = "MAILSERVER_CONFIG"


def config_path(option: str | None, environ: Mapping[str, str] | None = None) -> str | None:
    """The file to read: C{option}, else C{$MAILSERVER_CONFIG}; None for the embedded default."""
    environ = os.environ if environ is None else environ
    return option or environ.get(ENVIRONMENT) or None


def embedded_record(environ: Mapping[str, str] | None = None) -> str:
    """Where a daemon on the embedded default records its directory (per user)."""
    environ = os.environ if environ is None else environ
    state = environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(state, "mailserver", "embedded.json")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except PermissionError:
        return True
    except (OSError, OverflowError):
        return False
    return True


def embedded_base(environ: Mapping[str, str] | None = None, cwd: str | None = None) -> str:
    """The running embedded-default daemon's directory, else the current one."""
    try:
        with open(embedded_record(environ), encoding="utf-8") as handle:
            record = json.load(handle)
        directory, pid = record["directory"], int(record["pid"])
        if isinstance(directory, str) and os.path.isdir(directory) and _alive(pid):
            return directory
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return os.getcwd() if cwd is None else cwd


def find_config(
    option: str | None,
    environ: Mapping[str, str] | None = None,
    overrides: Sequence[tuple[str, str]] = (),
) -> tuple[Config, list[Problem]]:
    """
    Load the configuration every entry point uses (see the module docstring).

    @raise ConfigError: the file cannot be read or has errors.
    """
    from mailserver.config import parameters

    path = config_path(option, environ)
    if path is not None:
        return parameters.load_config(path, overrides=overrides)
    return parameters.load_config(None, overrides=overrides, base_directory=embedded_base(environ))


class EmbeddedRecord(Service):
    """While the daemon runs on the embedded default, record its directory for the commands."""

    def __init__(self, directory: str, environ: Mapping[str, str] | None = None) -> None:
        self.directory = directory
        self.path = embedded_record(environ)

    def startService(self) -> None:
        super().startService()
        try:
            os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
            record = {"pid": os.getpid(), "directory": self.directory}
            replace_atomically(self.path, json.dumps(record).encode("utf-8"), 0o600)
        except OSError:
            pass  # commands then resolve against their own directory, as documented

    def stopService(self) -> None:
        super().stopService()
        try:
            with open(self.path, encoding="utf-8") as handle:
                mine = json.load(handle).get("pid") == os.getpid()
            if mine:
                os.unlink(self.path)
        except (OSError, ValueError, AttributeError):
            pass
