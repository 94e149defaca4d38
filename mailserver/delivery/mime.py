"""
Pure: walk a message as Postfix's cleanup(8) sees it, without building a
tree: primary headers, MIME headers of every part (multipart by boundary,
recursively), headers of attached C{message/rfc822} parts, and body lines.

The walk is a single pass over the bytes (LF or CRLF line ends) with a stack
of open boundaries, so it is linear in the message size.  Malformed MIME
(missing or unterminated boundaries, bad parameters, 8-bit garbage, no
headers at all) never raises: what cannot be understood is body text.

Also here: RFC 2047 (and RFC 2231 parameter) decoding of header values, for
C{header_checks_decode}.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import enum
import re
from typing import Iterator, NamedTuple
from urllib.parse import unquote_to_bytes

# Postfix's mime_nesting_limit default.
NESTING_LIMIT = 100
# Postfix's header_size_limit: the part of a Content-Type value that is
# parsed.  Boundaries are honoured whatever their length (Postfix compares
# only the first mime_boundary_length_limit = 2048 bytes).
CONTENT_TYPE_LIMIT = 102400
# Postfix's texts (mime_state.c) for what the checks cannot inspect.
NESTING_ERROR = "MIME nesting exceeds safety limit"
HEADER_LENGTH_ERROR = "message header length exceeds safety limit"
_MEMO_ENTRIES = 256  # distinct header blocks whose interpretation one walk remembers
_MEMO_KEY_LIMIT = 1024  # longest Content-Type value remembered

_HEADER_NAME = re.compile(rb"([\x21-\x39\x3b-\x7e]+)[ \t]*:")
# Headers Postfix treats as MIME headers (header_opts.c HDR_OPT_MIME).
MIME_HEADER_NAMES = frozenset(
    {
        "content-description",
        "content-disposition",
        "content-id",
        "content-transfer-encoding",
        "content-type",
        "mime-version",
    }
)


class HeaderKind(enum.Enum):
    """Postfix's header classes: which table a header goes to."""

    PRIMARY = "primary"  # the message's own headers
    MULTIPART = "multipart"  # headers of a part of a multipart body
    NESTED = "nested"  # headers of an attached message/rfc822


class Header(NamedTuple):
    """
    One logical header.  C{text} is C{Name: value} unfolded (line breaks
    removed, white space kept) and decoded as UTF-8 (invalid bytes become
    U+FFFD); C{start}/C{end} are its byte offsets in the message, folded
    lines and line end included.
    """

    kind: HeaderKind
    name: str
    text: str
    start: int
    end: int
    depth: int  # 0 for the primary headers, +1 per multipart or attached message

    @property
    def is_mime(self) -> bool:
        """Content-Type and friends, MIME-Version: Postfix's MIME headers."""
        return self.name.lower() in MIME_HEADER_NAMES

    @property
    def value(self) -> str:
        return self.text.partition(":")[2]


class BodyLine(NamedTuple):
    """
    One body line (boundary lines included, as Postfix passes them to
    body_checks).  C{text} has no line end; C{offset} is the position of the
    line in its body segment, for C{body_checks_size_limit}.
    """

    text: str
    start: int
    end: int
    offset: int
    boundary: bool = False


class BodyText(NamedTuple):
    """
    A run of body lines without boundaries, C{offset} bytes into its body
    segment; L{body_lines} splits it.  Handing runs over whole lets a
    caller test a whole run at once (see L{mailserver.tables.prefilter}).
    """

    start: int
    end: int
    offset: int


def body_lines(message: bytes, run: BodyText) -> Iterator[BodyLine]:
    """The lines of C{run}."""
    position, offset = run.start, run.offset
    pieces = message[run.start : run.end].split(b"\n")
    last = len(pieces) - 1
    for index, piece in enumerate(pieces):
        if index == last:
            if not piece:
                return
            size = len(piece)
        else:
            size = len(piece) + 1
            if piece.endswith(b"\r"):
                piece = piece[:-1]
        yield BodyLine(piece.decode("utf-8", "replace"), position, position + size, offset)
        position += size
        offset += size


