"""
Pure: run a checked Sieve script over a message and envelope -> actions.

RFC 5228 semantics: tests, if/elsif/else, stop, the implicit keep (kept
unless cancelled by fileinto, redirect, discard or reject without
``:copy``), plus the extensions the checker knows.  Limits are
Pigeonhole-like (L{Limits}); Sieve has no loops, includes are bounded by
depth and count, and :regex/:matches are bounded in L{mailserver.sieve.match}.
"""

from __future__ import annotations

import datetime
import email.utils
import hashlib
import re
from dataclasses import dataclass, field
from typing import Callable, Sequence

from mailserver.sieve.actions import INBOX, Action, Discard, FileInto, Redirect, Reject, Vacation
from mailserver.sieve.checker import Node, Script
from mailserver.sieve.match import Matcher
from mailserver.sieve.message import SieveEnvelope, SieveMessage, address_part, addresses
from mailserver.sieve.parser import SieveError

#: Loads an included script: (location "personal"/"global", name) -> Script, or None if missing.
IncludeLoader = Callable[[str, str], "Script | None"]

DAY = 86400


class SieveRuntimeError(SieveError):
    """The script failed while running: the message must go to INBOX."""


@dataclass(frozen=True)
class Limits:
    max_actions: int = 32  # sieve_max_actions
    max_redirects: int = 4  # sieve_max_redirects
    max_include_depth: int = 10  # sieve_include_max_nesting_depth
    max_includes: int = 255  # sieve_include_max_includes
    max_variable_size: int = 4000
    max_variables: int = 255
    vacation_min_period: int = DAY  # sieve_vacation_min_period
    vacation_max_period: int = 60 * DAY  # sieve_vacation_max_period
    vacation_default_period: int = 7 * DAY  # sieve_vacation_default_period


@dataclass
class Environment:
    message: SieveMessage
    envelope: SieveEnvelope
    recipient_delimiter: str = ""
    now: datetime.datetime = field(default_factory=lambda: datetime.datetime.now(datetime.timezone.utc))
    load_include: IncludeLoader | None = None
    limits: Limits = Limits()


class _Stop(Exception):
    pass


class _Return(Exception):
    pass


class _State:
    """What one delivery accumulates across the main script and its includes."""

    def __init__(self, env: Environment) -> None:
        self.env = env
        self.actions: list[Action] = []
        self.implicit_keep = True
        self.flags: list[str] = []
        self.globals: dict[str, str] = {}
        self.included: set[tuple[str, str]] = set()
        self.include_count = 0
        self.stack: list[tuple[str, str]] = []


def run(script: Script, env: Environment) -> list[Action]:
    """The actions of C{script}, implicit keep included; raise L{SieveRuntimeError} on an error."""
    return run_sequence([script], env)


def run_sequence(scripts: Sequence[Script], env: Environment) -> list[Action]:
    """
    Run global-before, personal and global-after scripts as one (Pigeonhole's
    multiscript): actions add up; the next script runs only while the
    message is still kept (implicit or explicit keep); ``stop`` ends all.
    """
    state = _State(env)
    for index, script in enumerate(scripts):
        try:
            _Run(script, state).block(script.commands)
        except _Stop:
            break
        except _Return:
            pass
        except SieveRuntimeError:
            raise
        except SieveError as error:
            raise SieveRuntimeError(error.line, error.message) from None
        kept = state.implicit_keep or any(isinstance(a, FileInto) and a.folder == INBOX for a in state.actions)
        if not kept:
            break
    actions = state.actions
    if state.implicit_keep:
        actions = [FileInto(INBOX, tuple(state.flags))] + actions
    return actions


def _split_flags(values: Sequence[str]) -> list[str]:
    flags: dict[str, str] = {}
    for value in values:
        for flag in value.split():
            flags.setdefault(flag.lower(), flag)
    return list(flags.values())


_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_.]*|[0-9]+)\}")


