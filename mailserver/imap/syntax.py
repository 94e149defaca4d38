"""
Pure: parsing IMAP command arguments (RFC 3501 section 9).

The server hands in a command's text with its literals already read, as a
list of segments (text, L{Literal}, text, ...).  L{Reader} takes it apart;
every problem raises L{ParseError} with a reason for the BAD response.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import datetime as _dt
from typing import Iterator

from mailserver.imap import wire


class ParseError(ValueError):
    """Broken syntax: answered with BAD and the message."""


class Literal(bytes):
    """The data of a literal, as a segment of a command."""


class Literal8(Literal):
    """A ``~{n}`` literal (RFC 3516): may hold any octet, NUL included."""


# ATOM-CHAR: any CHAR except atom-specials (RFC 3501 9).
_ATOM_SPECIALS = set(b'(){ %*"\\]') | set(range(0x20)) | {0x7F}
_ATOM = bytes(b for b in range(1, 0x80) if b not in _ATOM_SPECIALS)
_ASTRING = _ATOM + b"]"
_LIST_CHARS = _ASTRING + b"%*"
_ATOM_SET = frozenset(_ATOM)
_ASTRING_SET = frozenset(_ASTRING)
_LIST_SET = frozenset(_LIST_CHARS)


class Reader:
    """A cursor over one command's argument segments."""

    def __init__(self, segments: list[bytes]) -> None:
        self._segments = [s for s in segments]
        self._i = 0
        self._j = 0
        self._skip_empty()

    def _skip_empty(self) -> None:
        while (
            self._i < len(self._segments)
            and not isinstance(self._segments[self._i], Literal)
            and self._j >= len(self._segments[self._i])
        ):
            self._i += 1
            self._j = 0

    def at_end(self) -> bool:
        return self._i >= len(self._segments)

    def _text(self) -> bytes | None:
        if self.at_end():
            return None
        seg = self._segments[self._i]
        return None if isinstance(seg, Literal) else seg

    def peek(self) -> bytes:
        """The next character, b"{" before a literal, b"" at the end."""
        if self.at_end():
            return b""
        text = self._text()
        return b"{" if text is None else text[self._j:self._j + 1]

    def _advance(self, n: int) -> None:
        self._j += n
        self._skip_empty()

    def end(self) -> None:
        if not self.at_end():
            raise ParseError("unexpected extra arguments")

    def sp(self) -> None:
        if self.peek() != b" ":
            raise ParseError("expected a space")
        self._advance(1)

    def maybe(self, char: bytes) -> bool:
        if self.peek() == char and self._text() is not None:
            self._advance(1)
            return True
        return False

    def expect(self, char: bytes) -> None:
        if not self.maybe(char):
            raise ParseError(f"expected {char.decode()!r}")

    def _run(self, allowed: frozenset[int]) -> bytes:
        text = self._text()
        if text is None:
            return b""
        k = self._j
        while k < len(text) and text[k] in allowed:
            k += 1
        value = text[self._j:k]
        self._advance(k - self._j)
        return value

    def atom(self, what: str = "argument") -> str:
        value = self._run(_ATOM_SET)
        if not value:
            raise ParseError(f"missing {what}")
        return value.decode("ascii")

    def _literal(self) -> bytes:
        seg = self._segments[self._i]
        self._i += 1
        self._j = 0
        self._skip_empty()
        return bytes(seg)

    def _quoted(self) -> bytes:
        text = self._text()
        assert text is not None
        out = bytearray()
        k = self._j + 1
        while k < len(text):
            c = text[k]
            if c == 0x22:
                self._advance(k + 1 - self._j)
                return bytes(out)
            if c == 0x5C:
                k += 1
                if k >= len(text) or text[k] not in (0x22, 0x5C):
                    raise ParseError("bad escape in quoted string")
                c = text[k]
            elif c in (0, 10, 13):
                raise ParseError("bad character in quoted string")
            out.append(c)
            k += 1
        raise ParseError("unterminated quoted string")

    def string(self, what: str = "string") -> bytes:
        if self._text() is None and not self.at_end():
            return self._literal()
        if self.peek() == b'"':
            return self._quoted()
        raise ParseError(f"expected {what}")

    def astring(self, what: str = "argument") -> bytes:
        if self.at_end():
            raise ParseError(f"missing {what}")
        if self._text() is None or self.peek() == b'"':
            return self.string(what)
        value = self._run(_ASTRING_SET)
        if not value:
            raise ParseError(f"bad {what}")
        return value

    def list_mailbox(self) -> bytes:
        if self.at_end():
            raise ParseError("missing mailbox pattern")
        if self._text() is None or self.peek() == b'"':
            return self.string()
        value = self._run(_LIST_SET)
        if not value:
            raise ParseError("bad mailbox pattern")
        return value

    def _digits(self, what: str, longest: int) -> int:
        text = self._text()
        if text is None:
            raise ParseError(f"expected {what}")
        k = self._j
        while k < len(text) and 0x30 <= text[k] <= 0x39:
            k += 1
        digits = text[self._j:k]
        if not digits or len(digits) > longest:
            raise ParseError(f"expected {what}")
        self._advance(k - self._j)
        return int(digits)

    def number(self, what: str = "number") -> int:
        value = self._digits(what, 10)
        if value > 0xFFFFFFFF:
            raise ParseError(f"{what} out of range")
        return value

    def modseq(self, what: str = "mod-sequence") -> int:
        """A mod-sequence value (RFC 7162): up to 2^63 - 1."""
        value = self._digits(what, 19)
        if value >= 2**63:
            raise ParseError(f"{what} out of range")
        return value

    def names(self, what: str) -> Iterator[str]:
        """
        ``(NAME NAME ...)``, each upper-cased, yielded as it is read so the
        caller can read a name's own arguments before the next.
        """
        self.expect(b"(")
        first = True
        while not self.maybe(b")"):
            if not first:
                self.sp()
            first = False
            yield self.atom(what).upper()

    def seqset(self) -> "SequenceSet":
        if self.peek() == b"$" and self._text() is not None:
            self._advance(1)
            return SequenceSet((), saved=True)  # SEARCHRES (RFC 5182): the saved result
        text = self._run(frozenset(b"0123456789:,*"))
        return SequenceSet.parse(text)

    def flag_list(self) -> list[str]:
        """``(\\Seen $Junk)`` or a single flag (STORE allows both)."""
        paren = self.maybe(b"(")
        flags: list[str] = []
        while True:
            if paren and self.maybe(b")"):
                return flags
            if flags and paren:
                self.sp()
            flags.append(self.flag())
            if not paren:
                if self.peek() == b" " and self._text() is not None:
                    self.sp()
                    continue
                return flags

    def flag(self) -> str:
        if self.maybe(b"\\"):
            if self.maybe(b"*"):
                return "\\*"
            return "\\" + self.atom("flag")
        return self.atom("flag")

    def date(self) -> _dt.date:
        raw = self._quoted() if self.peek() == b'"' else self._run(_ATOM_SET)
        try:
            return wire.parse_date(raw.decode("ascii"))
        except (ValueError, UnicodeDecodeError):
            raise ParseError("bad date (want d-Mon-yyyy)") from None

    def datetime(self) -> float:
        if self.peek() != b'"':
            raise ParseError("expected a quoted date-time")
        raw = self._quoted()
        try:
            return wire.parse_datetime(raw.decode("ascii"))
        except (ValueError, UnicodeDecodeError):
            raise ParseError('bad date-time (want "dd-Mon-yyyy hh:mm:ss +zzzz")') from None

    def is_literal_next(self) -> bool:
        return not self.at_end() and self._text() is None

    def take_literal(self) -> bytes:
        """The next literal's data (a L{Literal8} if it was sent as ``~{n}``)."""
        if not self.is_literal_next():
            raise ParseError("expected a literal")
        binary = isinstance(self._segments[self._i], Literal8)
        data = self._literal()
        return Literal8(data) if binary else data


