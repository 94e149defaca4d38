"""
Pure: FETCH responses from index records and, when the items need it, the
messages' text (CRLF line ends).

ENVELOPE, BODY, BODYSTRUCTURE, RFC822.SIZE, FLAGS, INTERNALDATE, UID and
MODSEQ come from the cached summary, so a ``FETCH 1:* (UID FLAGS RFC822.SIZE
ENVELOPE)`` never opens a file.  Sections are sliced out of the message
bytes exactly as stored (LF -> CRLF only); BINARY[...] decodes them
(C{binary.py}; literal8 when the result holds NUL).  Slicing and decoding
(L{Renderer.extract}) run in the thread that reads the text; formatting
(L{Renderer.render_batch}) on the reactor.
"""

from __future__ import annotations

from typing import Callable, Iterable

from mailserver.imap import binary
from mailserver.imap import parts as mime
from mailserver.imap.syntax import FetchItem, Section
from mailserver.imap.wire import NIL, flag_list, internal_date
from mailserver.store.records import MessageRecord

_CONTENT_ITEMS = {"RFC822", "RFC822.HEADER", "RFC822.TEXT"}
_SEEN_ITEMS = {"RFC822", "RFC822.TEXT"}


def needs_content(items: Iterable[FetchItem]) -> bool:
    """True if any item needs the message text (not just the index)."""
    return any(i.name in _CONTENT_ITEMS or i.section is not None for i in items)


def sets_seen(items: Iterable[FetchItem]) -> bool:
    """True if fetching C{items} sets \\Seen (BODY[...] without PEEK, RFC822, RFC822.TEXT)."""
    return any(i.name in _SEEN_ITEMS or (i.section is not None and not i.section.peek) for i in items)


#: What one FETCH item is, decided once per command (L{_plan}).
_UID, _FLAGS, _MODSEQ, _SIZE, _DATE, _ENVELOPE, _BODYSTRUCTURE, _BODY, _CONTENT, _BINARY, _BINARY_SIZE = range(11)
_INDEX_KINDS = {
    "UID": _UID, "FLAGS": _FLAGS, "MODSEQ": _MODSEQ, "RFC822.SIZE": _SIZE, "INTERNALDATE": _DATE,
    "ENVELOPE": _ENVELOPE, "BODYSTRUCTURE": _BODYSTRUCTURE,
}
_SUMMARY_KEYS = {_ENVELOPE: "envelope", _BODYSTRUCTURE: "bodystructure", _BODY: "body"}
_FLAG_TEXT_CACHE = 256

#: Per message, what L{Renderer.extract} took out of its text for each content item, in order:
#: bytes, None (no such part: NIL), an int (BINARY.SIZE) or the L{binary.UnknownCte} to report.
Extracted = list


