"""
C{mailserver user add|passwd|del|list}: edit the passwd-file safely.

Edits hold an exclusive C{flock} on C{passwd_file + ".lock"} across
read-modify-write, write a temporary file in the same directory, fsync it,
rename it over the old file and fsync the directory, so a running daemon
(which re-reads the file when it changes, and at once when the command
signals it, as C{mailserver reload} does) and concurrent editors only ever
see a whole file.  Comments and other users' lines are kept byte for byte.
Passwords are read from the terminal (twice) or from one line of standard
input, never from the command line.
"""

from __future__ import annotations

import argparse
import fcntl
import getpass
import os
import sys
from contextlib import contextmanager
from typing import Callable, Iterator

from mailserver.auth.schemes import HASH_SCHEMES, hash_password
from mailserver.durable import replace_atomically
from mailserver.tables.passwd import (
    UserRecord,
    check_name,
    check_user_name,
    format_passwd_line,
    is_entry,
    lookup_key,
    parse_passwd,
    replace_password,
    split_password,
)

USAGE_ERROR = 2
FAILURE = 1


class _Failed(Exception):
    """A failure to report on stderr; C{status} is the exit status."""

    def __init__(self, message: str, status: int = FAILURE) -> None:
        super().__init__(message)
        self.status = status


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the C{user} command and its subcommands to the admin tool's parser."""
    user = subparsers.add_parser("user", help="add, change, delete and list users (passwd_file)")
    commands = user.add_subparsers(dest="user_command", metavar="COMMAND")
    commands.required = True
    schemes = dict(type=str.upper, choices=HASH_SCHEMES, help="password scheme (default: default_password_scheme)")

    add = commands.add_parser("add", help="add a user; the password is asked for")
    add.add_argument("name", help="user@domain or user")
    add.add_argument("--home", help="home directory (absolute path)")
    add.add_argument("--uid", type=_number, help="numeric user id (with --gid)")
    add.add_argument("--gid", type=_number, help="numeric group id (with --uid)")
    add.add_argument("--scheme", **schemes)
    add.set_defaults(func=run_add)

    passwd = commands.add_parser("passwd", help="change a user's password")
    passwd.add_argument("name")
    passwd.add_argument("--scheme", **schemes)
    passwd.set_defaults(func=run_passwd)

    delete = commands.add_parser("del", help="delete a user (the mail stays on disk)")
    delete.add_argument("name")
    delete.set_defaults(func=run_del)

    listing = commands.add_parser("list", help="list users: name, scheme, uid, gid, home")
    listing.set_defaults(func=run_list)


def _number(text: str) -> int:
    if not text.isascii() or not text.isdigit() or int(text) > 0xFFFFFFFF:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number from 0 to 4294967295")
    return int(text)


def _reporting(command: str, action: Callable[[], None], config=None) -> int:
    """Run C{action}; then, if it changed C{config}'s passwd-file, tell the running daemon."""
    try:
        action()
    except _Failed as failure:
        print(f"mailserver user {command}: {failure}", file=sys.stderr)
        return failure.status
    if config is not None:
        _notify_daemon(config)
    return 0


def _notify_daemon(config) -> None:
    """SIGHUP the running daemon so the change counts at once (not at its next file poll)."""
    from mailserver.cli.daemon import NotRunning, notify

    try:
        notify(config)
    except NotRunning:
        pass  # no daemon: it reads the file when it starts


# --- the commands -----------------------------------------------------------


def run_add(args: argparse.Namespace, config) -> int:
    def add() -> None:
        name = _valid_name(args.name)
        if (args.uid is None) != (args.gid is None):
            raise _Failed("--uid and --gid go together", USAGE_ERROR)
        if args.home is not None and (not os.path.isabs(args.home) or any(c in args.home for c in ":\r\n")):
            raise _Failed(f"--home {args.home!r} must be an absolute path without ':'", USAGE_ERROR)
        key = lookup_key(name)
        if _find(_usable(config.passwd_file), key):
            raise _Failed(f"user {name} already exists")
        field = _new_password(name, args.scheme or config.default_password_scheme)
        line = format_passwd_line(UserRecord(name, *split_password(field), args.uid, args.gid, args.home))

        def edit(chunks: list[str]) -> None:
            if _find(chunks, key):
                raise _Failed(f"user {name} already exists")
            if chunks and chunks[-1] != "":
                chunks.append("")  # the old last line had no newline
            chunks[-1:] = [line, ""]

        _edit(config.passwd_file, edit)

    return _reporting("add", add, config)


def run_passwd(args: argparse.Namespace, config) -> int:
    def change() -> None:
        name = _valid_name(args.name)
        key = lookup_key(name)
        if not _find(_usable(config.passwd_file), key):
            raise _Failed(f"no user {name}")
        field = _new_password(name, args.scheme or config.default_password_scheme)

        def edit(chunks: list[str]) -> None:
            found = _find(chunks, key)
            if not found:
                raise _Failed(f"no user {name}")
            for index in found:
                line, cr = _split_cr(chunks[index])
                chunks[index] = replace_password(line, field) + cr

        _edit(config.passwd_file, edit)

    return _reporting("passwd", change, config)