@dataclass(frozen=True)
class SequenceSet:
    """A sequence set: ranges with C{None} standing for ``*``."""

    ranges: tuple[tuple[int | None, int | None], ...]
    #: ``$``: the UIDs the last SEARCH RETURN (SAVE) kept; the session resolves it.
    saved: bool = False

    @classmethod
    def parse(cls, text: bytes) -> "SequenceSet":
        if not text:
            raise ParseError("missing sequence set")
        ranges = []
        for piece in text.split(b","):
            low, colon, high = piece.partition(b":")
            a = _seq_number(low)
            b = _seq_number(high) if colon else a
            ranges.append((a, b))
        return cls(tuple(ranges))

    def resolve(self, largest: int) -> list[tuple[int, int]]:
        """Ranges as (low, high) with ``*`` as C{largest}."""
        out = []
        for a, b in self.ranges:
            a = largest if a is None else a
            b = largest if b is None else b
            out.append((min(a, b), max(a, b)))
        return out

    def contains(self, number: int, largest: int) -> bool:
        return any(low <= number <= high for low, high in self.resolve(largest))

    def highest(self, largest: int) -> int:
        return max(high for _, high in self.resolve(largest))


def _seq_number(text: bytes) -> int | None:
    if text == b"*":
        return None
    if not text.isdigit() or len(text) > 10 or text.startswith(b"0"):
        raise ParseError("invalid sequence set")
    value = int(text)
    if value > 0xFFFFFFFF:
        raise ParseError("invalid sequence set")
    return value


# ---------------------------------------------------------------- FETCH items


