"""
IMAP commands on the selected mailbox: CHECK, CLOSE, UNSELECT, EXPUNGE,
SEARCH, FETCH, STORE, COPY, MOVE (each also as UID command where RFC 3501,
4315 and 6851 define one).

FETCH renders from the folder index; message text is read in the thread
pool in batches of about L{BATCH_BYTES} (one thread trip per batch; the
next batch is read while this one is rendered and written, so two batches
at most are in memory), and writing waits whenever the transport's buffer
is full, so a full-body FETCH of a big folder neither blocks the reactor
nor piles the folder up in memory.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mailserver.imap import binary, condstore, esearch
from mailserver.imap import fetch as fetching
from mailserver.imap import search as searching
from mailserver.imap.folder_commands import check_flags, read_mailbox
from mailserver.imap.replies import Refused
from mailserver.imap.syntax import Command, FetchItem, ParseError, parse_fetch_items
from mailserver.imap.wire import sequence_set
from mailserver.store.folder_names import FolderNotFoundError
from mailserver.netwrite import write_sequence_now

if TYPE_CHECKING:
    from mailserver.imap.server import IMAPServer

SELECTED = frozenset({"select"})
#: Bytes of message text read per thread-pool round trip during FETCH.
BATCH_BYTES = 1024 * 1024
BATCH_MESSAGES = 500


def _writable(server: "IMAPServer") -> None:
    if not server.selected.readwrite:
        raise Refused("Mailbox is read-only", "READ-ONLY")


async def check(server: "IMAPServer", cmd: Command) -> bytes:
    cmd.args.end()
    return b"CHECK completed"


async def close(server: "IMAPServer", cmd: Command) -> bytes:
    cmd.args.end()
    mailbox = server.selected
    server.set_selected(None)
    if mailbox.readwrite:
        removed = await server.account.run(mailbox.index.expunge)
        if removed:
            server.account.changed(mailbox.name)
    return b"CLOSE completed"


async def unselect(server: "IMAPServer", cmd: Command) -> bytes:
    cmd.args.end()
    server.set_selected(None)
    return b"UNSELECT completed"


async def expunge(server: "IMAPServer", cmd: Command) -> bytes:
    uids = None
    if cmd.uid:
        messages = cmd.args.seqset()
        uids = [uid for _, uid in server.selected.select(messages, True)]
    cmd.args.end()
    _writable(server)
    mailbox = server.selected
    removed = await server.account.run(mailbox.index.expunge, uids)
    if removed:
        server.account.changed(mailbox.name)
    return b"EXPUNGE completed"


# ---------------------------------------------------------------- SEARCH


async def matching(server: "IMAPServer", tree: searching.Node) -> list[searching.Facts]:
    """The messages of the selected mailbox that C{tree} matches (in a thread if it reads text)."""
    mailbox = server.selected
    index = mailbox.index
    facts = []
    modseqs = mailbox.modseqs
    for seq, uid in enumerate(mailbox.uids, 1):
        record = mailbox.records[uid]
        facts.append(
            searching.Facts(seq, uid, mailbox.flags(uid), record.mtime, record.vsize, record.summary,
                            index.read, modseqs.get(uid, 0))
        )
    ctx = searching.Context(len(mailbox.uids), mailbox.uids[-1] if mailbox.uids else 0, frozenset(mailbox.saved))
    if searching.needs_content(tree):
        return await server.account.run(searching.search, tree, facts, ctx)
    return searching.search(tree, facts, ctx)


async def search(server: "IMAPServer", cmd: Command) -> bytes:
    options = esearch.parse_return(cmd.args)
    try:
        _, tree = searching.parse_search(cmd.args)
        found = await matching(server, tree)
    except Exception:
        if options is not None and "SAVE" in options:
            server.selected.saved = []  # RFC 5182: a failed SAVE empties $
        raise
    with_modseq = searching.uses_modseq(tree)
    if with_modseq:
        condstore.enable(server, ["CONDSTORE"])
    if options is None and "IMAP4REV2" in server.enabled:
        options = frozenset({"ALL"})  # RFC 9051 6.4.4: SEARCH answers with ESEARCH
    if options is not None:
        result = esearch.respond(
            cmd.tag, cmd.uid, options, [esearch.Found(f.seq, f.uid, f.modseq) for f in found], with_modseq
        )
        if result.saved is not None:
            server.selected.saved = result.saved
        if result.line is not None:
            server.send_lines([result.line])
        return b"SEARCH completed"
    numbers = [f.uid if cmd.uid else f.seq for f in found]
    tail = b" (MODSEQ %d)" % max(f.modseq for f in found) if with_modseq and found else b""
    server.untagged(b"SEARCH" + b"".join(b" %d" % n for n in numbers) + tail)
    return b"SEARCH completed"


# ---------------------------------------------------------------- FETCH


async def fetch(server: "IMAPServer", cmd: Command) -> bytes:
    messages = cmd.args.seqset()
    cmd.args.sp()
    items = parse_fetch_items(cmd.args)
    changedsince, vanished = condstore.parse_fetch_modifiers(cmd.args)
    cmd.args.end()
    if vanished and not (cmd.uid and "QRESYNC" in server.enabled):
        raise ParseError("VANISHED needs UID FETCH and QRESYNC enabled")
    if changedsince is not None or any(i.name == "MODSEQ" for i in items):
        condstore.enable(server, ["CONDSTORE"])
    mailbox = server.selected
    chosen = mailbox.select(messages, cmd.uid)
    if vanished:
        line = await condstore.vanished_earlier(server, mailbox, changedsince, messages)
        if line is not None:
            server.send_lines([line])
    if changedsince is not None:
        chosen = [(seq, uid) for seq, uid in chosen if mailbox.modseqs.get(uid, 0) > changedsince]
        if not any(i.name == "MODSEQ" for i in items):
            items.append(FetchItem("MODSEQ"))
    marked: set[int] = set()
    if fetching.sets_seen(items) and mailbox.readwrite:
        unseen = [uid for _, uid in chosen if uid in mailbox.records and "S" not in mailbox.records[uid].letters]
        if unseen:
            changed = await server.account.run(mailbox.index.store, unseen, ["\\Seen"], 1)
            marked = set(changed)
            server.account.changed(mailbox.name)
    # With QRESYNC every FETCH response carries the UID (RFC 7162 3.2.4).
    renderer = fetching.Renderer(items, cmd.uid or "QRESYNC" in server.enabled, "CONDSTORE" in server.enabled)
    content = fetching.needs_content(items)
    # In the reader's thread trip: MIME parsing, sections and BINARY decoding (never on the reactor).
    extract = None if renderer.whole_only else renderer.extract
    throttle = server.start_throttle()
    missing = False
    batches = _batches(mailbox, chosen, content)
    batch = next(batches, None)
    reading = None
    if content and batch:
        reading = server.account.run(mailbox.index.read_many, [uid for _, uid in batch], transform=extract)
    no_content: list = [None] * len(renderer.content_items)
    try:
        while batch is not None:
            texts: dict[int, bytes | None] = {}
            if reading is not None:
                texts, reading = await reading, None
            following = next(batches, None)
            if content and following:
                # read ahead: the next batch comes off the disk while this one is rendered and sent
                reading = server.account.run(mailbox.index.read_many, [uid for _, uid in following], transform=extract)
            rows = []
            for seq, uid in batch:
                if uid in marked:
                    mailbox.note_reported(uid)
                if content:
                    found = texts.get(uid)
                    if found is None:
                        missing = True
                        continue
                    values = [found] * len(no_content) if extract is None else found
                else:
                    values = no_content
                rows.append((seq, mailbox.records.get(uid), mailbox.flags(uid), values, uid in marked,
                             mailbox.modseqs.get(uid, 0)))
            try:
                out = renderer.render_batch(rows)
            except binary.UnknownCte as e:
                write_sequence_now(server.transport, e.pieces)
                raise Refused(str(e), "UNKNOWN-CTE") from None
            write_sequence_now(server.transport, out)
            server.resetTimeout()
            await throttle.wait()
            batch = following
    finally:
        server.stop_throttle()
        if reading is not None:
            reading.addErrback(lambda _: None)  # the command ended early: drop the read-ahead
    if missing:
        raise Refused("Some of the requested messages no longer exist", "EXPUNGEISSUED")
    return b"FETCH completed"


def _batches(mailbox, chosen: list[tuple[int, int]], content: bool):
    if not content:
        for i in range(0, len(chosen), 2000):
            yield chosen[i:i + 2000]
        return
    batch: list[tuple[int, int]] = []
    size = 0
    for seq, uid in chosen:
        batch.append((seq, uid))
        size += mailbox.records[uid].size
        if size >= BATCH_BYTES or len(batch) >= BATCH_MESSAGES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


# ---------------------------------------------------------------- STORE


async def store(server: "IMAPServer", cmd: Command) -> bytes:
    messages = cmd.args.seqset()
    cmd.args.sp()
    unchangedsince = condstore.parse_store_modifiers(cmd.args)
    action = cmd.args.atom("store action").upper()
    silent = action.endswith(".SILENT")
    base = action[:-7] if silent else action
    modes = {"FLAGS": 0, "+FLAGS": 1, "-FLAGS": -1}
    if base not in modes:
        raise ParseError(f"unknown STORE action {action}")
    cmd.args.sp()
    flags = check_flags(cmd.args.flag_list())
    cmd.args.end()
    mailbox = server.selected
    chosen = mailbox.select(messages, cmd.uid)
    _writable(server)
    if unchangedsince is not None:
        condstore.enable(server, ["CONDSTORE"])
    if not chosen:
        return b"STORE completed"
    changed, modified = await server.account.run(
        mailbox.index.conditional_store, [uid for _, uid in chosen], flags, modes[base], unchangedsince
    )
    lines = mailbox.adopt_keywords(mailbox.index.snapshot.keywords)
    with_uid = cmd.uid or "QRESYNC" in server.enabled
    for seq, uid in chosen:
        if uid not in changed:
            continue
        before = mailbox.modseqs.get(uid)
        mailbox.note_reported(uid)
        if not silent:
            lines.append(mailbox.flags_response(seq, uid, with_uid=with_uid))
        elif "CONDSTORE" in server.enabled and mailbox.modseqs.get(uid) != before:
            # RFC 7162 3.1.3: the new MODSEQ is sent even for .SILENT.
            uid_part = b"UID %d " % uid if with_uid else b""
            lines.append(b"* %d FETCH (%sMODSEQ (%d))" % (seq, uid_part, mailbox.modseqs[uid]))
    server.send_lines(lines)
    server.account.changed(mailbox.name)
    if modified:
        refused = set(modified)
        failed = [uid if cmd.uid else seq for seq, uid in chosen if uid in refused]
        return b"[MODIFIED " + sequence_set(failed) + b"] Conditional STORE failed"
    return b"STORE completed"


# ---------------------------------------------------------------- COPY / MOVE


async def _transfer(server: "IMAPServer", cmd: Command, move: bool) -> bytes:
    messages = cmd.args.seqset()
    cmd.args.sp()
    target_name = read_mailbox(cmd)
    cmd.args.end()
    mailbox = server.selected
    chosen = mailbox.select(messages, cmd.uid)
    if move:
        _writable(server)
    account = server.account
    try:
        target = await account.target(target_name)
    except FolderNotFoundError:
        raise Refused("Mailbox does not exist", "TRYCREATE") from None
    word = b"MOVE" if move else b"COPY"
    if not chosen:
        return word + b" completed"
    if not move:  # a MOVE stays within the account: its usage does not change
        await account.check_quota(*mailbox.index.size_of([uid for _, uid in chosen]))
    try:
        pairs = await account.run(mailbox.index.transfer, [uid for _, uid in chosen], target, move)
    except FileNotFoundError:
        raise FolderNotFoundError("mailbox vanished") from None
    account.changed(target_name)
    if move:
        account.changed(mailbox.name)
    if not pairs:
        return word + b" completed"
    code = b"[COPYUID %d %s %s]" % (
        target.snapshot.uidvalidity,
        sequence_set([p[0] for p in pairs]),
        sequence_set([p[1] for p in pairs]),
    )
    if move:
        server.untagged(b"OK " + code + b" Moved")
        return b"MOVE completed"
    return code + b" COPY completed"


async def copy(server: "IMAPServer", cmd: Command) -> bytes:
    return await _transfer(server, cmd, False)


async def move(server: "IMAPServer", cmd: Command) -> bytes:
    return await _transfer(server, cmd, True)


COMMANDS = {
    "CHECK": (check, SELECTED),
    "CLOSE": (close, SELECTED),
    "UNSELECT": (unselect, SELECTED),
    "EXPUNGE": (expunge, SELECTED),
    "SEARCH": (search, SELECTED),
    "FETCH": (fetch, SELECTED),
    "STORE": (store, SELECTED),
    "COPY": (copy, SELECTED),
    "MOVE": (move, SELECTED),
}