class UnixFrom(NamedTuple):
    """
    An mbox C{From sender date} line opening a message or an attached
    message: skipped like Python's email parser does, so the headers after
    it are still checked as headers.
    """

    text: str
    start: int
    end: int


class HeaderEnd(NamedTuple):
    """The blank line ending a header block (empty when a body line ended it)."""

    start: int
    end: int


class Uninspectable(NamedTuple):
    """
    A header block whose parts the walk cannot follow: a multipart or
    attached message deeper than the nesting limit (Postfix's
    C{mime_nesting_limit}, C{error} is L{NESTING_ERROR}), or a multipart
    Content-Type longer than L{CONTENT_TYPE_LIMIT} (L{HEADER_LENGTH_ERROR}).
    What follows is walked as body text: a caller that must see every
    part's headers refuses the message.  C{text} is the Content-Type header
    (empty for a digest part's implicit message/rfc822).  It spans nothing
    (C{start == end}, after the block's L{HeaderEnd}), so the events still
    tile the message.
    """

    error: str
    text: str
    start: int
    end: int
    depth: int


Event = Header | BodyLine | BodyText | HeaderEnd | UnixFrom | Uninspectable


class _Block(NamedTuple):
    """What a finished header block says about the body after it."""

    multipart_boundary: bytes | None
    digest: bool
    nested: bool  # message/rfc822 or message/global in 7bit/8bit/binary
    too_long: bool = False  # a multipart or message Content-Type cut at CONTENT_TYPE_LIMIT


def line_end(message: bytes, end: int) -> bytes:
    """The line end (CRLF, LF or none) of the line that ends at C{end}."""
    if end and message[end - 1 : end] == b"\n":
        return b"\r\n" if message[end - 2 : end - 1] == b"\r" else b"\n"
    return b""


def _strip_eol(line: bytes) -> bytes:
    if line.endswith(b"\n"):
        line = line[:-1]
        if line.endswith(b"\r"):
            line = line[:-1]
    return line