@dataclass(frozen=True)
class Section:
    """BODY[...]<...>: the part path, what of it, and the partial range."""

    peek: bool = False
    part: tuple[int, ...] = ()
    text: str = ""  # "", HEADER, HEADER.FIELDS, HEADER.FIELDS.NOT, TEXT, MIME
    fields: tuple[bytes, ...] = ()
    partial: tuple[int, int] | None = None
    kind: str = "BODY"  # or BINARY (RFC 3516): part numbers only, decoded

    def label(self, origin: bool = True) -> bytes:
        """The response name: ``BODY[1.HEADER.FIELDS (To)]<0>``, ``BINARY[1]``."""
        section = ".".join(str(p) for p in self.part)
        if self.text:
            section = f"{section}.{self.text}" if section else self.text
        out = self.kind.encode("ascii") + b"[" + section.encode("ascii")
        if self.fields:
            out += b" (" + b" ".join(wire.astring(f) for f in self.fields) + b")"
        out += b"]"
        if self.partial is not None and origin:
            out += b"<%d>" % self.partial[0]
        return out


@dataclass(frozen=True)
class FetchItem:
    """One fetch-att: C{name} (upper case) and, for BODY[...], its section."""

    name: str
    section: Section | None = None


_MACROS = {
    "ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
    "FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"),
    "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"),
}
_SIMPLE = {
    "ENVELOPE", "FLAGS", "INTERNALDATE", "RFC822", "RFC822.HEADER", "RFC822.SIZE",
    "RFC822.TEXT", "UID", "BODYSTRUCTURE", "BODY", "MODSEQ",
}
_FETCH_NAME = frozenset(_ATOM_SET - {ord("[")})


def parse_fetch_items(reader: Reader) -> list[FetchItem]:
    """``ALL | FAST | FULL | fetch-att | (fetch-att *(SP fetch-att))``."""
    if reader.maybe(b"("):
        items = [_fetch_att(reader)]
        while not reader.maybe(b")"):
            reader.sp()
            items.append(_fetch_att(reader))
        return items
    name = reader._run(_FETCH_NAME).decode("ascii").upper()
    if name in _MACROS:
        return [FetchItem(n) for n in _MACROS[name]]
    return [_fetch_att(reader, name)]


def _fetch_att(reader: Reader, name: str | None = None) -> FetchItem:
    if name is None:
        name = reader._run(_FETCH_NAME).decode("ascii").upper()
    if not name:
        raise ParseError("missing fetch attribute")
    if name in ("BODY", "BODY.PEEK") and reader.peek() == b"[":
        reader.expect(b"[")
        section = _section(reader, peek=name == "BODY.PEEK")
        return FetchItem("BODY", section)
    if name in ("BINARY", "BINARY.PEEK", "BINARY.SIZE") and reader.peek() == b"[":
        reader.expect(b"[")
        part = _part_numbers(reader)
        reader.expect(b"]")
        partial = _partial(reader) if name != "BINARY.SIZE" else None
        section = Section(name != "BINARY", part, "", (), partial, kind="BINARY")
        return FetchItem("BINARY.SIZE" if name == "BINARY.SIZE" else "BINARY", section)
    if name not in _SIMPLE:
        raise ParseError(f"unknown fetch attribute {name}")
    return FetchItem(name)


def _part_numbers(reader: Reader) -> tuple[int, ...]:
    part: list[int] = []
    while reader.peek().isdigit():
        n = reader.number("part number")
        if n == 0:
            raise ParseError("part numbers start at 1")
        part.append(n)
        if not reader.maybe(b"."):
            break
    return tuple(part)


def _partial(reader: Reader) -> tuple[int, int] | None:
    """``<start.length>`` after a section, or None."""
    if not reader.maybe(b"<"):
        return None
    start = reader.number("partial start")
    reader.expect(b".")
    length = reader.number("partial length")
    if length == 0:
        raise ParseError("partial length must not be 0")
    reader.expect(b">")
    return (start, length)


def _section(reader: Reader, peek: bool) -> Section:
    part = _part_numbers(reader)
    text = ""
    fields: list[bytes] = []
    if reader.peek() not in (b"]", b""):
        text = reader._run(frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz.")).decode("ascii").upper()
        if text not in ("HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME"):
            raise ParseError(f"bad section text {text!r}")
        if text == "MIME" and not part:
            raise ParseError("MIME needs a part number")
        if text.startswith("HEADER.FIELDS"):
            reader.sp()
            reader.expect(b"(")
            fields.append(reader.astring("header field name"))
            while not reader.maybe(b")"):
                reader.sp()
                fields.append(reader.astring("header field name"))
    reader.expect(b"]")
    return Section(peek, part, text, tuple(fields), _partial(reader))


@dataclass
class Command:
    """A complete command: tag, upper-case name, argument reader."""

    tag: bytes
    name: str
    args: Reader
    uid: bool = False
    literals: int = field(default=0)
    #: IMAP4rev2 is enabled: mailbox names are UTF-8, not modified UTF-7 (RFC 9051 5.1).
    utf8: bool = False
