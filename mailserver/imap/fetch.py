"""
Pure: one message's FETCH response from its index record and, when the
items need it, its text (CRLF line ends).

ENVELOPE, BODY, BODYSTRUCTURE, RFC822.SIZE, FLAGS, INTERNALDATE, UID and
MODSEQ come from the cached summary, so a ``FETCH 1:* (UID FLAGS RFC822.SIZE
ENVELOPE)`` never opens a file.  Sections are sliced out of the message
bytes exactly as stored (LF -> CRLF only); BINARY[...] decodes them
(C{binary.py}; literal8 when the result holds NUL).
"""

from __future__ import annotations

from typing import Iterable

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


class Renderer:
    """Renders FETCH responses for one command (keeps the parsed MIME tree per message)."""

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
        ``* seq FETCH (...)`` as pieces to write in sequence (no CRLF at the
        end); C{data} is None for a message whose file is gone.  A literal's
        content is its own piece, so a message's text is never copied on the
        way to the transport.
        """
        out: list[bytes] = [b"* %d FETCH (" % seq]
        tree: list[mime.Entity] = []

        def root() -> mime.Entity:
            if not tree:
                tree.append(mime.parse(data or b""))
            return tree[0]

        decoded_parts: dict[tuple[int, ...], bytes | None] = {}

        def decoded(part: tuple[int, ...]) -> bytes | None:
            """BINARY[part] of this message, decoded once for BINARY and BINARY.SIZE."""
            if data is None:
                return None
            if part not in decoded_parts:
                decoded_parts[part] = binary.decoded(data, root(), part)
            return decoded_parts[part]

        def add(head: bytes, content: bytes | None = None) -> None:
            """One item: C{head}, then C{content} as a literal when given."""
            if len(out) > 1:
                head = b" " + head
            if content is None:
                out.append(head)
            else:
                out.append(head + b"{%d}\r\n" % len(content))
                out.append(content)

        def value(head: bytes, content: bytes | None) -> None:
            if content is None:
                add(head + NIL)
            else:
                add(head, content)

        summary = record.summary
        items = self.items
        if add_flags and not any(i.name == "FLAGS" for i in items):
            items = items + [FetchItem("FLAGS")]
        if add_flags and self.modseq and not any(i.name == "MODSEQ" for i in items):
            items = items + [FetchItem("MODSEQ")]
        for item in items:
            name = item.name
            if name == "UID":
                add(b"UID %d" % record.uid)
            elif name == "FLAGS":
                add(b"FLAGS " + flag_list(flags))
            elif name == "MODSEQ":
                add(b"MODSEQ (%d)" % modseq)
            elif name == "RFC822.SIZE":
                add(b"RFC822.SIZE %d" % record.vsize)
            elif name == "INTERNALDATE":
                add(b"INTERNALDATE " + internal_date(record.mtime))
            elif name == "ENVELOPE":
                add(b"ENVELOPE " + summary["envelope"].encode("latin-1"))
            elif name == "BODYSTRUCTURE":
                add(b"BODYSTRUCTURE " + summary["bodystructure"].encode("latin-1"))
            elif name == "BODY" and item.section is None:
                add(b"BODY " + summary["body"].encode("latin-1"))
            elif name == "RFC822":
                value(b"RFC822 ", data)
            elif name == "RFC822.HEADER":
                value(b"RFC822.HEADER ", None if data is None else mime.header_bytes(data, root()))
            elif name == "RFC822.TEXT":
                value(b"RFC822.TEXT ", None if data is None else data[root().body_start:])
            elif name == "BINARY.SIZE":
                content = decoded(item.section.part)
                part = ".".join(str(p) for p in item.section.part).encode("ascii")
                add(b"BINARY.SIZE[" + part + b"] %d" % len(content or b""))
            elif name == "BINARY":
                content = decoded(item.section.part)
                if content is not None and item.section.partial is not None:
                    start, length = item.section.partial
                    content = content[start:start + length]
                if content is not None and b"\0" in content:
                    add(item.section.label() + b" ~", content)  # literal8
                else:
                    value(item.section.label() + b" ", content)
            elif item.section is not None:
                section = item.section
                if data is None:
                    content = None
                elif not section.part and not section.text:
                    content = data  # BODY[]: the whole message, no MIME parse needed
                else:
                    content = section_bytes(data, root(), section)
                if content is not None and section.partial is not None:
                    start, length = section.partial
                    content = content[start:start + length]
                value(section.label() + b" ", content)
        out.append(b")")
        return out


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