def walk(message: bytes, body_limit: int | None = None, nesting_limit: int = NESTING_LIMIT) -> Iterator[Event]:
    """
    The events of C{message}, in order: L{Header}s, L{HeaderEnd}s, body
    text as L{BodyText} runs (split them with L{body_lines}), boundary lines
    as L{BodyLine}s, and L{UnixFrom}.  Without C{body_limit} the events'
    spans tile the message exactly.  With it, body lines that start at or
    after C{body_limit} bytes into their body segment are left out (quickly:
    only boundary lines are still looked for), which keeps a huge message
    cheap; C{body_limit=0} yields no body text at all.  A multipart or
    attached message that would sit more than C{nesting_limit} levels
    deep, or whose Content-Type is too long to parse, yields one
    L{Uninspectable} (the first only) and is body text.
    """
    length = len(message)
    position = 0
    # Open multiparts, innermost last: (b"--" + boundary, digest, depth of its parts).
    stack: list[tuple[bytes, bool, int]] = []
    marker = b"\n--"  # b"\n" + what every open delimiter starts with; see _marker
    open_levels = 0  # len(stack) when marker was computed
    kind: HeaderKind | None = HeaderKind.PRIMARY  # None: in a body segment
    default_nested = False  # the header block being read defaults to message/rfc822
    fresh = True  # at the first line of a primary or nested header block
    depth = 0
    lines: list[bytes] = []  # the header being collected
    header_start = 0
    block_type: list[bytes] = []  # Content-Type values of the block
    block_encoding: list[bytes] = []
    type_header: list[Header] = []  # the block's last Content-Type header
    exceeded = False
    segment_start = 0
    # A hostile message repeats the same part headers thousands of times.
    blocks: dict[tuple[bytes | None, bytes | None, bool], _Block] = {}
    # Lines starting with "--" -> (stack level or -1, closing, text), for the current stack.
    delimiters: dict[bytes, tuple[int, bool, str]] = {}

    def flush() -> Header | None:
        if not lines:
            return None
        raw = _strip_eol(lines[0]) if len(lines) == 1 else b"".join(_strip_eol(line) for line in lines)
        name = _HEADER_NAME.match(raw)
        assert name is not None
        lower = name.group(1).lower()
        if lower == b"content-type":
            block_type.append(raw[name.end() :])
        elif lower == b"content-transfer-encoding":
            block_encoding.append(raw[name.end() :])
        end = position  # flushed at the start of the line after the header
        lines.clear()
        assert kind is not None
        header = Header(kind, name.group(1).decode("ascii"), raw.decode("utf-8", "replace"), header_start, end, depth)
        if lower == b"content-type":
            type_header[:] = [header]
        return header

    while position < length:
        newline = message.find(b"\n", position)
        end = length if newline < 0 else newline + 1
        line = message[position:end]

        # A boundary of an open multipart ends whatever we are in.
        if stack and line.startswith(b"--"):
            found = delimiters.get(line)
            if found is None:
                level_closing = _boundary(stack, _strip_eol(line).rstrip(b" \t"))
                found = (-1, False, "") if level_closing is None else (*level_closing, _text(line))
                if len(delimiters) < _MEMO_ENTRIES and len(line) <= _MEMO_KEY_LIMIT:
                    delimiters[line] = found
            level, closing, text = found
            if level >= 0:
                if kind is not None:
                    if lines:
                        yield flush()
                    yield HeaderEnd(position, position)
                _, digest, depth = stack[level]
                yield BodyLine(text, position, end, 0, True)
                position = segment_start = end
                if closing:
                    del stack[level:]
                    depth -= 1
                    kind = None
                else:
                    del stack[level + 1 :]
                    kind, default_nested = HeaderKind.MULTIPART, digest
                    block_type.clear()
                    block_encoding.clear()
                    type_header.clear()
                if len(stack) != open_levels:
                    open_levels = len(stack)
                    marker = _marker(stack)
                    delimiters.clear()
                continue

        if kind is not None:
            bare = _strip_eol(line)
            if fresh:
                fresh = False
                if kind is not HeaderKind.MULTIPART and bare.startswith(b"From "):
                    yield UnixFrom(_text(line), position, end)
                    position = end
                    continue
            if lines and line[:1] in (b" ", b"\t"):
                lines.append(line)
                position = end
                continue
            if bare and _HEADER_NAME.match(bare):
                header = flush()
                if header is not None:
                    yield header
                lines.append(line)
                header_start = position
                position = end
                continue
            # A blank line ends the header block; any other line ends it
            # too and is the first body line.
            header = flush()
            if header is not None:
                yield header
            blank = not bare
            yield HeaderEnd(position, end if blank else position)
            if blank:
                position = end
            media = block_type[-1] if block_type else None
            encoding = block_encoding[-1] if block_encoding else None
            key = (media, encoding, default_nested)
            block = blocks.get(key)
            if block is None:
                block = _block(block_type, block_encoding, default_nested)
                if len(blocks) < _MEMO_ENTRIES and len(media or b"") + len(encoding or b"") <= _MEMO_KEY_LIMIT:
                    blocks[key] = block
            block_type.clear()
            block_encoding.clear()
            segment_start = position
            opens = block.nested or block.multipart_boundary is not None
            if block.too_long or (opens and depth >= nesting_limit):
                if not exceeded:
                    exceeded = True
                    text = type_header[0].text[:200] if type_header else ""
                    error = HEADER_LENGTH_ERROR if block.too_long else NESTING_ERROR
                    yield Uninspectable(error, text, position, position, depth + 1)
                type_header.clear()
                kind = None
                continue
            type_header.clear()
            if block.nested:
                kind, default_nested, fresh = HeaderKind.NESTED, False, True
                depth += 1
                continue
            kind = None
            if block.multipart_boundary is not None:
                depth += 1
                stack.append((b"--" + block.multipart_boundary, block.digest, depth))
                open_levels = len(stack)
                marker = _marker(stack)
                delimiters.clear()
            continue

        # Body text: a run of lines up to the next possible boundary line
        # (or the size limit), handed over in one piece.
        offset = position - segment_start
        if body_limit is not None and offset >= body_limit:
            if not stack:
                return  # nothing after this can be a header or a boundary
            following = message.find(marker, position)
            if following < 0:
                return
            position = following + 1
            continue
        stop = length
        if body_limit is not None:
            cut = message.find(b"\n", segment_start + body_limit - 1)
            stop = length if cut < 0 else cut + 1
        if stack:
            following = message.find(marker, position, stop)
            if following >= 0:
                stop = following + 1
        yield BodyText(position, stop, offset)
        position = stop

    if kind is not None:
        header = flush()
        if header is not None:
            yield header
        yield HeaderEnd(length, length)


