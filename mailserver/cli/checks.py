"""C{mailserver check}: lint every file the configuration names, each problem at file:line."""

from __future__ import annotations

import os
from typing import Callable

from mailserver.cli.dkim_check import key_problems
from mailserver.errors import Problem


def _strip_type(value) -> str:
    """A C{TableRef} (C{hash:/etc/aliases}) -> the source file the administrator edits."""
    return value.path


def _lint(path: str, parse: Callable[[str, str], tuple[object, list[Problem]]], required: bool) -> list[Problem]:
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as handle:
            text = handle.read()
    except FileNotFoundError:
        return [Problem(path, 0, "file does not exist", "error" if required else "warning")]
    except OSError as error:
        return [Problem(path, 0, f"cannot read: {error.strerror}")]
    return list(parse(text, path)[1])


def check_files(config) -> list[Problem]:
    """Problems of the passwd-file, alias maps and check tables the config names."""
    from mailserver.tables.aliases import parse_aliases, parse_virtual
    from mailserver.tables.passwd import parse_passwd
    from mailserver.tables.regexp import parse_regexp_table

    problems = _lint(config.passwd_file, parse_passwd, required=False)
    from mailserver.config.parameters import EMBEDDED

    for value in config.alias_maps:  # the embedded default's is created at first start
        problems += _lint(_strip_type(value), parse_aliases, required=config.path != EMBEDDED)
    for value in config.virtual_alias_maps:
        problems += _lint(_strip_type(value), parse_virtual, required=True)
    seen: set[str] = set()
    for name in ("header_checks", "mime_header_checks", "nested_header_checks", "body_checks"):
        for value in getattr(config, name):
            path = _strip_type(value)
            if path not in seen:
                seen.add(path)
                problems += _lint(path, parse_regexp_table, required=True)
    problems += postmaster_problems(config)
    problems += startup_warnings(config)
    problems += key_problems(config)[0]
    if not os.path.isdir(os.path.dirname(os.path.abspath(config.data_directory))):
        problems.append(Problem(config.where("data_directory")[0], config.where("data_directory")[1],
                                f"data_directory: parent of {config.data_directory} does not exist"))
    return problems


def startup_warnings(config) -> list[Problem]:
    """
    What the daemon warns of at start, at the parameter naming the file: a
    compiled alias map without a current C{.db}, a passwd-file all users can read.
    """
    from mailserver.tables.aliasdb import COMPILED_TYPES, compiled_path, stale_compiled
    from mailserver.tables.aliases import table_type
    from mailserver.tables.passwd import mode_problem

    def mtime_ns(path: str) -> int | None:
        try:
            return os.stat(path).st_mtime_ns
        except OSError:
            return None

    problems = []
    for value in config.alias_maps:
        source = _strip_type(value)
        if table_type(value) in COMPILED_TYPES and os.path.exists(source):  # a missing source is _lint's
            stale = stale_compiled(source, mtime_ns(compiled_path(source)))
            if stale is not None:
                problems.append(Problem(*config.where("alias_maps"), f"alias_maps: {stale}", "warning"))
    try:
        exposed = mode_problem(config.passwd_file, os.stat(config.passwd_file).st_mode)
    except OSError:
        exposed = None  # missing or unreadable: _lint reports it
    if exposed is not None:
        problems.append(Problem(*config.where("passwd_file"), exposed, "warning"))
    return problems


def dead_ends(name: str, domain: str, aliases, users: dict, mydestination: frozenset, local: frozenset) -> list:
    """
    Pure: the addresses that local C{name@domain} leads to through C{aliases}
    (an AliasTable) that are neither users (C{users}, keyed by lookup key),
    aliases, postmaster, nor remote; as (address, AliasEntry that named it).
    """
    from mailserver.tables.aliases import TargetKind

    found = []
    seen: set[tuple[str, bool]] = set()
    todo = [(name.lower(), domain.lower(), None)]
    for _ in range(1000):  # bounded: aliases may loop or be large
        if not todo:
            break
        local_part, where, entry = todo.pop()
        address = f"{local_part}@{where}"
        alias = aliases.get(local_part) if where in mydestination else None
        own = alias is not None and entry is not None and alias.name == entry.name  # root: root, ...
        if (address, own) in seen or where not in local:
            continue  # remote addresses are the queue's business
        seen.add((address, own))
        if alias is not None and not own:
            for target in alias.targets:
                if target.kind is TargetKind.LOCAL:
                    todo.append((target.value.lower(), where, alias))
                elif target.kind is TargetKind.ADDRESS:
                    part, _, other = target.value.rpartition("@")
                    todo.append((part.lower(), other.lower(), alias))
            continue
        is_user = address in users or (where in mydestination and local_part in users)
        if not is_user and local_part not in ("postmaster", "mailer-daemon"):
            found.append((address, entry))
    return found


def postmaster_problems(config) -> list[Problem]:
    """A warning when mail to postmaster (or root) would be refused: an alias leads nowhere."""
    from mailserver.tables.aliases import chain, parse_aliases
    from mailserver.tables.passwd import parse_passwd

    def parsed(path: str, parse):
        try:
            with open(path, encoding="utf-8", errors="surrogateescape") as handle:
                return parse(handle.read(), path)[0]
        except OSError:
            return None

    tables = [parsed(_strip_type(value), parse_aliases) for value in config.alias_maps]
    users = parsed(config.passwd_file, parse_passwd) or {}
    aliases = chain(t for t in tables if t is not None)
    mydestination = frozenset(d.lower() for d in config.mydestination)
    local = mydestination | frozenset(d.lower() for d in config.virtual_mailbox_domains)
    problems = []
    reported: set[str] = set()
    for name in ("postmaster", "root"):
        for address, entry in dead_ends(name, config.myorigin, aliases, users, mydestination, local):
            if entry is None or address in reported:
                continue  # root without an alias: no alias to blame (see docs/aliases.rst)
            reported.add(address)
            problems.append(Problem(entry.file or aliases.source, entry.line,
                                    f"{name}: the alias {entry.name} leads to <{address}>, which is neither "
                                    f"a user nor an alias: mail to {name} would be refused", "warning"))
    return problems
