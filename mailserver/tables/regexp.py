"""
Pure: Postfix regexp_table(5) / pcre_table(5) text -> an immutable L{RuleTable}.

Syntax, as Postfix reads it::

    # comment
    /pattern/flags  ACTION optional text with $1 substitutions
    !/pattern/      ACTION            (matches when the pattern does not)
    if /pattern/flags                 (nestable; "if !/pattern/" too)
    /pattern/       ACTION
    endif

A line that starts with white space continues the previous logical line.
Any non-alphanumeric, non-space character may delimit a pattern.  Flags
toggle: C{i} (case-insensitive, on by default), C{m} (multi-line), C{s}
(dot matches newline) and C{x} (verbose, PCRE's meaning).

Patterns are Python C{re} expressions and are compiled once per load, with a
L{mailserver.tables.prefilter} so that a line no rule can match costs about
one C-level search, whatever the number of rules.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from typing import Sequence

from mailserver.address import parse_mailbox
from mailserver.config.lines import SPACE, lstrip, rstrip, split_lines, strip, unicode_space
from mailserver.errors import ConfigError, MailError, Problem
from mailserver.tables.prefilter import LiteralFilter, required_literals

ACTIONS = frozenset(
    {"REJECT", "DISCARD", "WARN", "HOLD", "IGNORE", "PREPEND", "REPLACE", "REDIRECT", "BCC", "DUNNO", "OK"}
)
_NEEDS_TEXT = frozenset({"PREPEND", "REPLACE", "REDIRECT", "BCC"})
_TAKES_NO_TEXT = frozenset({"IGNORE", "DUNNO", "OK"})
_FLAG_BITS = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL, "x": re.VERBOSE}
DEFAULT_FLAGS = "i"

# $1, ${1}, $(1), $$; anything else after "$" is literal text.
_SUBST = re.compile(r"\$(?:(\d+)|\{([^}]*)\}|\(([^)]*)\)|(\$)|([A-Za-z_]\w*))")
_MAX_MATCHED = 200
_HEADERISH = re.compile(r"[\x21-\x39\x3b-\x7e]+:")
_IF = re.compile(r"(?i)if(?![A-Za-z0-9])")
_ENDIF = re.compile(r"(?i)endif(?![A-Za-z0-9])")
_ACTION = re.compile(f"([^{re.escape(SPACE)}]+)[{re.escape(SPACE)}]*(.*)", re.DOTALL)
_NEVER = re.compile(r"(?!)")
_POSIX_CLASS = re.compile(r"\[:(?:alnum|alpha|blank|cntrl|digit|graph|lower|print|punct|space|upper|xdigit):\]")
_GNU_WORD_EDGE = re.compile(r"(?<!\\)(?:\\\\)*\\[<>]")
_PCRE_ONLY = re.compile(r"(?<!\\)(?:\\\\)*(\\[pPQEKRhHvVzXCGN]|\(\?R\)|\(\?\||\(\?<\w+>)")


@dataclass(frozen=True)
class Rule:
    """
    One rule: C{/pattern/flags ACTION text} at C{file:line}.

    C{flags} are the effective flags (C{"i"} unless toggled off); C{source}
    is the logical line as written, for logs.
    """

    pattern: str
    negate: bool
    flags: str
    action: str
    text: str
    file: str
    line: int
    source: str = ""
    regex: re.Pattern[str] = field(default=None, compare=False, repr=False)  # type: ignore[assignment]
    template: tuple[str | int, ...] = field(default=(), compare=False, repr=False)

    def expand(self, match: re.Match[str] | None) -> str:
        """The action text with C{$n} replaced by group C{n} (empty if unset)."""
        if match is None:
            return "".join(p for p in self.template if isinstance(p, str))
        return "".join(p if isinstance(p, str) else (match.group(p) or "") for p in self.template)


@dataclass(frozen=True)
class Match:
    """The first rule that matched a line, with its action text expanded."""

    rule: Rule
    action: str
    text: str
    matched: str  # what the pattern matched (the whole line for a negated rule), truncated

    def __str__(self) -> str:
        return f"{self.rule.file}:{self.rule.line}: {self.rule.source} -> {self.action} {self.text}".rstrip()


@dataclass(frozen=True)
class _Condition:
    regex: re.Pattern[str]
    negate: bool


@dataclass(frozen=True)
class _If:
    condition: _Condition
    end: int  # index of the first node after the matching endif


class RuleTable:
    """An immutable, compiled regexp table; L{match} returns the first hit."""

    def __init__(self, filename: str, program: Sequence[Rule | _If]) -> None:
        self.filename = filename
        self._program = tuple(program)
        self.rules: tuple[Rule, ...] = tuple(n for n in self._program if isinstance(n, Rule))
        self._filter = LiteralFilter([_literal(node) for node in self._program])
        self._covered = self._filter.covered
        # Every rule has a literal: a line with none of them matches nothing.
        self._all_covered = self._filter.active and all(
            covered for node, covered in zip(self._program, self._covered) if isinstance(node, Rule)
        )

    def __len__(self) -> int:
        return len(self.rules)

    def __repr__(self) -> str:
        return f"<RuleTable {self.filename!r}: {len(self.rules)} rules>"

    def may_match(self, text: str) -> bool:
        """
        False only if no rule can match any line of C{text} (several lines
        at once): every rule has a required literal and none occurs in it.
        """
        return not self._all_covered or self._filter.present(text)

    def match(self, text: str) -> Match | None:
        """The first rule matching C{text}, respecting if/endif, or None."""
        program = self._program
        if not program:
            return None
        covered = self._covered
        possible = self._filter.possible(text) if self._filter.active else frozenset()
        if not possible and self._all_covered:
            return None
        index, count = 0, len(program)
        while index < count:
            node = program[index]
            if covered[index] and index not in possible:
                # A positive pattern whose required literal is absent.
                index = node.end if isinstance(node, _If) else index + 1
                continue
            if isinstance(node, _If):
                cond = node.condition
                holds = (cond.regex.search(text) is not None) != cond.negate
                index = index + 1 if holds else node.end
                continue
            found = node.regex.search(text)
            if node.negate:
                if found is None:
                    return Match(node, node.action, node.expand(None), text[:_MAX_MATCHED])
            elif found is not None:
                return Match(node, node.action, node.expand(found), found.group(0)[:_MAX_MATCHED])
            index += 1
        return None


def _literal(node: Rule | _If) -> tuple[tuple[str, ...], bool] | None:
    """The prefilter literals of a positive pattern; negated ones have none."""
    regex, negate = (node.condition.regex, node.condition.negate) if isinstance(node, _If) else (node.regex, node.negate)
    return None if negate else required_literals(regex)


# -- parsing ------------------------------------------------------------------


def logical_lines(text: str) -> list[tuple[int, str]]:
    """
    C{(line number, text)} of each logical line: comments and blank lines
    dropped, lines starting with white space joined to the previous one.
    A continuation with nothing to continue is returned with number -n.
    """
    result: list[tuple[int, str]] = []
    for number, raw in enumerate(split_lines(text), 1):
        stripped = strip(raw)
        if not stripped or stripped.startswith("#"):
            continue
        if raw[0] in SPACE:
            if result:
                start, previous = result[-1]
                result[-1] = (start, previous + rstrip(raw))
            else:
                result.append((-number, stripped))
            continue
        result.append((number, rstrip(raw)))
    return result


def _split_pattern(line: str) -> tuple[bool, str, str, str] | str:
    """
    C{(negate, pattern, flags, rest)} of C{[!]/pattern/flags rest}, or an
    error message.  The delimiter is kept when escaped, as Postfix does.
    """
    negate = False
    position = 0
    while position < len(line) and line[position] == "!":
        negate = not negate
        position += 1
        while position < len(line) and line[position] in SPACE:
            position += 1
    if position >= len(line):
        return "missing pattern"
    delimiter = line[position]
    odd = unicode_space(delimiter)
    if odd is not None:
        return f"pattern must start with a delimiter such as '/', not {odd} (not white space here: use spaces and tabs)"
    if delimiter.isalnum() or delimiter in SPACE + "\\":
        return f"pattern must start with a delimiter such as '/', not {delimiter!r}"
    start = position = position + 1
    while position < len(line):
        char = line[position]
        if char == "\\" and position + 1 < len(line):
            position += 2
            continue
        if char == delimiter:
            break
        position += 1
    else:
        return f"missing closing {delimiter!r} after the pattern"
    pattern = line[start:position]
    position += 1
    flags_end = position
    while flags_end < len(line) and line[flags_end] not in SPACE:
        flags_end += 1
    return negate, pattern, line[position:flags_end], strip(line[flags_end:])


def _compile(pattern: str, flag_text: str) -> tuple[re.Pattern[str], str] | str:
    """Compile with toggled flags; C{(regex, effective flags)} or an error."""
    active = set(DEFAULT_FLAGS)
    for char in flag_text:
        if char not in _FLAG_BITS:
            return f"unknown pattern flag {char!r} (use i, m, s or x)"
        active ^= {char}
    bits = 0
    for char in active:
        bits |= _FLAG_BITS[char]
    try:
        with warnings.catch_warnings():
            # re warns about "[[" (possible nested set): reported by portability_warnings.
            warnings.simplefilter("ignore")
            regex = re.compile(pattern, bits)
    except (re.error, RecursionError, OverflowError) as error:
        pcre = _PCRE_ONLY.search(pattern)
        hint = f" ({pcre.group(1)} is PCRE syntax that Python re does not support)" if pcre else ""
        return f"pattern /{pattern}/ does not compile: {error}{hint}"
    return regex, "".join(c for c in "imsx" if c in active)


def portability_warnings(pattern: str) -> list[str]:
    """
    POSIX and PCRE syntax that Python's C{re} reads differently, so a rule
    copied from a Postfix table silently matches something else.
    """
    found = []
    posix_class = _POSIX_CLASS.search(pattern)
    if posix_class:
        found.append(
            f"POSIX class {posix_class.group(0)!r} is not supported by Python re "
            "(it is a set of characters here): use [a-z], \\d, \\s or \\w"
        )
    if _GNU_WORD_EDGE.search(pattern):
        found.append("\\< and \\> match a literal < and > here: use \\b for a word boundary")
    return found


def empty_alternatives(pattern: str, verbose: bool = False) -> bool:
    """
    Whether C{pattern} has an empty alternative (C{a||b}, C{(|x)}, C{a|},
    or is empty): such a branch matches the empty string, so usually every
    line.  Escapes and character classes are skipped.
    """
    empty = True  # nothing seen yet in the current alternative
    index, length = 0, len(pattern)
    while index < length:
        char = pattern[index]
        if verbose and char in " \t\n\r\f\v":
            index += 1
            continue
        if verbose and char == "#":
            while index < length and pattern[index] != "\n":
                index += 1
            continue
        if char == "\\":
            index += 2
            empty = False
        elif char == "[":
            index += 1
            if index < length and pattern[index] == "^":
                index += 1
            if index < length and pattern[index] == "]":
                index += 1
            while index < length and pattern[index] != "]":
                index += 2 if pattern[index] == "\\" else 1
            index += 1
            empty = False
        elif char == "(":
            index += 1
            if pattern.startswith("?", index):
                # Skip the extension prefix: (?:  (?P<n>  (?i:  (?=  (?<!  ...
                close = re.match(r"\?(?:P<\w+>|<\w+>|[aiLmsux-]*:|[=!:>]|<[=!]|#[^)]*\)?)", pattern[index:])
                if close is None:
                    empty = False
                    continue
                index += close.end()
                if close.group(0).startswith("?#"):
                    continue  # a comment group: keeps the state
            empty = True
        elif char == "|":
            if empty:
                return True
            empty = True
            index += 1
        elif char == ")":
            if empty:
                return True
            empty = False
            index += 1
        else:
            empty = False
            index += 1
    return empty


def _template(text: str, groups: int, negate: bool) -> tuple[tuple[str | int, ...], str | None]:
    """Split action text into literal parts and group numbers, or an error."""
    parts: list[str | int] = []
    position = 0
    for found in _SUBST.finditer(text):
        parts.append(text[position : found.start()])
        position = found.end()
        number, braced, parened, dollar, name = found.groups()
        if dollar:
            parts.append("$")
            continue
        if name is not None:
            return (), f"non-numeric replacement ${name} (use $1, ${{1}} or $$)"
        index_text = number if number is not None else (braced if braced is not None else parened)
        index_text = index_text.strip()
        if not (index_text.isascii() and index_text.isdigit()):  # str.isdigit() is true for "²"
            return (), f"non-numeric replacement index in {found.group(0)!r}"
        index = int(index_text)
        if negate:
            return (), f"{found.group(0)} is not allowed with a negated pattern"
        if index > groups:
            return (), f"replacement {found.group(0)} is out of range: the pattern has {groups} group(s)"
        parts.append(index)
    parts.append(text[position:])
    merged: list[str | int] = []
    for part in parts:
        if isinstance(part, str) and merged and isinstance(merged[-1], str):
            merged[-1] += part
        elif part != "":
            merged.append(part)
    return tuple(merged), None


def parse_regexp_table(text: str, filename: str) -> tuple[RuleTable, list[Problem]]:
    """
    Parse a whole table.  Lines with errors are left out (as Postfix skips
    them with a warning) and reported, with warnings, as L{Problem}s.
    """
    problems: list[Problem] = []
    program: list[Rule | _If] = []
    open_ifs: list[tuple[int, int]] = []  # (program index, line)

    def problem(line: int, message: str, severity: str = "error") -> None:
        problems.append(Problem(filename, line, message, severity))

    for number, line in logical_lines(text):
        if number < 0:
            problem(-number, "logical line must not start with white space; line ignored")
            continue
        if _ENDIF.match(line):
            if strip(line[5:]):
                problem(number, "ignoring text after endif", "warning")
            if not open_ifs:
                problem(number, "endif without a matching if; ignored")
                continue
            index, _ = open_ifs.pop()
            node = program[index]
            assert isinstance(node, _If)
            program[index] = _If(node.condition, len(program))
            continue
        is_if = _IF.match(line) is not None
        split = _split_pattern(lstrip(line[2:]) if is_if else line)
        if isinstance(split, str):
            problem(number, split)
            if is_if:
                _open_broken_if(program, open_ifs, number)
            continue
        negate, pattern, flag_text, rest = split
        compiled = _compile(pattern, flag_text)
        if isinstance(compiled, str):
            problem(number, compiled)
            if is_if:
                _open_broken_if(program, open_ifs, number)
            continue
        regex, flags = compiled
        for warning in portability_warnings(pattern):
            problem(number, f"pattern /{pattern}/: {warning}", "warning")
        if empty_alternatives(pattern, "x" in flags):
            problem(
                number,
                f"pattern /{pattern}/ has an empty alternative, so it matches every line",
                "warning",
            )
        if is_if:
            if rest:
                problem(number, f"ignoring text after the if pattern: {rest!r}", "warning")
            open_ifs.append((len(program), number))
            program.append(_If(_Condition(regex, negate), -1))
            continue
        if not rest:
            problem(number, f"pattern /{pattern}/ has no action")
            continue
        action_word, action_text = _ACTION.match(rest).groups()
        action = action_word.upper()
        if action not in ACTIONS:
            problem(number, f"unknown action {action_word!r} (known: {', '.join(sorted(ACTIONS))})")
            continue
        if action in _NEEDS_TEXT and not action_text:
            problem(number, f"{action} needs {'an address' if action in ('REDIRECT', 'BCC') else 'text'}")
            continue
        if action in _TAKES_NO_TEXT and action_text:
            problem(number, f"ignoring text after {action}: {action_text!r}", "warning")
            action_text = ""
        template, error = _template(action_text, regex.groups, negate)
        if error is not None:
            problem(number, error)
            continue
        if action in ("REDIRECT", "BCC") and "$" not in action_text:
            try:
                parse_mailbox(action_text)
            except MailError as bad:
                problem(number, f"{action} {action_text!r}: {bad.text}")
                continue
        if action in ("PREPEND", "REPLACE") and not _HEADERISH.match(action_text):
            problem(
                number,
                f"{action} text {action_text!r} is not a 'Name: value' header line "
                "(ignored when used in header checks)",
                "warning",
            )
        rule = Rule(
            pattern=pattern,
            negate=negate,
            flags=flags,
            action=action,
            text=action_text,
            file=filename,
            line=number,
            source=strip(line)[:500],
            regex=regex,
            template=template,
        )
        program.append(rule)
    for index, number in open_ifs:
        problem(number, "if without a matching endif (closed at end of file)", "warning")
        node = program[index]
        assert isinstance(node, _If)
        program[index] = _If(node.condition, len(program))
    return RuleTable(filename, program), problems



def _open_broken_if(program: list[Rule | _If], open_ifs: list[tuple[int, int]], number: int) -> None:
    """Keep the if/endif structure for a broken if: it matches nothing."""
    open_ifs.append((len(program), number))
    program.append(_If(_Condition(_NEVER, False), -1))


def combine_tables(tables: Sequence[RuleTable]) -> RuleTable:
    """
    One table searching C{tables} in order, as Postfix searches a list like
    C{header_checks = regexp:/a, pcre:/b}: the first rule that matches wins.
    """
    program: list[Rule | _If] = []
    for table in tables:
        offset = len(program)
        for node in table._program:
            program.append(_If(node.condition, node.end + offset) if isinstance(node, _If) else node)
    return RuleTable(", ".join(t.filename for t in tables), program)


def compile_regexp_table(text: str, filename: str) -> RuleTable:
    """L{parse_regexp_table}, raising L{ConfigError} if any problem is an error."""
    table, problems = parse_regexp_table(text, filename)
    if any(p.severity == "error" for p in problems):
        raise ConfigError(problems)
    return table


def table_reference(value: str) -> str:
    """
    The file of a main.cf table reference: C{regexp:/path} or C{pcre:/path}
    (a bare path is accepted too).  Other types raise L{ValueError}.
    """
    kind, colon, path = value.partition(":")
    if not colon:
        return value
    if kind.lower() not in ("regexp", "pcre"):
        raise ValueError(f"unsupported table type {kind!r} in {value!r}: use regexp: or pcre:")
    if not path:
        raise ValueError(f"missing file name in {value!r}")
    return path