def _text(line: bytes) -> str:
    return _strip_eol(line).decode("utf-8", "replace")


def _marker(stack: list[tuple[bytes, bool, int]]) -> bytes:
    """
    C{b"\\n"} + the longest common prefix of the open delimiters: body runs
    end only at lines that start with it, so lines that merely look like
    boundaries (C{--} and something else) cost nothing.
    """
    if not stack:
        return b"\n--"
    low = min(entry[0] for entry in stack)
    high = max(entry[0] for entry in stack)
    # The common prefix of all is that of the least and greatest; find its
    # length by bisection (slice comparisons run in C).
    short, long = 0, min(len(low), len(high))
    while short < long:
        middle = (short + long + 1) // 2
        if low[:middle] == high[:middle]:
            short = middle
        else:
            long = middle - 1
    return b"\n" + low[:short]


def _boundary(stack: list[tuple[bytes, bool, int]], line: bytes) -> tuple[int, bool] | None:
    """C{(stack level, closing)} if C{line} delimits an open multipart."""
    for level in range(len(stack) - 1, -1, -1):
        delimiter = stack[level][0]
        if line.startswith(delimiter):
            rest = line[len(delimiter) :]
            if rest == b"":
                return level, False
            if rest.startswith(b"--"):
                return level, True
    return None


def _block(types: list[bytes], encodings: list[bytes], default_nested: bool) -> _Block:
    """Interpret a header block's (last) Content-Type and Content-Transfer-Encoding."""
    if not types:
        return _Block(None, False, default_nested)
    value = types[-1]
    media, params = parse_content_type(value[:CONTENT_TYPE_LIMIT])
    top, _, sub = media.partition("/")
    if len(value) > CONTENT_TYPE_LIMIT and top in ("multipart", "message"):
        # Its boundary may be past the cut: its parts could not be told apart.
        return _Block(None, False, False, too_long=True)
    if top == "multipart":
        boundary = params.get("boundary", b"")
        if boundary:
            return _Block(boundary, sub == "digest", False)
        return _Block(None, False, False)
    if top == "message" and sub in ("rfc822", "global"):
        encoding = encodings[-1].strip().lower() if encodings else b""
        return _Block(None, False, encoding in (b"", b"7bit", b"8bit", b"binary"))
    return _Block(None, False, False)


_COMMENT_TOKENS = re.compile(rb'\\.|[\\"()]|[^\\"()]+', re.DOTALL)
_PARAMETER = re.compile(rb';\s*([^\s=;]+)\s*=\s*("(?:[^"\\]|\\.)*"?|[^;]*)', re.DOTALL)


def parse_content_type(value: bytes) -> tuple[str, dict[str, bytes]]:
    """C{("type/subtype", {param: value})}, lower-cased names; lenient."""
    value = _strip_comments(value)
    media, _, rest = value.partition(b";")
    params: dict[str, bytes] = {}
    for found in _PARAMETER.finditer(b";" + rest):
        raw = found.group(2).strip()
        if raw.startswith(b'"'):
            raw = re.sub(rb"\\(.)", rb"\1", raw[1:-1] if raw.endswith(b'"') and len(raw) > 1 else raw[1:])
        name = found.group(1).decode("ascii", "replace").lower()
        params.setdefault(name, raw)
    return media.strip().lower().decode("ascii", "replace"), params


