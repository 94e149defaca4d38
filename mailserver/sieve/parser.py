"""
Pure: Sieve script text -> a tree of L{Command}s (RFC 5228 section 8).

The grammar only: every command and test is kept by name with its
arguments, so extensions need no parser change; L{mailserver.sieve.checker}
knows which commands, tests and tags exist.  Errors carry the line number,
as ManageSieve's PUTSCRIPT reports them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Union

#: Longest script we parse, in bytes (Pigeonhole's sieve_max_script_size default is 1M).
MAX_SCRIPT_SIZE = 1 << 20
#: Deepest nesting of blocks and tests.
MAX_NESTING = 32


class SieveError(Exception):
    """A script error: C{line} (1-based, 0 when unknown) and a message."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}" if line else message)
        self.line = line
        self.message = message


@dataclass(frozen=True)
class Tag:
    name: str  # lower-case, without the colon


@dataclass(frozen=True)
class StringList:
    """One or more strings; C{single} when written as a bare string (not in brackets)."""

    values: tuple[str, ...]
    single: bool = False


Argument = Union[Tag, int, StringList]


@dataclass
class Command:
    """A command or a test: name, arguments, tests, and (commands) a block."""

    name: str
    line: int
    arguments: list[Argument] = field(default_factory=list)
    tests: list[Command] = field(default_factory=list)
    block: list[Command] | None = None


_TOKEN = re.compile(
    rb"""
    (?P<space>[ \t\r\n]+)
  | (?P<comment>\#[^\n]*|/\*.*?\*/)
  | (?P<multiline>text:[ \t]*(?:\#[^\n]*)?\r?\n(?P<text>(?:.*?\n)??)\.\r?\n)
  | (?P<quoted>"(?:[^"\\]|\\.)*")
  | (?P<number>[0-9]+[KkMmGg]?)
  | (?P<tag>:[A-Za-z_][A-Za-z0-9_]*)
  | (?P<identifier>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<special>[\[\](),;{}])
    """,
    re.VERBOSE | re.DOTALL,
)
_MULTIPLIERS = {b"k": 1 << 10, b"m": 1 << 20, b"g": 1 << 30}
_QUOTED_ESCAPE = re.compile(r"\\(.)", re.DOTALL)


def _tokens(data: bytes) -> list[tuple[str, object, int]]:
    tokens: list[tuple[str, object, int]] = []
    position, line = 0, 1
    while position < len(data):
        match = _TOKEN.match(data, position)
        if match is None:
            if data.startswith(b"/*", position):
                raise SieveError(line, "unterminated comment")
            if data.startswith(b'"', position):
                raise SieveError(line, "unterminated string")
            if data.startswith(b"text:", position):
                raise SieveError(line, "unterminated multi-line string")
            raise SieveError(line, f"unexpected character {data[position:position + 1]!r}")
        kind = match.lastgroup if match.lastgroup != "text" else "multiline"
        raw = match.group(0)
        if kind == "multiline":
            text = match.group("text") or b""
            lines = [piece[1:] if piece.startswith(b"..") else piece for piece in text.split(b"\n")]
            tokens.append(("string", _decode(b"\n".join(lines), line).replace("\r\n", "\n"), line))
        elif kind == "quoted":
            text = _decode(raw[1:-1], line)
            tokens.append(("string", _QUOTED_ESCAPE.sub(r"\1", text), line))
        elif kind == "number":
            multiplier = _MULTIPLIERS.get(raw[-1:].lower(), 1)
            digits = raw[:-1] if multiplier > 1 else raw
            tokens.append(("number", int(digits) * multiplier, line))
        elif kind == "tag":
            tokens.append(("tag", raw[1:].decode().lower(), line))
        elif kind == "identifier":
            tokens.append(("identifier", raw.decode().lower(), line))
        elif kind == "special":
            tokens.append((raw.decode(), None, line))
        line += raw.count(b"\n")
        position = match.end()
    tokens.append(("end", None, line))
    return tokens


def _decode(raw: bytes, line: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SieveError(line, "string is not valid UTF-8") from None


class _Parser:
    def __init__(self, tokens: list[tuple[str, object, int]]) -> None:
        self.tokens = tokens
        self.index = 0

    def peek(self) -> tuple[str, object, int]:
        return self.tokens[self.index]

    def take(self, kind: str | None = None) -> tuple[str, object, int]:
        token = self.tokens[self.index]
        if kind is not None and token[0] != kind:
            raise SieveError(token[2], f"expected {kind!r}, found {_describe(token)}")
        self.index += 1
        return token

    def commands(self, depth: int, closing: str) -> list[Command]:
        if depth > MAX_NESTING:
            raise SieveError(self.peek()[2], "blocks nested too deeply")
        commands = []
        while self.peek()[0] != closing:
            commands.append(self.command(depth))
        return commands

    def command(self, depth: int) -> Command:
        kind, name, line = self.take()
        if kind != "identifier":
            raise SieveError(line, f"expected a command, found {_describe((kind, name, line))}")
        command = Command(str(name), line)
        self.arguments(command, depth)
        kind, _, line = self.peek()
        if kind == ";":
            self.take()
        elif kind == "{":
            self.take()
            command.block = self.commands(depth + 1, "}")
            self.take("}")
        else:
            raise SieveError(line, f"expected ';' or a block after {command.name}, found {_describe(self.peek())}")
        return command

    def arguments(self, command: Command, depth: int) -> None:
        while True:
            kind, value, line = self.peek()
            if kind == "tag":
                self.take()
                command.arguments.append(Tag(str(value)))
            elif kind == "number":
                self.take()
                command.arguments.append(int(value))  # type: ignore[call-overload]
            elif kind == "string":
                self.take()
                command.arguments.append(StringList((str(value),), single=True))
            elif kind == "[":
                command.arguments.append(self.string_list())
            else:
                break
        kind, _, line = self.peek()
        if kind == "identifier":
            command.tests.append(self.test(depth + 1))
        elif kind == "(":
            self.take()
            command.tests.append(self.test(depth + 1))
            while self.peek()[0] == ",":
                self.take()
                command.tests.append(self.test(depth + 1))
            self.take(")")

    def test(self, depth: int) -> Command:
        kind, name, line = self.take()
        if kind != "identifier":
            raise SieveError(line, f"expected a test, found {_describe((kind, name, line))}")
        if depth > MAX_NESTING:
            raise SieveError(line, "tests nested too deeply")
        test = Command(str(name), line)
        self.arguments(test, depth)
        return test

    def string_list(self) -> StringList:
        self.take("[")
        values = [str(self.take("string")[1])]
        while self.peek()[0] == ",":
            self.take()
            values.append(str(self.take("string")[1]))
        self.take("]")
        return StringList(tuple(values))


def _describe(token: tuple[str, object, int]) -> str:
    kind, value, _ = token
    if kind == "end":
        return "end of script"
    if kind in ("identifier", "number"):
        return f"{kind} {value}"
    if kind == "tag":
        return f"tag :{value}"
    if kind == "string":
        return "a string"
    return repr(kind)


def parse(script: bytes | str) -> list[Command]:
    """The commands of C{script}; raise L{SieveError} for a syntax error."""
    data = script.encode("utf-8") if isinstance(script, str) else script
    if len(data) > MAX_SCRIPT_SIZE:
        raise SieveError(0, f"script is larger than {MAX_SCRIPT_SIZE} bytes")
    parser = _Parser(_tokens(data))
    commands = parser.commands(0, "end")
    return commands