def run_del(args: argparse.Namespace, config) -> int:
    def delete() -> None:
        name = _valid_name(args.name, existing=True)
        key = lookup_key(name)

        def edit(chunks: list[str]) -> None:
            found = _find(chunks, key)
            if not found:
                raise _Failed(f"no user {name}")
            for index in reversed(found):
                del chunks[index]

        _edit(config.passwd_file, edit)

    return _reporting("del", delete, config)


def run_list(args: argparse.Namespace, config) -> int:
    def listing() -> None:
        chunks, _ = _read(config.passwd_file)
        records, problems = parse_passwd("\n".join(chunks), config.passwd_file)
        for problem in problems:
            print(problem, file=sys.stderr)
        for record in records.values():
            fields = [record.name, record.scheme, record.uid, record.gid, record.home]
            print("\t".join("-" if f is None else str(f) for f in fields))
        if any(p.severity == "error" for p in problems):
            raise _Failed(f"{config.passwd_file} has errors")

    return _reporting("list", listing)


# --- helpers ----------------------------------------------------------------


def _valid_name(name: str, existing: bool = False) -> str:
    """
    C{name} checked as a new user's name; with C{existing}, only its syntax,
    so that C{user del} can remove an entry the daemon skips.
    """
    try:
        return check_name(name) if existing else check_user_name(name)
    except ValueError as error:
        raise _Failed(str(error), USAGE_ERROR) from None


def _new_password(name: str, scheme: str) -> str:
    """Read a password and hash it: C{{SCHEME}hash}."""
    scheme = scheme.upper()
    if scheme not in HASH_SCHEMES:
        raise _Failed(f"cannot write password scheme {scheme!r}; use one of {', '.join(HASH_SCHEMES)}")
    password = _read_password(name)
    try:
        return hash_password(scheme, password)
    except ValueError as error:
        raise _Failed(str(error)) from None


def _read_password(name: str) -> bytes:
    """Twice from the terminal, or one line of standard input."""
    if sys.stdin is not None and sys.stdin.isatty():
        try:
            first = getpass.getpass(f"New password for {name}: ")
            second = getpass.getpass("Retype the new password: ")
        except EOFError:
            raise _Failed("no password given") from None
        if first != second:
            raise _Failed("the passwords do not match; nothing changed")
    else:
        line = sys.stdin.readline() if sys.stdin is not None else ""
        first = line[:-1] if line.endswith("\n") else line
        first = first[:-1] if first.endswith("\r") else first
    if not first:
        raise _Failed("empty password; nothing changed")
    if "\x00" in first:
        raise _Failed("the password contains a NUL character; nothing changed")
    return first.encode("utf-8")


def _split_cr(chunk: str) -> tuple[str, str]:
    return (chunk[:-1], "\r") if chunk.endswith("\r") else (chunk, "")


def _find(chunks: list[str], key: str) -> list[int]:
    """Indexes of the lines whose user has lookup key C{key}."""
    found = []
    for index, chunk in enumerate(chunks):
        line = _split_cr(chunk)[0]
        if is_entry(line) and lookup_key(line.split(":", 1)[0]) == key:
            found.append(index)
    return found


def _read(path: str) -> tuple[list[str], os.stat_result | None]:
    """The file split on LF (so C{"\\n".join} gives it back), and its stat."""
    try:
        with open(path, "rb") as f:
            data = f.read()
            st = os.fstat(f.fileno())
    except FileNotFoundError:
        return [], None
    except OSError as error:
        raise _Failed(f"cannot read {path}: {error.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise _Failed(f"{path} is not UTF-8; nothing changed") from None
    return (text.split("\n") if text else []), st


@contextmanager
def _locked(path: str) -> Iterator[None]:
    """Hold an exclusive flock on C{path + ".lock"} (created 0600, never removed)."""
    lock_path = path + ".lock"
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as error:
        raise _Failed(f"cannot open {lock_path}: {error.strerror}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for the lock on {lock_path}", file=sys.stderr, flush=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _usable(path: str, chunks: list[str] | None = None) -> list[str]:
    """The file's lines; refuse to edit a file with errors (the daemon would ignore it)."""
    chunks = _read(path)[0] if chunks is None else chunks
    _, problems = parse_passwd("\n".join(chunks), path)
    errors = [str(p) for p in problems if p.severity == "error"]
    if errors:
        raise _Failed("fix these first; nothing changed:\n  " + "\n  ".join(errors))
    return chunks


def _edit(path: str, change: Callable[[list[str]], None]) -> None:
    """Under the lock: read, refuse a file with errors, C{change} the lines, write back."""
    with _locked(path):
        chunks, st = _read(path)
        _usable(path, chunks)
        change(chunks)
        _write(path, "\n".join(chunks).encode("utf-8"), st)


def _write(path: str, data: bytes, st: os.stat_result | None) -> None:
    """Replace C{path} atomically and durably, keeping its mode and owner (0600 if new)."""
    mode = st.st_mode & 0o7777 if st is not None else 0o600
    owner = (st.st_uid, st.st_gid) if st is not None and os.geteuid() == 0 else None
    try:
        replace_atomically(path, data, mode, owner)
    except OSError as error:
        raise _Failed(f"cannot write {path}: {error.strerror}") from None
