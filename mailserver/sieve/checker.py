"""
Pure: a parsed script -> a checked one (L{Script}).

Knows every command, test and tag we implement, the extension each needs
(``require``), and the argument shapes; reports the first problem as a
L{SieveError} with its line, which is what ManageSieve's PUTSCRIPT answers.
The result is a tree of L{Node}s with tags collected by name, which is what
the interpreter walks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from mailserver.sieve.match import COMPARATORS, RELATIONS, check_regex
from mailserver.sieve.parser import Command, SieveError, StringList, Tag, parse

#: Extensions a script may require.
EXTENSIONS = frozenset({
    "fileinto", "reject", "ereject", "envelope", "encoded-character", "imap4flags", "variables",
    "copy", "body", "relational", "subaddress", "regex", "date", "index", "include", "vacation",
    "vacation-seconds", "mailbox", "comparator-i;octet", "comparator-i;ascii-casemap",
    "comparator-i;ascii-numeric",
})

_MATCH = {"is": "", "contains": "", "matches": "", "regex": "", "count": "s", "value": "s"}
_COMPARATOR = {"comparator": "s"}
_ADDRESS = {"all": "", "localpart": "", "domain": "", "user": "", "detail": ""}
_INDEX = {"index": "n", "last": ""}
_ZONE = {"zone": "s", "originalzone": ""}
_FLAGS = {"flags": "l"}
_VARIABLE_MODIFIERS = {m: "" for m in ("lower", "upper", "lowerfirst", "upperfirst", "quotewildcard", "length")}
#: Which extension a tag needs (tags not named here come with their command).
_TAG_EXTENSION = {
    "regex": "regex", "count": "relational", "value": "relational", "user": "subaddress",
    "detail": "subaddress", "index": "index", "last": "index", "flags": "imap4flags",
    "copy": "copy", "create": "mailbox", "seconds": "vacation-seconds",
}
#: Mutually exclusive tag groups.
_EXCLUSIVE = (set(_MATCH), set(_ADDRESS), {"raw", "content", "text"}, {"zone", "originalzone"},
              {"personal", "global"}, {"days", "seconds"}, {"over", "under"})


@dataclass(frozen=True)
class _Spec:
    extension: str | None
    positional: str  # one letter per argument: s string, l string list, n number
    tags: dict[str, str] = field(default_factory=dict)  # tag -> "" (flag), "s", "l", "n"
    tests: str = ""  # "" none, "1" one test, "+" a test list
    block: bool = False


_COMMANDS: dict[str, _Spec] = {
    "require": _Spec(None, "l"),
    "if": _Spec(None, "", tests="1", block=True),
    "elsif": _Spec(None, "", tests="1", block=True),
    "else": _Spec(None, "", block=True),
    "stop": _Spec(None, ""),
    "keep": _Spec(None, "", _FLAGS),
    "discard": _Spec(None, ""),
    "redirect": _Spec(None, "s", {"copy": ""}),
    "fileinto": _Spec("fileinto", "s", {**_FLAGS, "copy": "", "create": ""}),
    "reject": _Spec("reject", "s"),
    "ereject": _Spec("ereject", "s"),
    "setflag": _Spec("imap4flags", "?sl"),
    "addflag": _Spec("imap4flags", "?sl"),
    "removeflag": _Spec("imap4flags", "?sl"),
    "set": _Spec("variables", "ss", _VARIABLE_MODIFIERS),
    "vacation": _Spec("vacation", "s", {"days": "n", "seconds": "n", "subject": "s", "from": "s",
                                        "addresses": "l", "mime": "", "handle": "s"}),
    "include": _Spec("include", "s", {"personal": "", "global": "", "once": "", "optional": ""}),
    "return": _Spec("include", ""),
    "global": _Spec("include", "l"),
}
_TESTS: dict[str, _Spec] = {
    "address": _Spec(None, "ll", {**_COMPARATOR, **_MATCH, **_ADDRESS, **_INDEX}),
    "envelope": _Spec("envelope", "ll", {**_COMPARATOR, **_MATCH, **_ADDRESS}),
    "header": _Spec(None, "ll", {**_COMPARATOR, **_MATCH, **_INDEX}),
    "exists": _Spec(None, "l"),
    "size": _Spec(None, "n", {"over": "", "under": ""}),
    "true": _Spec(None, ""),
    "false": _Spec(None, ""),
    "not": _Spec(None, "", tests="1"),
    "allof": _Spec(None, "", tests="+"),
    "anyof": _Spec(None, "", tests="+"),
    "body": _Spec("body", "l", {**_COMPARATOR, **_MATCH, "raw": "", "content": "l", "text": ""}),
    "hasflag": _Spec("imap4flags", "?ll", {**_COMPARATOR, **_MATCH}),
    "string": _Spec("variables", "ll", {**_COMPARATOR, **_MATCH}),
    "date": _Spec("date", "ssl", {**_COMPARATOR, **_MATCH, **_ZONE, **_INDEX}),
    "currentdate": _Spec("date", "sl", {**_COMPARATOR, **_MATCH, "zone": "s"}),
}
DATE_PARTS = ("year", "month", "day", "date", "julian", "hour", "minute", "second", "time",
              "iso8601", "std11", "zone", "weekday")
_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\Z")


@dataclass
class Node:
    """A checked command or test: tags by name, positional arguments, tests, block."""

    name: str
    line: int
    tags: dict[str, object]
    args: list[object]
    tests: list[Node]
    block: list[Node] | None


@dataclass
class Script:
    """A checked script: its commands and the extensions it requires."""

    commands: list[Node]
    extensions: frozenset[str]


def compile_script(text: bytes | str) -> Script:
    """Parse and check C{text}; raise L{SieveError} naming the line of the first problem."""
    commands = parse(text)
    required: set[str] = set()
    checked: list[Node] = []
    seen_other = False
    for command in commands:
        if command.name == "require":
            if seen_other:
                raise SieveError(command.line, "require must come before other commands")
            names = _node(command, required, top=True).args[0]
            for name in names:  # type: ignore[attr-defined]
                if name.lower() not in EXTENSIONS:
                    raise SieveError(command.line, f"unsupported extension {name!r}")
                required.add(name.lower())
                if name.lower() == "vacation-seconds":
                    required.add("vacation")  # RFC 6131: it implies vacation
            continue
        seen_other = True
    checked = _block([c for c in commands if c.name != "require"], required, top=True)
    return Script(checked, frozenset(required))


def _block(commands: list[Command], required: set[str], top: bool = False) -> list[Node]:
    nodes = []
    previous = ""
    for command in commands:
        if command.name == "require":
            raise SieveError(command.line, "require is only allowed at the start of a script")
        if command.name in ("elsif", "else") and previous not in ("if", "elsif"):
            raise SieveError(command.line, f"{command.name} without if")
        nodes.append(_node(command, required, top))
        previous = command.name
    return nodes


def _node(command: Command, required: set[str], top: bool = False, test: bool = False) -> Node:
    table = _TESTS if test else _COMMANDS
    spec = table.get(command.name)
    what = "test" if test else "command"
    if spec is None:
        other = _COMMANDS if test else _TESTS
        hint = f" ({command.name} is a {'command' if test else 'test'})" if command.name in other else ""
        raise SieveError(command.line, f"unknown {what} {command.name!r}{hint}")
    if spec.extension and command.name != "require" and spec.extension not in required:
        if not (command.name == "ereject" and "reject" in required):
            raise SieveError(command.line, f"{command.name} needs require \"{spec.extension}\"")
    tags: dict[str, object] = {}
    positional: list[object] = []
    arguments = list(command.arguments)
    index = 0
    while index < len(arguments):
        argument = arguments[index]
        index += 1
        if isinstance(argument, Tag):
            if positional:
                raise SieveError(command.line, f"tag :{argument.name} after positional arguments of {command.name}")
            kind = spec.tags.get(argument.name)
            if kind is None:
                raise SieveError(command.line, f"{command.name} has no tag :{argument.name}")
            extension = _TAG_EXTENSION.get(argument.name)
            if extension and extension not in required and not (command.name == "vacation" and argument.name == "days"):
                raise SieveError(command.line, f":{argument.name} needs require \"{extension}\"")
            if argument.name in tags:
                raise SieveError(command.line, f"tag :{argument.name} given twice")
            for group in _EXCLUSIVE:
                if argument.name in group and group & set(tags):
                    raise SieveError(command.line, f":{argument.name} conflicts with another tag of {command.name}")
            if kind:
                if index >= len(arguments):
                    raise SieveError(command.line, f":{argument.name} needs an argument")
                tags[argument.name] = _shaped(arguments[index], kind, command, f":{argument.name}")
                index += 1
            else:
                tags[argument.name] = True
        else:
            positional.append(argument)
    args = _positional(spec.positional, positional, command)
    tests = [_node(t, required, test=True) for t in command.tests]
    if spec.tests == "" and tests:
        raise SieveError(command.line, f"{command.name} takes no test")
    if spec.tests == "1" and len(tests) != 1:
        raise SieveError(command.line, f"{command.name} needs exactly one test")
    if spec.tests == "+" and not tests:
        raise SieveError(command.line, f"{command.name} needs a test list")
    if spec.block != (command.block is not None):
        raise SieveError(command.line, f"{command.name} {'needs' if spec.block else 'takes no'} block")
    block = _block(command.block, required) if command.block is not None else None
    node = Node(command.name, command.line, tags, args, tests, block)
    _check_values(node, required)
    if "encoded-character" in required:
        _decode_encoded(node)
    return node


def _shaped(argument: object, kind: str, command: Command, what: str) -> object:
    if kind == "n":
        if not isinstance(argument, int):
            raise SieveError(command.line, f"{what} of {command.name} needs a number")
        return argument
    if not isinstance(argument, StringList):
        raise SieveError(command.line, f"{what} of {command.name} needs a string{'' if kind == 's' else ' list'}")
    if kind == "s":
        if len(argument.values) != 1:
            raise SieveError(command.line, f"{what} of {command.name} needs a single string")
        return argument.values[0]
    return list(argument.values)


def _positional(shape: str, given: list[object], command: Command) -> list[object]:
    """Match C{given} to C{shape}; a leading C{?} makes the first argument optional (None when absent)."""
    letters = list(shape.lstrip("?"))
    out: list[object] = []
    if shape.startswith("?") and len(given) == len(letters) - 1:
        letters, out = letters[1:], [None]
    if len(given) != len(letters):
        raise SieveError(command.line, f"{command.name} takes {len(letters)} argument(s), {len(given)} given")
    for argument, kind in zip(given, letters):
        out.append(_shaped(argument, kind, command, "argument"))
    return out


def _check_values(node: Node, required: set[str]) -> None:
    comparator = node.tags.get("comparator")
    if comparator is not None:
        name = str(comparator).lower()
        if name not in COMPARATORS:
            raise SieveError(node.line, f"unknown comparator {comparator!r}")
        if name not in ("i;octet", "i;ascii-casemap") and f"comparator-{name}" not in required:
            raise SieveError(node.line, f"comparator {name} needs require \"comparator-{name}\"")
        if name == "i;ascii-numeric" and any(t in node.tags for t in ("contains", "matches", "regex")):
            raise SieveError(node.line, "i;ascii-numeric supports only :is, :count and :value")
    for relational in ("count", "value"):
        if relational in node.tags and str(node.tags[relational]).lower() not in RELATIONS:
            raise SieveError(node.line, f"bad relation {node.tags[relational]!r}")
    if "regex" in node.tags:
        keys = node.args[-1] if node.args else []
        for key in keys if isinstance(keys, list) else []:
            if "${" not in key:
                check_regex(key, node.line)
    if node.name in ("date", "currentdate"):
        part = str(node.args[-2]).lower()
        if part not in DATE_PARTS:
            raise SieveError(node.line, f"unknown date part {part!r}")
    if node.name == "set" and not _VARIABLE_NAME.match(str(node.args[0])):
        raise SieveError(node.line, f"bad variable name {node.args[0]!r}")
    if node.name == "size" and not ("over" in node.tags) ^ ("under" in node.tags):
        raise SieveError(node.line, "size needs :over or :under")
    if "last" in node.tags and "index" not in node.tags:
        raise SieveError(node.line, ":last needs :index")


_ENCODED = re.compile(r"\$\{(hex|unicode):([^}]*)\}", re.IGNORECASE)


def _decode_encoded(node: Node) -> None:
    """RFC 5228 2.4.2.4: ${hex:..} and ${unicode:..} in every string of this node."""

    def one(text: object) -> object:
        if isinstance(text, str):
            return _ENCODED.sub(_replace_encoded, text)
        if isinstance(text, list):
            return [one(item) for item in text]
        return text

    node.args = [one(arg) for arg in node.args]
    node.tags = {name: one(value) for name, value in node.tags.items()}


def _replace_encoded(match: re.Match[str]) -> str:
    kind, body = match.group(1).lower(), match.group(2).strip()
    pieces = body.split()
    if not all(re.fullmatch(r"[0-9A-Fa-f]+", p) for p in pieces):
        return match.group(0)  # not a valid encoding: left as written
    if kind == "hex":
        try:
            return bytes(int(p, 16) for p in pieces if int(p, 16) < 256).decode("utf-8")
        except (UnicodeDecodeError, ValueError):
            return match.group(0)
    try:
        return "".join(chr(int(p, 16)) for p in pieces)
    except (ValueError, OverflowError):
        return match.group(0)
