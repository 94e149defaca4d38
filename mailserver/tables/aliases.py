"""
Pure: aliases(5) and virtual(5) text -> an L{AliasTable}, problems at file:line.

aliases(5), as Postfix reads it:

    # comment (only whole lines: '#' later on a line is text)
    name: target, target, ...
        continued target, ...         (a line starting with white space continues)
    "john doe": john
    owner-staff: harry
    staff: :include:/etc/mail/staff.list, "|/usr/local/bin/archive --list staff"

Names are case-insensitive (keys are lower-cased); the first definition of a
name wins and a later one is a warning.  Targets are classified here
(local name, address, C{:include:}, C{/file}, C{|command}) so that the
expansion (L{mailserver.delivery.aliases}) never re-parses text.

virtual(5) tables (C{virtual_alias_maps}) have a white-space separated key
(C{user@domain}, C{@domain} catch-all, or bare C{user}) and targets separated
by commas or white space.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Iterable, Iterator, Mapping, Sequence

from mailserver.address import MAX_LOCAL, parse_mailbox
from mailserver.config.lines import SPACE, has_space, lstrip, rstrip, split_lines, strip, unicode_space
from mailserver.errors import MailError, Problem


class TargetKind(enum.Enum):
    """What an alias target names."""

    LOCAL = "local"  # a bare name: a local user or another alias
    ADDRESS = "address"  # user@domain
    INCLUDE = "include"  # :include:/path, a file holding more targets
    FILE = "file"  # /path/file: append in mbox format
    COMMAND = "command"  # |command: pipe the message to a program


@dataclass(frozen=True)
class AliasTarget:
    """One classified target; C{value} is the name, address, path or command."""

    kind: TargetKind
    value: str
    line: int = 0

    def __str__(self) -> str:
        if self.kind is TargetKind.INCLUDE:
            return f":include:{self.value}"
        if self.kind is TargetKind.COMMAND:
            return f"|{self.value}"
        return self.value


@dataclass(frozen=True)
class AliasEntry:
    """
    One definition: lower-cased C{name}, its targets, where it was written,
    and the uid of the file's owner (set by the loader, not the parser) that
    file and command deliveries run as.
    """

    name: str
    targets: tuple[AliasTarget, ...]
    file: str = ""
    line: int = 0
    owner_uid: int | None = None


@dataclass(frozen=True, eq=False)
class AliasTable:
    """A read-only name -> L{AliasEntry} map; C{kind} is C{aliases} or C{virtual}."""

    entries: Mapping[str, AliasEntry] = field(default_factory=dict)
    source: str = ""
    kind: str = "aliases"

    def __post_init__(self) -> None:
        object.__setattr__(self, "entries", MappingProxyType(dict(self.entries)))

    def get(self, name: str) -> AliasEntry | None:
        """The entry for C{name} (matched case-insensitively) or None."""
        return self.entries.get(name.lower())

    def lookup(self, key: str) -> list[AliasTarget] | None:
        """L{mailserver.interfaces.ILookupTable}: the targets of C{key} or None."""
        entry = self.get(key)
        return None if entry is None else list(entry.targets)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[str]:
        return iter(self.entries)

    def domains(self) -> frozenset[str]:
        """The domains named by keys (C{user@domain}, C{@domain}): virtual alias domains."""
        return frozenset(k.rpartition("@")[2] for k in self.entries if "@" in k)

    def with_owner(self, uid: int | None) -> AliasTable:
        """A copy whose entries run file and command deliveries as C{uid}."""
        entries = {k: replace(e, owner_uid=uid) for k, e in self.entries.items()}
        return AliasTable(entries, self.source, self.kind)


def chain(tables: Iterable[AliasTable]) -> AliasTable:
    """
    Several maps searched in order, as Postfix searches C{alias_maps}: the
    first table that defines a name wins.
    """
    tables = list(tables)
    if len(tables) == 1:
        return tables[0]
    merged: dict[str, AliasEntry] = {}
    for table in tables:
        for name, entry in table.entries.items():
            merged.setdefault(name, entry)
    kind = tables[0].kind if tables else "aliases"
    return AliasTable(merged, ", ".join(t.source for t in tables), kind)


# -- reading lines -------------------------------------------------------------


@dataclass(frozen=True)
class LogicalLine:
    """Lines joined by continuation; C{starts} maps text offsets to file lines."""

    line: int
    text: str
    starts: tuple[tuple[int, int], ...]

    def line_at(self, offset: int) -> int:
        """The file line holding character C{offset} of C{text}."""
        line = self.line
        for start, number in self.starts:
            if start > offset:
                break
            line = number
        return line


def logical_lines(text: str, filename: str, problems: list[Problem]) -> Iterator[LogicalLine]:
    """
    Postfix's readlline: skip blank and C{#} lines, join lines that start with
    white space to the line before.
    """
    parts: list[str] = []
    starts: list[tuple[int, int]] = []
    length = 0
    for number, raw in enumerate(split_lines(text), 1):
        stripped = strip(raw)
        if not stripped or stripped.startswith("#"):
            continue
        if raw[0] in SPACE:
            if not parts:
                problems.append(
                    Problem(filename, number, "continuation line (starts with white space) without an entry before it")
                )
                continue
            starts.append((length + 1, number))
            parts.append(stripped)
            length += 1 + len(stripped)
            continue
        if parts:
            yield LogicalLine(starts[0][1], " ".join(parts), tuple(starts))
        parts, starts, length = [rstrip(raw)], [(0, number)], len(rstrip(raw))
    if parts:
        yield LogicalLine(starts[0][1], " ".join(parts), tuple(starts))


def _split(text: str, separators: str) -> tuple[list[tuple[int, str]], str | None]:
    """Split on C{separators} outside double quotes: ((offset, item) list, error)."""
    items: list[tuple[int, str]] = []
    current: list[str] = []
    begin = 0
    quoted = escaped = False

    def flush(end: int) -> None:
        item = "".join(current)
        items.append((begin + len(item) - len(lstrip(item)), strip(item)))

    for index, char in enumerate(text):
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char in separators and not quoted:
            flush(index)
            current = []
            begin = index + 1
            continue
        current.append(char)
    if quoted:
        return items, "unbalanced double quote"
    flush(len(text))
    return items, None


def _dequote(text: str) -> str | None:
    """C{"text"} without its quotes and backslash escapes, or None if not wholly quoted."""
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        return None
    inner = text[1:-1]
    if re.search(r'(?<!\\)(?:\\\\)*"', inner):
        return None  # "a" "b": several quoted strings, not one
    return re.sub(r"\\(.)", r"\1", inner)


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _refuse_unicode_space(text: str, what: str) -> None:
    """Raise ValueError naming a Unicode space (U+00A0...) in C{text}: Postfix separates with ASCII only."""
    found = unicode_space(text)
    if found is not None:
        raise ValueError(f"{what} {text!r} contains {found}, which is not white space here (use spaces and tabs)")


def classify(item: str, line: int) -> AliasTarget:
    """
    Classify one target as written (possibly quoted).

    @raise ValueError: with the reason, for an unusable target.
    """
    if item.startswith("<") and item.endswith(">"):
        item = strip(item[1:-1])
    unquoted = _dequote(item)
    text = item if unquoted is None else unquoted
    if unquoted is None:
        _refuse_unicode_space(text, "target")  # quoted, it is what the author meant
    if _CONTROL.search(text):
        raise ValueError(f"control character in target {item!r}")
    if text.startswith("|"):
        command = strip(text[1:])
        if not command:
            raise ValueError("empty command after '|'")
        return AliasTarget(TargetKind.COMMAND, command, line)
    if text[:9].lower() == ":include:":
        path = strip(text[9:])
        if not path.startswith("/"):
            raise ValueError(f":include: needs an absolute path, not {path!r}")
        return AliasTarget(TargetKind.INCLUDE, path, line)
    if text.startswith("/"):
        if text.endswith("/"):
            raise ValueError(f"{text}: delivery to a directory (Maildir) is not supported; name a file")
        if unquoted is None and has_space(text):
            raise ValueError(f"{text!r}: quote a file name that contains white space")
        return AliasTarget(TargetKind.FILE, text, line)
    if not text:
        raise ValueError("empty target")
    if unquoted is not None and "@" not in unquoted:
        if len(unquoted.encode()) > MAX_LOCAL:
            raise ValueError(f"name {unquoted!r} is longer than {MAX_LOCAL} bytes")
        return AliasTarget(TargetKind.LOCAL, unquoted, line)
    if unquoted is not None:
        item = unquoted  # "user@example.com"
    elif has_space(item) and not item.startswith('"'):
        raise ValueError(f"{item!r}: white space inside a target (missing comma?)")
    try:
        address = parse_mailbox(item)
    except MailError as error:
        raise ValueError(f"bad address {item!r}: {error.text}") from None
    if address.domain:
        return AliasTarget(TargetKind.ADDRESS, str(address), line)
    return AliasTarget(TargetKind.LOCAL, address.local, line)


def _targets(
    items: Sequence[tuple[int, str]], filename: str, where: LogicalLine, base: int, problems: list[Problem]
) -> tuple[list[AliasTarget], bool]:
    """Classify items (offsets relative to C{base} in C{where}); return (targets, had an error)."""
    targets: list[AliasTarget] = []
    bad = False
    for offset, item in items:
        if not item:
            continue
        line = where.line_at(base + offset)
        try:
            targets.append(classify(item, line))
        except ValueError as error:
            problems.append(Problem(filename, line, str(error)))
            bad = True
    return targets, bad


def _parse_name(text: str) -> str:
    """The alias name before the colon: dequoted, validated; raises ValueError."""
    name = strip(text)
    unquoted = _dequote(name)
    if unquoted is not None:
        name = unquoted
    else:
        _refuse_unicode_space(name, "alias name")
        if has_space(name):
            raise ValueError(f"alias name {name!r} contains white space (quote it)")
    if not name:
        raise ValueError("empty alias name")
    if _CONTROL.search(name):
        raise ValueError(f"control character in alias name {name!r}")
    return name


def _colon(text: str) -> int:
    """The index of the first colon outside quotes; raises ValueError."""
    quoted = escaped = False
    for index, char in enumerate(text):
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == ":" and not quoted:
            return index
    raise ValueError("missing ':' after the alias name")


# -- aliases(5) ------------------------------------------------------------------


def parse_aliases(text: str, filename: str) -> tuple[AliasTable, list[Problem]]:
    """
    Parse aliases(5) text.  An entry with an error is left out of the table
    (mail to it is then refused rather than half delivered); the problems
    say why, at file:line.
    """
    problems: list[Problem] = []
    entries: dict[str, AliasEntry] = {}
    first_line: dict[str, int] = {}
    for logical in logical_lines(text, filename, problems):
        line = logical.line
        try:
            colon = _colon(logical.text)
            name = _parse_name(logical.text[:colon])
        except ValueError as error:
            problems.append(Problem(filename, line, str(error)))
            continue
        key = name.lower()
        if key in first_line:
            problems.append(
                Problem(filename, line, f"duplicate alias {name!r} ignored (first defined at line {first_line[key]})", "warning")
            )
            continue
        first_line[key] = line
        if "@" in name:
            problems.append(
                Problem(filename, line, f"alias name {name!r} contains '@': aliases(5) matches local parts only (use virtual_alias_maps)", "warning")
            )
        items, error = _split(logical.text[colon + 1 :], ",")
        if error:
            problems.append(Problem(filename, line, error))
            continue
        targets, bad = _targets(items, filename, logical, colon + 1, problems)
        if not targets and not bad:
            problems.append(Problem(filename, line, f"alias {name!r} has no targets"))
            continue
        if not bad:
            entries[key] = AliasEntry(key, _unique(targets), filename, line)
    return AliasTable(entries, filename, "aliases"), problems


def parse_include(text: str, filename: str) -> tuple[tuple[AliasTarget, ...], list[Problem]]:
    """
    An C{:include:} file: targets separated by commas or new lines, C{#}
    comment lines.  Targets with errors are left out and reported.
    """
    problems: list[Problem] = []
    targets: list[AliasTarget] = []
    for number, raw in enumerate(split_lines(text), 1):
        stripped = strip(raw)
        if not stripped or stripped.startswith("#"):
            continue
        items, error = _split(stripped, ",")
        if error:
            problems.append(Problem(filename, number, error))
            continue
        targets += _targets(items, filename, LogicalLine(number, stripped, ((0, number),)), 0, problems)[0]
    return _unique(targets), problems


# -- virtual(5) -------------------------------------------------------------------

_NOT_IN_VIRTUAL = {
    TargetKind.FILE: "mail to files",
    TargetKind.COMMAND: "mail to commands",
    TargetKind.INCLUDE: ":include:",
}


_KEY = re.compile(f"([^{re.escape(SPACE)}]+)[{re.escape(SPACE)}]*")


def _virtual_key(text: str) -> str:
    """C{user@domain}, C{@domain} or C{user}, lower-cased; raises ValueError."""
    _refuse_unicode_space(text, "key")
    if text.endswith(":"):
        raise ValueError(f"{text!r}: virtual(5) keys are followed by white space, not ':'")
    try:
        if text.startswith("@"):
            address = parse_mailbox("postmaster" + text)
            if not address.domain:
                raise ValueError
            return "@" + address.domain
        return parse_mailbox(text).key
    except (MailError, ValueError):
        raise ValueError(f"bad key {text!r} (use user@domain, @domain or user)") from None


def parse_virtual(text: str, filename: str) -> tuple[AliasTable, list[Problem]]:
    """
    Parse a virtual(5) table for C{virtual_alias_maps}.  File, command and
    C{:include:} targets are kept (so that the refusal names them) but get
    a warning: Postfix never delivers them from virtual alias maps.
    """
    problems: list[Problem] = []
    entries: dict[str, AliasEntry] = {}
    first_line: dict[str, int] = {}
    for logical in logical_lines(text, filename, problems):
        line = logical.line
        parts = _KEY.match(logical.text)
        if parts is None:  # cannot happen: logical lines start with a non-space
            problems.append(Problem(filename, line, "missing key"))
            continue
        try:
            key = _virtual_key(parts.group(1))
        except ValueError as error:
            problems.append(Problem(filename, line, str(error)))
            continue
        if key in first_line:
            problems.append(
                Problem(filename, line, f"duplicate key {key!r} ignored (first defined at line {first_line[key]})", "warning")
            )
            continue
        first_line[key] = line
        items, error = _split(logical.text[parts.end() :], ", \t")
        if error:
            problems.append(Problem(filename, line, error))
            continue
        targets, bad = _targets(items, filename, logical, parts.end(), problems)
        if not targets and not bad:
            problems.append(Problem(filename, line, f"key {key!r} has no targets"))
            continue
        for target in targets:
            if target.kind in _NOT_IN_VIRTUAL:
                problems.append(
                    Problem(filename, line, f"{_NOT_IN_VIRTUAL[target.kind]} not allowed in virtual_alias_maps: mail to {key} will be refused", "warning")
                )
        if not bad:
            entries[key] = AliasEntry(key, _unique(targets), filename, line)
    return AliasTable(entries, filename, "virtual"), problems


def _unique(targets: Iterable[AliasTarget]) -> tuple[AliasTarget, ...]:
    """Targets in order, each once (names compared case-insensitively)."""
    seen: set[tuple[TargetKind, str]] = set()
    result = []
    for target in targets:
        value = target.value.lower() if target.kind in (TargetKind.LOCAL, TargetKind.ADDRESS) else target.value
        if (target.kind, value) not in seen:
            seen.add((target.kind, value))
            result.append(target)
    return tuple(result)


def source_path(table: object) -> str:
    """
    The source file of an C{alias_maps} entry: a config C{TableRef} (its
    C{path}) or text like C{hash:/etc/aliases} (the type prefix removed).
    """
    path = getattr(table, "path", None)
    if isinstance(path, str):
        return path
    text = str(table)
    kind, colon, rest = text.partition(":")
    return rest if colon and not kind.startswith("/") else text


def table_type(table: object) -> str:
    """The type of an C{alias_maps} entry (C{hash}, C{texthash}, ...), C{hash} if none."""
    kind = getattr(table, "type", None)
    if isinstance(kind, str):
        return kind
    name, colon, _ = str(table).partition(":")
    return name.lower() if colon and not name.startswith("/") else "hash"


__all__ = [
    "AliasEntry",
    "AliasTable",
    "AliasTarget",
    "TargetKind",
    "chain",
    "classify",
    "parse_aliases",
    "parse_include",
    "parse_virtual",
    "source_path",
    "table_type",
]