class Renderer:
    """
    Renders FETCH responses for one command.

    The work is split in two so that nothing heavy runs on the reactor:
    L{extract} (in the thread that read the message) parses the MIME tree,
    slices sections and undoes BINARY's transfer encodings; L{render_batch}
    (on the reactor) only formats, from a plan of the items made once per
    command.
    """

    def __init__(self, items: list[FetchItem], uid_command: bool, modseq: bool = False) -> None:
        """C{modseq}: CONDSTORE is on, so MODSEQ goes with every FLAGS, asked for or implicit."""
        self.items = list(items)
        self.modseq = modseq
        if uid_command and not any(i.name == "UID" for i in self.items):
            self.items.insert(0, FetchItem("UID"))
        names = {i.name for i in self.items}
        if modseq and "FLAGS" in names and "MODSEQ" not in names:
            # RFC 7162 3.1: with CONDSTORE on, FLAGS go with their MODSEQ (as Dovecot; IMAPClient expects it)
            self.items.append(FetchItem("MODSEQ"))
        #: The items whose value comes from the message text, in L{extract}'s order.
        self.content_items = [i for i in self.items if _kind(i) >= _CONTENT]
        #: Every content item is the whole message as it is (BODY[], RFC822): nothing to extract.
        self.whole_only = all(_whole(i) for i in self.content_items)
        extra = []
        if not any(i.name == "FLAGS" for i in self.items):
            extra.append(FetchItem("FLAGS"))
        if modseq and not any(i.name == "MODSEQ" for i in self.items):
            extra.append(FetchItem("MODSEQ"))
        self._plans = (_plan(self.items), _plan(self.items + extra))
        self._flag_text: dict[frozenset[str], bytes] = {}

    # ---------------------------------------------------------- thread side

    def extract(self, data: bytes) -> Extracted:
        """
        What each content item takes from C{data} (CRLF line ends): run in
        the reader thread, with the read (MIME parsing and BINARY decoding
        never run on the reactor).
        """
        if self.whole_only:
            return [data] * len(self.content_items)
        tree: list[mime.Entity] = []

        def root() -> mime.Entity:
            if not tree:
                tree.append(mime.parse(data))
            return tree[0]

        decoded_parts: dict[tuple[int, ...], bytes | None] = {}
        out: Extracted = []
        for item in self.content_items:
            try:
                out.append(_extract(item, data, root, decoded_parts))
            except binary.UnknownCte as e:
                out.append(e)
        return out

    # ---------------------------------------------------------- reactor side

    def render_pieces(
        self,
        seq: int,
        record: MessageRecord,
        flags: Iterable[str],
        data: bytes | None,
        add_flags: bool = False,
        modseq: int = 0,
    ) -> list[bytes]:
        """
        One message's ``* seq FETCH (...)`` as pieces (no CRLF at the end),
        extracted and rendered at once: for a single message whose text is
        already in memory.  C{data} is None for a message whose file is gone.
        """
        extracted = self.extract(data) if data is not None else [None] * len(self.content_items)
        pieces = self.render_batch([(seq, record, flags, extracted, add_flags, modseq)])
        pieces[-1] = pieces[-1][:-2]
        return pieces

    def render_batch(
        self, rows: Iterable[tuple[int, MessageRecord, Iterable[str], Extracted, bool, int]]
    ) -> list[bytes]:
        """
        ``* seq FETCH (...)`` CRLF for each (seq, record, flags, extracted,
        add_flags, modseq) row, as pieces to write in sequence: the text
        between two literals is one piece (a message without literals is a
        piece of its own), and a literal's content is its own piece (never
        copied here).  L{binary.UnknownCte} is raised with
        C{.pieces} holding the responses of the rows before it.
        """
        out: list[bytes] = []
        text = b""
        for seq, record, flags, extracted, add_flags, modseq in rows:
            mark, before = len(out), text
            text += b"* %d FETCH (" % seq
            for kind, head, index in self._plans[add_flags]:
                if kind >= _CONTENT:
                    content = extracted[index]
                    if kind == _CONTENT:
                        if content is None:
                            text += head + NIL
                        else:
                            out.append(text + head + b"{%d}\r\n" % len(content))
                            out.append(content)
                            text = b""
                        continue
                    if isinstance(content, binary.UnknownCte):
                        del out[mark:]
                        if before:
                            out.append(before)
                        content.pieces = out
                        raise content
                    if kind == _BINARY_SIZE:
                        text += head + b"%d" % (content or 0)
                    elif content is None:
                        text += head + b" " + NIL
                    else:
                        marker = b" ~{%d}\r\n" if b"\0" in content else b" {%d}\r\n"  # literal8
                        out.append(text + head + marker % len(content))
                        out.append(content)
                        text = b""
                elif kind == _UID:
                    text += head + b"%d" % record.uid
                elif kind == _FLAGS:
                    text += head + self._flags(flags)
                elif kind == _MODSEQ:
                    text += head + b"(%d)" % modseq
                elif kind == _SIZE:
                    text += head + b"%d" % record.vsize
                elif kind == _DATE:
                    text += head + internal_date(record.mtime)
                else:
                    text += head + record.summary[_SUMMARY_KEYS[kind]].encode("latin-1")
            text += b")\r\n"
            if len(out) == mark:  # a message without literals: its own piece (no text growing over the batch)
                out.append(text)
                text = b""
        if text:
            out.append(text)
        return out

    def _flags(self, flags: Iterable[str]) -> bytes:
        """``(\\Seen ...)``, formatted once per distinct set of flags."""
        if not isinstance(flags, frozenset):
            return flag_list(flags)
        found = self._flag_text.get(flags)
        if found is None:
            found = flag_list(flags)
            if len(self._flag_text) < _FLAG_TEXT_CACHE:
                self._flag_text[flags] = found
        return found