def _strip_comments(value: bytes) -> bytes:
    """Drop RFC 5322 (comments) outside quoted strings (token by token: a run of plain bytes is one)."""
    if b"(" not in value:
        return value
    out = bytearray()
    depth = 0
    quoted = False
    for token in _COMMENT_TOKENS.findall(value):
        if token[:1] == b"\\":  # an escaped byte (or a final lone backslash): kept outside comments
            if depth == 0:
                out += token
        elif quoted:
            quoted = token != b'"'
            out += token
        elif token == b"(":
            depth += 1
        elif token == b")" and depth:
            depth -= 1
        elif depth == 0:
            quoted = token == b'"'
            out += token
    return bytes(out)


# -- RFC 2047 / RFC 2231 decoding ---------------------------------------------------

_ENCODED_WORD = re.compile(r"=\?([^?\s*]+)(?:\*[^?\s]*)?\?([BbQq])\?([^?\s]*)\?=")
_BETWEEN_WORDS = re.compile(r"(\?=)[ \t]+(?==\?)")
_EXTENDED_PARAMETER = re.compile(
    r";\s*([A-Za-z0-9!#$&+.^_`{}~-]+)\*(?:(\d+)(\*?)|())\s*=\s*(\"(?:[^\"\\]|\\.)*\"|[^;\s]*)"
)


def decode_header_text(text: str) -> str:
    """
    C{text} with RFC 2047 encoded-words decoded (and, for MIME parameters,
    RFC 2231 C{name*=charset''%xx} values added as plain C{name="..."}).
    Unknown charsets and bad encodings are left as they are; never raises.
    """
    decoded = text
    if "=?" in decoded:
        decoded = _BETWEEN_WORDS.sub(r"\1", decoded)
        decoded = _ENCODED_WORD.sub(_decode_word, decoded)
    if "*=" in text or "*0" in text:
        decoded += _rfc2231(text)
    return decoded


def _charset_decode(data: bytes, charset: str) -> str | None:
    try:
        codec = codecs.lookup(charset.strip().lower())
    except LookupError:
        return None
    try:
        return data.decode(codec.name, "replace")
    except (UnicodeError, ValueError, TypeError, LookupError):
        return None


def _decode_word(found: re.Match[str]) -> str:
    charset, encoding, payload = found.groups()
    try:
        if encoding in "Bb":
            data = payload.encode("ascii", "ignore")
            data = re.sub(rb"[^A-Za-z0-9+/]", b"", data)
            data += b"=" * (-len(data) % 4)
            raw = base64.b64decode(data)
        else:
            raw = _q_decode(payload.encode("ascii", "replace"))
    except (binascii.Error, ValueError):
        return found.group(0)
    decoded = _charset_decode(raw, charset)
    return found.group(0) if decoded is None else decoded


def _q_decode(data: bytes) -> bytes:
    data = data.replace(b"_", b" ")
    return re.sub(rb"=([0-9A-Fa-f]{2})", lambda m: bytes((int(m.group(1), 16),)), data)


def _rfc2231(text: str) -> str:
    """C{; name="decoded"} for each RFC 2231 parameter in C{text}."""
    pieces: dict[str, dict[int, tuple[bool, str]]] = {}
    for found in _EXTENDED_PARAMETER.finditer(text):
        name, number, star, _, value = found.groups()
        extended = number is None or star == "*"
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        index = int(number) if number is not None else 0
        if index < 1000:
            pieces.setdefault(name.lower(), {}).setdefault(index, (extended, value))
    out = []
    for name, parts in pieces.items():
        charset = "us-ascii"
        data = bytearray()
        ordered = sorted(parts)
        for index in ordered:
            extended, value = parts[index]
            if extended:
                if index == ordered[0] and value.count("'") >= 2:
                    charset, _language, value = value.split("'", 2)
                data += unquote_to_bytes(value.encode("utf-8", "replace"))
            else:
                data += value.encode("utf-8", "replace")
        decoded = _charset_decode(bytes(data), charset or "us-ascii")
        if decoded is None:
            decoded = bytes(data).decode("utf-8", "replace")
        out.append(f'; {name}="{decoded}"')
    return "".join(out)
