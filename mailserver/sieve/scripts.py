"""
Sieve scripts on disk, Dovecot's layout: a user's scripts are
``HOME/sieve/NAME.sieve`` and the active one is the symlink
``HOME/.dovecot.sieve`` -> ``sieve/NAME.sieve``; script errors go to
``HOME/.dovecot.sieve.log``.  Compiled scripts are cached per (path, inode,
mtime, size).

Everything here blocks: call it from a thread.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from collections import OrderedDict
from functools import cached_property

from mailserver.durable import fsync_directory, replace_atomically
from mailserver.sieve.checker import Script, compile_script
from mailserver.sieve.parser import SieveError

SCRIPT_DIR = "sieve"
ACTIVE_LINK = ".dovecot.sieve"
LOG_FILE = ".dovecot.sieve.log"
SUFFIX = ".sieve"
MAX_NAME = 128
#: The user-visible error log is cut back to its last half past this size.
MAX_LOG = 64 * 1024


class ScriptNameError(ValueError):
    """A script name that could escape the sieve directory or is not printable."""


def check_name(name: str) -> str:
    """C{name} if it is a safe script name (RFC 5804 1.6 plus no path characters)."""
    if not name or len(name) > MAX_NAME or name.startswith(".") or "/" in name or "\\" in name:
        raise ScriptNameError(f"bad script name {name!r}")
    if any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F or c in "\u2028\u2029" for c in name):
        raise ScriptNameError(f"bad script name {name!r}")
    return name


class ScriptCache:
    """Compiled scripts by (path, inode, mtime, size); thread-safe, bounded, least recently used dropped."""

    def __init__(self, max_entries: int = 1000, max_size: int = 1 << 20) -> None:
        self._entries: OrderedDict[str, tuple[tuple[int, int, int], Script]] = OrderedDict()
        self._lock = threading.Lock()
        self.max_entries = max_entries
        self.max_size = max_size
        self.compiled = 0  # how many times a script was compiled (tests)

    def load(self, path: str) -> Script | None:
        """The compiled script at C{path}, None if there is none; L{SieveError} if it is broken."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            return None
        try:
            info = os.fstat(fd)
            key = (info.st_ino, info.st_mtime_ns, info.st_size)
            with self._lock:
                cached = self._entries.get(path)
                if cached is not None and cached[0] == key:
                    self._entries.move_to_end(path)
                    return cached[1]
            if info.st_size > self.max_size:
                raise SieveError(0, f"script {path} is larger than {self.max_size} bytes")
            data = b""
            while len(data) < info.st_size:
                chunk = os.read(fd, info.st_size - len(data))
                if not chunk:
                    break
                data += chunk
        finally:
            os.close(fd)
        script = compile_script(data)
        with self._lock:
            self.compiled += 1
            self._entries[path] = (key, script)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return script


class UserScripts:
    """One user's scripts under C{home} (ManageSieve and delivery)."""

    def __init__(self, home: str) -> None:
        self.home = home
        self.link = os.path.join(home, ACTIVE_LINK)  # what every delivery asks (the others on demand)

    @cached_property
    def directory(self) -> str:
        return os.path.join(self.home, SCRIPT_DIR)

    @cached_property
    def log_path(self) -> str:
        return os.path.join(self.home, LOG_FILE)

    def path(self, name: str) -> str:
        return os.path.join(self.directory, check_name(name) + SUFFIX)

    def active_path(self) -> str | None:
        """The active script's file: the link's target, or a plain file there (Dovecot allows both)."""
        try:
            target = os.readlink(self.link)
        except FileNotFoundError:
            return None
        except OSError as error:
            if error.errno == errno.EINVAL:  # a regular file
                return self.link
            raise
        path = os.path.join(self.home, target)
        real_home = os.path.realpath(self.home)
        if os.path.commonpath([os.path.realpath(path), real_home]) != real_home:
            raise ScriptNameError(f"{self.link} points outside {self.home}")
        return path

    def active_name(self) -> str | None:
        path = self.active_path()
        if path is None or os.path.dirname(os.path.normpath(path)) != os.path.normpath(self.directory):
            return None
        base = os.path.basename(path)
        return base[: -len(SUFFIX)] if base.endswith(SUFFIX) and os.path.exists(path) else None

    def names(self) -> list[str]:
        try:
            entries = sorted(os.listdir(self.directory))
        except FileNotFoundError:
            return []
        out = []
        for entry in entries:
            if entry.endswith(SUFFIX) and not entry.startswith("."):
                out.append(entry[: -len(SUFFIX)])
        return out

    def sizes(self) -> dict[str, int]:
        out = {}
        for name in self.names():
            try:
                out[name] = os.stat(self.path(name)).st_size
            except (OSError, ScriptNameError):
                continue
        return out

    def read(self, name: str) -> bytes | None:
        try:
            with open(self.path(name), "rb") as handle:
                return handle.read()
        except FileNotFoundError:
            return None

    def write(self, name: str, data: bytes) -> None:
        """Store C{data} as script C{name} atomically (tmp file, fsync, rename)."""
        path = self.path(name)
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        replace_atomically(path, data)

    def set_active(self, name: str | None) -> None:
        """Make C{name} the active script (None: no script is active)."""
        if name is None:
            try:
                os.unlink(self.link)
            except FileNotFoundError:
                pass
            return
        target = os.path.join(SCRIPT_DIR, check_name(name) + SUFFIX)
        tmp = self.link + ".tmp"
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        os.symlink(target, tmp)
        os.rename(tmp, self.link)
        fsync_directory(self.home)

    def delete(self, name: str) -> None:
        os.unlink(self.path(name))
        fsync_directory(self.directory)

    def rename(self, old: str, new: str) -> None:
        was_active = self.active_name() == old
        os.rename(self.path(old), self.path(new))
        if was_active:
            self.set_active(new)
        fsync_directory(self.directory)

    def log_error(self, text: str, now: float | None = None) -> None:
        """Append a line to the user's error log, keeping it bounded."""
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(time.time() if now is None else now))
        line = f"{stamp} {text}\n".encode("utf-8", "replace")
        try:
            size = os.path.getsize(self.log_path)
        except OSError:
            size = 0
        if size + len(line) > MAX_LOG and not os.path.islink(self.log_path):
            with open(self.log_path, "rb") as handle:
                handle.seek(max(0, size - MAX_LOG // 2))
                kept = handle.read()
            kept = kept[kept.find(b"\n") + 1:]
            replace_atomically(self.log_path, kept + line, 0o600)
            return
        os.makedirs(self.home, mode=0o700, exist_ok=True)
        # O_NOFOLLOW: a link planted in the home must not make us append elsewhere.
        fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)


def script_files(path: str) -> list[str]:
    """``sieve_before``/``sieve_after`` entry: a script file, or every ``*.sieve`` of a directory in name order."""
    if os.path.isdir(path):
        return [os.path.join(path, e) for e in sorted(os.listdir(path)) if e.endswith(SUFFIX)]
    return [path]