def _kind(item: FetchItem) -> int:
    if item.name in _INDEX_KINDS:
        return _INDEX_KINDS[item.name]
    if item.name == "BODY" and item.section is None:
        return _BODY
    if item.name == "BINARY":
        return _BINARY
    if item.name == "BINARY.SIZE":
        return _BINARY_SIZE
    return _CONTENT


def _whole(item: FetchItem) -> bool:
    """True if the item's value is the whole message, untouched (RFC822, BODY[] without a range)."""
    if item.name == "RFC822":
        return True
    section = item.section
    return (item.name == "BODY" and section is not None and not section.part and not section.text
            and section.partial is None)


def _plan(items: list[FetchItem]) -> list[tuple[int, bytes, int]]:
    """(kind, the item's text before its value, index in the extracted values) per item."""
    plan = []
    index = 0
    for n, item in enumerate(items):
        kind = _kind(item)
        if kind == _BINARY_SIZE:
            part = ".".join(str(p) for p in item.section.part).encode("ascii")
            head = b"BINARY.SIZE[" + part + b"] "
        elif kind == _BINARY:
            head = item.section.label()
        elif kind == _CONTENT:
            head = (item.name.encode("ascii") if item.section is None else item.section.label()) + b" "
        elif kind == _MODSEQ:
            head = b"MODSEQ "
        else:
            head = item.name.encode("ascii") + b" "
        plan.append((kind, head if n == 0 else b" " + head, index if kind >= _CONTENT else -1))
        if kind >= _CONTENT:
            index += 1
    return plan


def _extract(
    item: FetchItem, data: bytes, root: Callable[[], mime.Entity], decoded_parts: dict[tuple[int, ...], bytes | None]
) -> bytes | int | None:
    """One content item's value from C{data} (L{binary.UnknownCte} for an encoding we cannot undo)."""
    name, section = item.name, item.section
    if name in ("BINARY", "BINARY.SIZE"):
        part = section.part
        if part not in decoded_parts:
            decoded_parts[part] = binary.decoded(data, root(), part)
        content = decoded_parts[part]
        if name == "BINARY.SIZE":
            return len(content or b"")
    elif name == "RFC822":
        return data
    elif name == "RFC822.HEADER":
        return mime.header_bytes(data, root())
    elif name == "RFC822.TEXT":
        return data[root().body_start:]
    elif not section.part and not section.text:
        content = data  # BODY[]: the whole message, no MIME parse needed
    else:
        content = section_bytes(data, root(), section)
    if content is not None and section.partial is not None:
        start, length = section.partial
        content = content[start:start + length]
    return content


def section_bytes(data: bytes, root: mime.Entity, section: Section) -> bytes | None:
    """The bytes BODY[section] names, or None when the message has no such part."""
    try:
        entity, is_message = mime.resolve(root, section.part)
    except mime.SectionError:
        return None
    text = section.text
    if not text:
        if not section.part:
            return data
        return data[entity.body_start:entity.end]
    if text == "MIME":
        return mime.header_bytes(data, entity)
    if not is_message:
        if entity.message is None:
            return None
        entity = entity.message
    if text == "HEADER":
        return mime.header_bytes(data, entity)
    if text == "TEXT":
        return data[entity.body_start:entity.end]
    names = [f.decode("latin-1") for f in section.fields]
    return mime.header_fields(entity, names, negate=text == "HEADER.FIELDS.NOT")