class _Run:
    """One script being run (the main one or an include): its variables and match values."""

    def __init__(self, script: Script, state: _State) -> None:
        self.script = script
        self.state = state
        self.env = state.env
        self.variables: dict[str, str] = {}
        self.global_names: set[str] = set()
        self.match_values: list[str] = []
        self.uses_variables = "variables" in script.extensions

    # -- strings ---------------------------------------------------------
    def expand(self, value: object) -> object:
        if not self.uses_variables:
            return value
        if isinstance(value, list):
            return [self.expand(item) for item in value]
        if isinstance(value, str) and "${" in value:
            return _VARIABLE.sub(lambda m: self.get(m.group(1)), value)[: self.env.limits.max_variable_size * 4]
        return value

    def get(self, name: str) -> str:
        if name.isdigit():
            index = int(name)
            return self.match_values[index] if index < len(self.match_values) else ""
        key = name.lower()
        if key.startswith("global."):
            return self.state.globals.get(key[7:], "")
        if "." in key:
            return ""  # an unknown namespace
        if key in self.global_names:
            return self.state.globals.get(key, "")
        return self.variables.get(key, "")

    def assign(self, name: str, value: str, line: int) -> None:
        key = name.lower()
        value = value[: self.env.limits.max_variable_size]
        if key.startswith("global."):
            key, target = key[7:], self.state.globals
        elif key in self.global_names:
            target = self.state.globals
        else:
            target = self.variables
        if key not in target and len(target) >= self.env.limits.max_variables:
            raise SieveRuntimeError(line, "too many variables")
        target[key] = value

    def arg(self, node: Node, index: int) -> object:
        return self.expand(node.args[index])

    def tag(self, node: Node, name: str, default: object = None) -> object:
        return self.expand(node.tags.get(name, default))

    # -- commands --------------------------------------------------------
    def block(self, commands: list[Node]) -> None:
        taken = False  # whether an if/elsif branch of the current chain ran
        for node in commands:
            if node.name == "if":
                taken = self.test(node.tests[0])
                if taken:
                    self.block(node.block or [])
            elif node.name == "elsif":
                if not taken:
                    taken = self.test(node.tests[0])
                    if taken:
                        self.block(node.block or [])
            elif node.name == "else":
                if not taken:
                    self.block(node.block or [])
                taken = True
            else:
                self.command(node)

    def command(self, node: Node) -> None:
        name = node.name
        state = self.state
        if name == "stop":
            raise _Stop()
        if name == "return":
            raise _Return()
        if name == "keep":
            self.add(node, FileInto(INBOX, self.flags_for(node)))
            state.implicit_keep = False
        elif name == "discard":
            state.implicit_keep = False
            if Discard() not in state.actions:
                state.actions.append(Discard())
        elif name == "fileinto":
            folder = str(self.arg(node, 0))
            self.add(node, FileInto(folder, self.flags_for(node), bool(node.tags.get("create"))))
            if "copy" not in node.tags:
                state.implicit_keep = False
        elif name == "redirect":
            self.redirect(node)
        elif name in ("reject", "ereject"):
            if any(isinstance(a, (Reject, Vacation)) for a in state.actions):
                raise SieveRuntimeError(node.line, "reject cannot be combined with another reject or vacation")
            if any(isinstance(a, (FileInto, Redirect)) for a in state.actions):
                raise SieveRuntimeError(node.line, "reject cannot be combined with keep, fileinto or redirect")
            self.add(node, Reject(str(self.arg(node, 0)), name == "ereject"))
            state.implicit_keep = False
        elif name in ("setflag", "addflag", "removeflag"):
            self.change_flags(node)
        elif name == "set":
            self.assign(str(node.args[0]), _modify(str(self.arg(node, 1)), node.tags), node.line)
        elif name == "vacation":
            self.vacation(node)
        elif name == "include":
            self.include(node)
        elif name == "global":
            for variable in node.args[0]:  # type: ignore[attr-defined]
                self.global_names.add(variable.lower())
        else:  # pragma: no cover - the checker knows every command
            raise SieveRuntimeError(node.line, f"unknown command {name}")

    def add(self, node: Node, action: Action) -> None:
        actions = self.state.actions
        if isinstance(action, FileInto):
            for index, existing in enumerate(actions):
                if isinstance(existing, FileInto) and existing.folder.lower() == action.folder.lower() or (
                    isinstance(existing, FileInto) and {existing.folder.upper(), action.folder.upper()} == {INBOX}
                ):
                    actions[index] = action  # the same folder twice is one copy, the last flags win
                    return
            if any(isinstance(a, Reject) for a in actions):
                raise SieveRuntimeError(node.line, "reject cannot be combined with keep or fileinto")
        elif action in actions:
            return
        if len(actions) >= self.env.limits.max_actions:
            raise SieveRuntimeError(node.line, f"more than {self.env.limits.max_actions} actions")
        actions.append(action)

    def redirect(self, node: Node) -> None:
        address = str(self.arg(node, 0)).strip()
        if address.startswith("<") and address.endswith(">"):
            address = address[1:-1]
        local, at, domain = address.rpartition("@")
        if not at or not local or not domain or any(c in address for c in " \t\r\n,<>()\\\""):
            raise SieveRuntimeError(node.line, f"redirect to an invalid address {address!r}")
        redirects = [a for a in self.state.actions if isinstance(a, Redirect)]
        if Redirect(address) not in redirects and len(redirects) >= self.env.limits.max_redirects:
            raise SieveRuntimeError(node.line, f"more than {self.env.limits.max_redirects} redirects")
        if any(isinstance(a, Reject) for a in self.state.actions):
            raise SieveRuntimeError(node.line, "reject cannot be combined with redirect")
        self.add(node, Redirect(address))
        if "copy" not in node.tags:
            self.state.implicit_keep = False

    def flags_for(self, node: Node) -> tuple[str, ...]:
        if "flags" in node.tags:
            return tuple(_split_flags(self.tag(node, "flags")))  # type: ignore[arg-type]
        return tuple(self.state.flags) if "imap4flags" in self.script.extensions else ()

    def change_flags(self, node: Node) -> None:
        variable = node.args[0]
        given = _split_flags(self.arg(node, 1))  # type: ignore[arg-type]
        if variable is None:
            current = self.state.flags
        else:
            current = _split_flags([self.get(str(variable))])
        folded = {f.lower() for f in given}
        if node.name == "setflag":
            result = given
        elif node.name == "addflag":
            result = _split_flags(current + given)
        else:
            result = [f for f in current if f.lower() not in folded]
        if variable is None:
            self.state.flags = result
        else:
            self.assign(str(variable), " ".join(result), node.line)

    def vacation(self, node: Node) -> None:
        limits = self.env.limits
        if any(isinstance(a, Vacation) for a in self.state.actions):
            raise SieveRuntimeError(node.line, "vacation given twice")
        if any(isinstance(a, Reject) for a in self.state.actions):
            raise SieveRuntimeError(node.line, "vacation cannot be combined with reject")
        if "seconds" in node.tags:
            period = int(node.tags["seconds"])  # type: ignore[call-overload]
        elif "days" in node.tags:
            period = int(node.tags["days"]) * DAY  # type: ignore[call-overload]
        else:
            period = limits.vacation_default_period
        if "seconds" not in node.tags or period:
            period = min(max(period, limits.vacation_min_period), limits.vacation_max_period)
        reason = str(self.arg(node, 0))
        subject = self.tag(node, "subject")
        sender = self.tag(node, "from")
        handle = self.tag(node, "handle")
        if handle is None:
            digest = hashlib.sha256("\0".join(map(str, (reason, subject, sender, "mime" in node.tags))).encode())
            handle = digest.hexdigest()[:32]
        self.add(node, Vacation(
            reason, period, str(handle),
            None if subject is None else str(subject), None if sender is None else str(sender),
            tuple(self.tag(node, "addresses", []) or ()), bool(node.tags.get("mime")),  # type: ignore[arg-type]
        ))

    def include(self, node: Node) -> None:
        state, limits = self.state, self.env.limits
        location = "global" if "global" in node.tags else "personal"
        name = str(self.arg(node, 0))
        key = (location, name)
        if "once" in node.tags and key in state.included:
            return
        if key in state.stack:
            raise SieveRuntimeError(node.line, f"include loop: {location} script {name!r}")
        if len(state.stack) >= limits.max_include_depth:
            raise SieveRuntimeError(node.line, "includes nested too deeply")
        state.include_count += 1
        if state.include_count > limits.max_includes:
            raise SieveRuntimeError(node.line, "too many includes")
        loader = self.env.load_include
        try:
            script = loader(location, name) if loader is not None else None
        except SieveError as error:
            raise SieveRuntimeError(node.line, f"included {location} script {name!r}: {error}") from None
        if script is None:
            if "optional" in node.tags:
                return
            raise SieveRuntimeError(node.line, f"included {location} script {name!r} does not exist")
        state.included.add(key)
        state.stack.append(key)
        try:
            _Run(script, state).block(script.commands)
        except _Return:
            pass
        finally:
            state.stack.pop()

    # -- tests -----------------------------------------------------------
    def test(self, node: Node) -> bool:
        name = node.name
        if name == "true":
            return True
        if name == "false":
            return False
        if name == "not":
            return not self.test(node.tests[0])
        if name == "allof":
            return all(self.test(t) for t in node.tests)
        if name == "anyof":
            return any(self.test(t) for t in node.tests)
        message = self.env.message
        if name == "exists":
            return all(message.has_header(h) for h in self.arg(node, 0))  # type: ignore[attr-defined]
        if name == "size":
            limit = int(node.args[0])  # type: ignore[call-overload]
            return message.size > limit if "over" in node.tags else message.size < limit
        keys: list[str] = self.arg(node, len(node.args) - 1)  # type: ignore[assignment]
        values = self.values(node)
        matcher = self.matcher(node)
        result = matcher.matches(values, keys)
        if result and matcher.captures is not None and self.uses_variables:
            self.match_values = matcher.captures
        return result

    def matcher(self, node: Node) -> Matcher:
        comparator = str(self.tag(node, "comparator", "i;ascii-casemap")).lower()
        for kind in ("is", "contains", "matches", "regex", "count", "value"):
            if kind in node.tags:
                relation = str(self.tag(node, kind)).lower() if kind in ("count", "value") else ""
                return Matcher(comparator, kind, relation)
        return Matcher(comparator, "is")

    def values(self, node: Node) -> list[str]:
        name, env = node.name, self.env
        if name == "header":
            return self.indexed(node, [v for h in self.arg(node, 0) for v in env.message.header_values(h)])  # type: ignore[attr-defined]
        if name == "address":
            fields = [v for h in self.arg(node, 0) for v in env.message.raw_header_values(h)]  # type: ignore[attr-defined]
            found = addresses(self.indexed(node, fields))
            return self.parts(node, found)
        if name == "envelope":
            found = []
            for part in self.arg(node, 0):  # type: ignore[attr-defined]
                part = part.lower()
                value = {"from": env.envelope.sender, "to": env.envelope.recipient, "auth": env.envelope.auth}.get(part)
                if value is None:
                    raise SieveRuntimeError(node.line, f"unknown envelope part {part!r}")
                if part == "auth" and not value:
                    continue
                found.append(value)
            return [v for v in self.parts(node, found, null_ok=True)]
        if name == "body":
            if "raw" in node.tags:
                return [env.message.body_raw()]
            content = node.tags.get("content")
            return env.message.body_parts(tuple(self.expand(content)) if content is not None else None)  # type: ignore[arg-type]
        if name == "string":
            return list(self.arg(node, 0))  # type: ignore[call-overload]
        if name == "hasflag":
            variables = self.arg(node, 0)
            if variables is None:
                return list(self.state.flags)
            return _split_flags([self.get(v) for v in variables])  # type: ignore[union-attr]
        if name == "date":
            header = str(self.arg(node, 0))
            dates = []
            for value in self.indexed(node, env.message.header_values(header)):
                if header.lower() == "received":
                    value = value.rpartition(";")[2]
                try:
                    parsed = email.utils.parsedate_to_datetime(value.strip())
                except (TypeError, ValueError, IndexError):
                    continue
                if parsed is not None:
                    dates.append(parsed)
            return [_date_part(self.zoned(node, d), str(self.arg(node, 1))) for d in dates]
        if name == "currentdate":
            return [_date_part(self.zoned(node, env.now), str(self.arg(node, 0)))]
        raise SieveRuntimeError(node.line, f"unknown test {name}")  # pragma: no cover

    def indexed(self, node: Node, values: list[str]) -> list[str]:
        if "index" not in node.tags:
            return values
        index = int(node.tags["index"])  # type: ignore[call-overload]
        if index < 1 or index > len(values):
            return []
        return [values[-index] if "last" in node.tags else values[index - 1]]

    def parts(self, node: Node, found: list[str], null_ok: bool = False) -> list[str]:
        part = next((p for p in ("localpart", "domain", "user", "detail") if p in node.tags), "all")
        out = []
        for address in found:
            if address == "" and null_ok:
                out.append("")  # the null reverse-path matches "" for every part
                continue
            value = address_part(address, part, self.env.recipient_delimiter)
            if value is not None:
                out.append(value)
        return out

    def zoned(self, node: Node, moment: datetime.datetime) -> datetime.datetime:
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=datetime.timezone.utc)
        if "originalzone" in node.tags:
            return moment
        zone = self.tag(node, "zone")
        if zone is None:
            return moment.astimezone(datetime.timezone.utc) if node.name == "currentdate" else moment
        match = re.fullmatch(r"([+-])([0-9]{2})([0-9]{2})", str(zone))
        if match is None:
            raise SieveRuntimeError(node.line, f"bad time zone {zone!r}")
        offset = datetime.timedelta(hours=int(match.group(2)), minutes=int(match.group(3)))
        return moment.astimezone(datetime.timezone(offset if match.group(1) == "+" else -offset))


