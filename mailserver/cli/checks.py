"""C{mailserver check}: lint every file the configuration names, each problem at file:line."""

from __future__ import annotations

import os
from typing import Callable

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
    if not os.path.isdir(os.path.dirname(os.path.abspath(config.data_directory))):
        problems.append(Problem(config.where("data_directory")[0], config.where("data_directory")[1],
                                f"data_directory: parent of {config.data_directory} does not exist"))
    return problems
