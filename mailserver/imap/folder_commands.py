"""
IMAP commands on mailboxes (authenticated state): SELECT, EXAMINE, CREATE,
DELETE, RENAME, SUBSCRIBE, UNSUBSCRIBE, LIST, LSUB, STATUS, APPEND.

Each handler is C{async def handler(server, command) -> OK text}; raising
L{syntax.ParseError} gives BAD, L{Refused} or a C{FolderError} gives NO.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Iterable

from mailserver.imap import binary, condstore, list_extended
from mailserver.imap.replies import Refused
from mailserver.imap.syntax import Command, Literal8, ParseError
from mailserver.imap.wire import astring, flag_list, quoted
from mailserver.store import flags as flagmod
from mailserver.store.folder_names import (
    DELIMITER,
    FolderError,
    FolderNameError,
    FolderNotFoundError,
    disk_name,
    mutf7_decode,
    mutf7_encode,
)
from mailserver.store.records import Snapshot

if TYPE_CHECKING:
    from mailserver.imap.server import IMAPServer

AUTHED = frozenset({"auth", "select"})
_STATUS_ITEMS = ("MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "HIGHESTMODSEQ", "SIZE", "DELETED")


def _disk_path(root: str, name: str) -> str:
    entry = disk_name(name)
    return os.path.join(root, entry) if entry else root


def decode_name(raw: bytes, utf8: bool = False) -> str:
    """
    A mailbox name from the wire: canonical modified UTF-7 (or UTF-8 from
    lax clients); only UTF-8 once IMAP4rev2 is enabled (C{utf8}).

    @raise FolderNameError: malformed or non-canonical (RFC 3501 5.1.3).
    """
    if utf8 or not raw.isascii():
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise FolderNameError("mailbox name is neither modified UTF-7 nor UTF-8") from None
    return mutf7_decode(raw.decode("ascii"), strict=True)


def encode_name(name: str, utf8: bool = False) -> bytes:
    return astring(name.encode("utf-8") if utf8 else mutf7_encode(name).encode("ascii"))


def read_mailbox(cmd: Command) -> str:
    return decode_name(cmd.args.astring("mailbox name"), cmd.utf8)


# ---------------------------------------------------------------- SELECT / EXAMINE


async def _select(server: "IMAPServer", cmd: Command, readwrite: bool) -> bytes:
    name = read_mailbox(cmd)
    params = condstore.parse_select_params(cmd.args)
    cmd.args.end()
    if params.qresync is not None and "QRESYNC" not in server.enabled:
        raise ParseError("QRESYNC is not enabled")
    if server.selected is not None:
        server.set_selected(None)
        server.untagged(b"OK [CLOSED] Previous mailbox closed")
    if params.condstore:
        condstore.enable(server, ["CONDSTORE"])
    mailbox = await server.account.select_folder(name, readwrite)
    flags = mailbox.known_flags()
    server.untagged(b"FLAGS " + flag_list(flags))
    permanent = mailbox.permanent_flags() if readwrite else []
    server.untagged(b"OK [PERMANENTFLAGS " + flag_list(permanent) + b"] Flags permitted")
    server.untagged(b"%d EXISTS" % mailbox.exists)
    if "IMAP4REV2" not in server.enabled:  # RFC 9051 has no \Recent
        server.untagged(b"%d RECENT" % mailbox.recent_count)
    unseen = mailbox.first_unseen()
    if unseen is not None:
        server.untagged(b"OK [UNSEEN %d] First unseen" % unseen)
    server.untagged(b"OK [UIDVALIDITY %d] UIDs valid" % mailbox.uidvalidity)
    server.untagged(b"OK [UIDNEXT %d] Predicted next UID" % mailbox.getUIDNext())
    server.untagged(b"OK [HIGHESTMODSEQ %d] Highest" % mailbox.highestmodseq)
    server.set_selected(mailbox)
    if params.qresync is not None:
        await condstore.resync_on_select(server, mailbox, params.qresync)
    mode = b"READ-WRITE" if readwrite else b"READ-ONLY"
    return b"[" + mode + b"] " + cmd.name.encode() + b" completed"


async def select(server: "IMAPServer", cmd: Command) -> bytes:
    return await _select(server, cmd, True)


async def examine(server: "IMAPServer", cmd: Command) -> bytes:
    return await _select(server, cmd, False)


# ---------------------------------------------------------------- CREATE / DELETE / RENAME


async def create(server: "IMAPServer", cmd: Command) -> bytes:
    name = read_mailbox(cmd)
    cmd.args.end()
    await server.account.create_folder(name)
    return b"CREATE completed"


async def delete(server: "IMAPServer", cmd: Command) -> bytes:
    name = read_mailbox(cmd)
    cmd.args.end()
    account = server.account
    path = await account.run(account.folders.path, name)
    await account.delete_folder(name)
    if server.selected is not None and server.selected.index.path == path:
        server.set_selected(None)
        server.untagged(b"OK [CLOSED] Selected mailbox deleted")
    return b"DELETE completed"


async def rename(server: "IMAPServer", cmd: Command) -> bytes:
    old = read_mailbox(cmd)
    cmd.args.sp()
    new = read_mailbox(cmd)
    cmd.args.end()
    account = server.account
    moves = await account.rename_folder(old, new)
    if server.selected is not None:
        moved = {_disk_path(account.root, source) for source, _ in moves}
        if server.selected.index.path in moved:
            server.set_selected(None)
            server.untagged(b"OK [CLOSED] Selected mailbox renamed")
    return b"RENAME completed"


# ---------------------------------------------------------------- subscriptions and listing


async def subscribe(server: "IMAPServer", cmd: Command) -> bytes:
    name = read_mailbox(cmd)
    cmd.args.end()
    await server.account.subscribe_folder(name)
    return b"SUBSCRIBE completed"


async def unsubscribe(server: "IMAPServer", cmd: Command) -> bytes:
    name = read_mailbox(cmd)
    cmd.args.end()
    await server.account.unsubscribe_folder(name)
    return b"UNSUBSCRIBE completed"


def _list_line(word: bytes, name: str, attrs: list[str], childinfo: bool = False, utf8: bool = False) -> bytes:
    line = (b"* " + word + b" (" + b" ".join(a.encode() for a in attrs) + b") " + quoted(DELIMITER.encode()) + b" "
            + encode_name(name, utf8))
    return line + (b' ("CHILDINFO" ("SUBSCRIBED"))' if childinfo else b"")


async def _list(server: "IMAPServer", cmd: Command, subscribed: bool) -> bytes:
    if subscribed:
        raw_reference = cmd.args.astring("reference")
        cmd.args.sp()
        command = list_extended.ListCommand(raw_reference, (cmd.args.list_mailbox(),))
        cmd.args.end()
    else:
        command = list_extended.parse(cmd.args)
    word = b"LSUB" if subscribed else b"LIST"
    if command.patterns == (b"",) and not subscribed and not command.selection:
        server.untagged(b'LIST (\\Noselect) "' + DELIMITER.encode() + b'" ""')
        return b"LIST completed"
    for item in command.status_items:
        if item not in _STATUS_ITEMS:
            raise ParseError(f"unknown STATUS item {item}")
    try:
        reference = decode_name(command.reference, cmd.utf8)
        patterns = [decode_name(p, cmd.utf8) for p in command.patterns]
    except FolderNameError:
        # A pattern no mailbox name can spell (``&`` not starting valid
        # modified UTF-7) names no mailbox: OK with no matches, as Dovecot.
        return word + b" completed"
    if not command.extended:
        entries = [
            list_extended.Entry(name, attrs)
            for name, attrs in await server.account.list(reference, patterns[0], subscribed)
        ]
    else:
        entries = await server.account.list_extended(reference, patterns, command.selection, command.returns)
    for entry in entries:
        server.send_lines([_list_line(word, entry.name, entry.attributes, entry.childinfo, cmd.utf8)])
        selectable = not {"\\Noselect", "\\NonExistent"} & set(entry.attributes)
        if command.status_items and selectable:
            # LIST-STATUS (RFC 5819); a folder gone meanwhile is just left out
            try:
                snap = await server.account.status(entry.name)
            except FolderError:
                continue
            server.untagged(_status_line(entry.name, snap, command.status_items, cmd.utf8))
    return word + b" completed"


async def list_(server: "IMAPServer", cmd: Command) -> bytes:
    return await _list(server, cmd, False)


async def lsub(server: "IMAPServer", cmd: Command) -> bytes:
    return await _list(server, cmd, True)


def _status_line(name: str, snap: Snapshot, items: Iterable[str], utf8: bool = False) -> bytes:
    values = {
        "MESSAGES": lambda: len(snap.records),
        "RECENT": lambda: snap.recent,
        "UIDNEXT": lambda: snap.uidnext,
        "UIDVALIDITY": lambda: snap.uidvalidity,
        "UNSEEN": lambda: snap.unseen,
        "HIGHESTMODSEQ": lambda: snap.highestmodseq,
        "SIZE": lambda: sum(r.vsize for r in snap.records),  # RFC 8438
        "DELETED": lambda: sum(1 for r in snap.records if "T" in r.letters),  # RFC 9051
    }
    pairs = b" ".join(b"%s %d" % (item.encode(), values[item]()) for item in dict.fromkeys(items))
    return b"STATUS " + encode_name(name, utf8) + b" (" + pairs + b")"


async def status(server: "IMAPServer", cmd: Command) -> bytes:
    name = read_mailbox(cmd)
    cmd.args.sp()
    cmd.args.expect(b"(")
    items = [cmd.args.atom("status item").upper()]
    while not cmd.args.maybe(b")"):
        cmd.args.sp()
        items.append(cmd.args.atom("status item").upper())
    cmd.args.end()
    for item in items:
        if item not in _STATUS_ITEMS:
            raise ParseError(f"unknown STATUS item {item}")
    snap = await server.account.status(name)
    server.untagged(_status_line(name, snap, items, cmd.utf8))
    return b"STATUS completed"


# ---------------------------------------------------------------- APPEND


def check_flags(flags: list[str]) -> list[str]:
    """Flags a client may set: known system flags and valid keywords (\\Recent is dropped)."""
    out = []
    for flag in flags:
        canonical = flagmod.canonical_flag(flag)
        if canonical == flagmod.RECENT:
            continue
        if flagmod.is_system_flag(canonical):
            if canonical not in flagmod.SYSTEM_FLAGS:
                raise ParseError(f"unknown system flag {flag}")
        elif not flagmod.is_valid_keyword(canonical):
            raise ParseError(f"invalid keyword {flag}")
        out.append(canonical)
    return out


async def append(server: "IMAPServer", cmd: Command) -> bytes:
    args = cmd.args
    name = read_mailbox(cmd)
    args.sp()
    flags: list[str] = []
    if args.peek() == b"(":
        flags = check_flags(args.flag_list())
        args.sp()
    date = None
    if args.peek() == b'"':
        date = args.datetime()
        args.sp()
    if not args.is_literal_next():
        raise ParseError("APPEND needs the message as a literal")
    data = args.take_literal()
    args.end()
    if not data:
        raise Refused("Empty messages are not stored", "CANNOT")
    if isinstance(data, Literal8):
        data = binary.encode_binary_parts(data)  # RFC 3516: stored 7-bit clean, BINARY[] decodes
    try:
        uidvalidity, uid = await server.account.append(name, data, flags, date)
    except FolderNotFoundError:
        raise Refused("Mailbox does not exist", "TRYCREATE") from None
    return b"[APPENDUID %d %d] APPEND completed" % (uidvalidity, uid)


COMMANDS = {
    "SELECT": (select, AUTHED),
    "EXAMINE": (examine, AUTHED),
    "CREATE": (create, AUTHED),
    "DELETE": (delete, AUTHED),
    "RENAME": (rename, AUTHED),
    "SUBSCRIBE": (subscribe, AUTHED),
    "UNSUBSCRIBE": (unsubscribe, AUTHED),
    "LIST": (list_, AUTHED),
    "LSUB": (lsub, AUTHED),
    "STATUS": (status, AUTHED),
    "APPEND": (append, AUTHED),
}