#: RFC 5260 2.4.2 date parts as strftime formats ("zone", "julian", "iso8601", "std11" are computed).
_DATE_FORMATS = {
    "year": "%Y", "month": "%m", "day": "%d", "date": "%Y-%m-%d", "hour": "%H", "minute": "%M",
    "second": "%S", "time": "%H:%M:%S",
}


def _date_part(moment: datetime.datetime, part: str) -> str:
    part = part.lower()
    offset = moment.utcoffset() or datetime.timedelta(0)
    minutes = int(offset.total_seconds()) // 60
    zone = f"{'-' if minutes < 0 else '+'}{abs(minutes) // 60:02d}{abs(minutes) % 60:02d}"
    if part in _DATE_FORMATS:
        return f"{moment.year:04d}" if part == "year" else moment.strftime(_DATE_FORMATS[part])
    computed = {
        "julian": lambda: str((moment.date() - datetime.date(1858, 11, 17)).days),
        "iso8601": lambda: moment.strftime("%Y-%m-%dT%H:%M:%S") + zone[:3] + ":" + zone[3:],
        "std11": lambda: email.utils.format_datetime(moment),
        "zone": lambda: zone,
        "weekday": lambda: str((moment.weekday() + 1) % 7),
    }.get(part)
    if computed is None:
        raise SieveRuntimeError(0, f"unknown date part {part!r}")
    return computed()


_WILDCARDS = re.compile(r"([*?\\])")


def _modify(value: str, tags: dict[str, object]) -> str:
    """RFC 5229 4.1 modifiers, highest precedence first."""
    if "lower" in tags:
        value = value.lower()
    if "upper" in tags:
        value = value.upper()
    if "lowerfirst" in tags:
        value = value[:1].lower() + value[1:]
    if "upperfirst" in tags:
        value = value[:1].upper() + value[1:]
    if "quotewildcard" in tags:
        value = _WILDCARDS.sub(r"\\\1", value)
    if "length" in tags:
        value = str(len(value))
    return value
