"""
Pure: the MIME tree of a message with byte offsets, for BODY[section].

IMAP sections must be served byte-for-byte from the stored message, so the
email package (which re-serialises) is not used here: L{parse} finds header
and body boundaries, multipart delimiters and encapsulated messages and
records offsets into the CRLF form of the message.  It never raises on
malformed input: a multipart without delimiters becomes one plain part, a
missing blank line makes the whole entity a header, nesting is bounded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

#: Deepest MIME nesting we descend into; deeper parts are leaves.
MAX_DEPTH = 64
#: Most parts we track in one message (the rest are ignored).
MAX_PARTS = 5000

_MESSAGE_TYPES = {("message", "rfc822"), ("message", "global")}
_IDENTITY_ENCODINGS = {"", "7bit", "8bit", "binary"}


@dataclass
class Entity:
    """One MIME entity: a message or a body part."""

    start: int
    body_start: int
    end: int
    fields: list[tuple[str, bytes]]  # (lower-cased name, raw field bytes with CRLFs)
    maintype: str
    subtype: str
    params: list[tuple[str, str]]
    children: list["Entity"] = field(default_factory=list)
    message: "Entity | None" = None  # the encapsulated message of message/rfc822

    @property
    def is_multipart(self) -> bool:
        return bool(self.children)

    def header(self, name: str) -> bytes | None:
        """The unfolded value of the first field C{name}, or None."""
        name = name.lower()
        for key, raw in self.fields:
            if key == name:
                return field_value(raw)
        return None

    def headers(self, name: str) -> list[bytes]:
        name = name.lower()
        return [field_value(raw) for key, raw in self.fields if key == name]

    def param(self, name: str) -> str | None:
        name = name.lower()
        for key, value in self.params:
            if key.lower() == name:
                return value
        return None


def field_value(raw: bytes) -> bytes:
    """The value of a raw header field, unfolded, surrounding blanks stripped."""
    _, _, value = raw.partition(b":")
    return re.sub(rb"\r?\n(?=[ \t])", b"", value).strip(b" \t\r\n")


def parse_header_block(data: bytes, start: int, end: int) -> tuple[list[tuple[str, bytes]], int]:
    """
    Split the header block starting at C{start}: (fields, body_start).

    The header ends at the first empty line (which belongs to it); with no
    empty line before C{end} the whole range is header and the body empty.
    """
    if data.startswith(b"\r\n", start) and start + 2 <= end:
        return [], start + 2
    blank = data.find(b"\r\n\r\n", start, end)
    if blank < 0:
        header_end = body_start = end
    else:
        header_end = blank + 2
        body_start = blank + 4
    fields: list[tuple[str, bytes]] = []
    pos = start
    while pos < header_end:
        line_end = data.find(b"\r\n", pos, header_end)
        line_end = header_end if line_end < 0 else line_end + 2
        line = data[pos:line_end]
        if line[:1] in (b" ", b"\t") and fields:
            name, raw = fields[-1]
            fields[-1] = (name, raw + line)
        else:
            colon = line.find(b":")
            if colon > 0:
                name = line[:colon].strip().decode("latin-1").lower()
                fields.append((name, line))
        pos = line_end
    return fields, body_start


def parse_params(text: str) -> list[tuple[str, str]]:
    """``; a=b; c="d e"`` -> [("a", "b"), ("c", "d e")] (tolerant)."""
    params: list[tuple[str, str]] = []
    for piece in _split_semicolons(text):
        name, eq, value = piece.partition("=")
        name = name.strip()
        if not eq or not name or any(c.isspace() for c in name):
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        params.append((name, value))
    return params


def _split_semicolons(text: str) -> list[str]:
    pieces, current, quoted, escaped = [], [], False, False
    for ch in text:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\" and quoted:
            current.append(ch)
            escaped = True
        elif ch == '"':
            current.append(ch)
            quoted = not quoted
        elif ch == ";" and not quoted:
            pieces.append("".join(current))
            current = []
        else:
            current.append(ch)
    pieces.append("".join(current))
    return pieces


def _strip_comments(text: str) -> str:
    out, depth, quoted = [], 0, False
    for ch in text:
        if ch == '"' and depth == 0:
            quoted = not quoted
        if ch == "(" and not quoted:
            depth += 1
            continue
        if ch == ")" and depth:
            depth -= 1
            continue
        if depth == 0:
            out.append(ch)
    return "".join(out)


def content_type(value: bytes | None, default: tuple[str, str]) -> tuple[str, str, list[tuple[str, str]]]:
    """(maintype, subtype, params) of a Content-Type value, or the default."""
    if value is None:
        params = [("charset", "us-ascii")] if default == ("text", "plain") else []
        return default[0], default[1], params
    text = value.decode("latin-1")
    kind, _, rest = text.partition(";")
    kind = _strip_comments(kind).strip()
    main, slash, sub = kind.partition("/")
    main, sub = main.strip(), sub.strip()
    if not slash or not main or not sub or any(c.isspace() for c in main + sub):
        return "text", "plain", [("charset", "us-ascii")]
    return main, sub, parse_params(rest)


class _Budget:
    def __init__(self) -> None:
        self.parts = 0


def parse(data: bytes) -> Entity:
    """The MIME tree of C{data} (CRLF line ends)."""
    return _entity(data, 0, len(data), ("text", "plain"), 0, _Budget())


def _entity(data: bytes, start: int, end: int, default: tuple[str, str], depth: int, budget: _Budget) -> Entity:
    budget.parts += 1
    fields, body_start = parse_header_block(data, start, end)
    ctype = None
    for name, raw in fields:
        if name == "content-type":
            ctype = field_value(raw)
            break
    main, sub, params = content_type(ctype, default)
    entity = Entity(start, body_start, end, fields, main, sub, params)
    if depth >= MAX_DEPTH or budget.parts >= MAX_PARTS:
        return entity
    lowered = (main.lower(), sub.lower())
    if main.lower() == "multipart":
        boundary = entity.param("boundary")
        child_default = ("message", "rfc822") if sub.lower() == "digest" else ("text", "plain")
        ranges = _split_multipart(data, body_start, end, boundary.encode("latin-1")) if boundary else []
        for part_start, part_end in ranges:
            if budget.parts >= MAX_PARTS:
                break
            entity.children.append(_entity(data, part_start, part_end, child_default, depth + 1, budget))
        if not entity.children:
            # A multipart without delimiters: serve its body as one plain part.
            entity.children.append(
                Entity(body_start, body_start, end, [], "text", "plain", [("charset", "us-ascii")])
            )
    elif lowered in _MESSAGE_TYPES:
        encoding = (entity.header("content-transfer-encoding") or b"").decode("latin-1").strip().lower()
        if encoding in _IDENTITY_ENCODINGS:
            entity.message = _entity(data, body_start, end, ("text", "plain"), depth + 1, budget)
    return entity


def _split_multipart(data: bytes, start: int, end: int, boundary: bytes) -> list[tuple[int, int]]:
    """The (start, end) of each body part between C{--boundary} lines."""
    marker = b"--" + boundary
    ranges: list[tuple[int, int]] = []
    part_start: int | None = None
    pos = start
    while pos < end:
        hit = data.find(marker, pos, end)
        if hit < 0:
            break
        if hit != start and data[hit - 2:hit] != b"\r\n":
            pos = hit + 1
            continue
        after = hit + len(marker)
        closing = data.startswith(b"--", after) and after + 2 <= end
        rest = after + 2 if closing else after
        line_end = data.find(b"\r\n", rest, end)
        tail = data[rest:line_end if line_end >= 0 else end]
        if tail.strip(b" \t"):
            pos = hit + 1  # "--boundaryX": a longer string, not our delimiter
            continue
        if part_start is not None:
            ranges.append((part_start, max(part_start, hit - 2 if hit - 2 >= part_start else hit)))
        if closing:
            return ranges
        if line_end < 0:
            return ranges
        part_start = line_end + 2
        pos = part_start
    if part_start is not None:
        ranges.append((part_start, end))
    return ranges


class SectionError(ValueError):
    """The section names a part the message does not have."""


def resolve(root: Entity, numbers: tuple[int, ...]) -> tuple[Entity, bool]:
    """
    The entity section C{numbers} (1-based) of message C{root} names, and
    whether it is a message (so HEADER and TEXT apply to it).

    Part 1 of a non-multipart message is its body; the parts of a
    message/rfc822 part are those of the encapsulated message's body.
    """
    current, is_message = root, True
    for n in numbers:
        if n < 1:
            raise SectionError("part numbers start at 1")
        if not is_message and current.message is not None:
            current, is_message = current.message, True
        if current.children:
            if n > len(current.children):
                raise SectionError(f"no part {n}")
            current, is_message = current.children[n - 1], False
        elif is_message and n == 1:
            is_message = False  # the body of a single-part message
        else:
            raise SectionError(f"no part {n}")
    return current, is_message


def header_bytes(data: bytes, entity: Entity) -> bytes:
    """The header block of C{entity}, with its terminating empty line."""
    block = data[entity.start:entity.body_start]
    if entity.body_start == entity.end and not block.endswith(b"\r\n\r\n"):
        block += b"\r\n" if block.endswith(b"\r\n") or not block else b"\r\n\r\n"
    return block


def header_fields(entity: Entity, names: list[str], negate: bool) -> bytes:
    """HEADER.FIELDS (names) / HEADER.FIELDS.NOT: matching raw fields plus the empty line."""
    wanted = {n.lower() for n in names}
    chosen = [raw for name, raw in entity.fields if (name in wanted) != negate]
    out = b"".join(r if r.endswith(b"\r\n") else r + b"\r\n" for r in chosen)
    return out + b"\r\n"
