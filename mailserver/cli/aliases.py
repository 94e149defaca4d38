"""
C{mailserver newaliases} and the C{newaliases} console script: validate the
C{alias_maps} sources, report each problem at file:line, and compile each
one into the C{.db} that the running daemon reloads.
"""

from __future__ import annotations

import argparse
import sys
from typing import Iterable, Sequence, TextIO

from mailserver.errors import ConfigError
from mailserver.tables.aliasdb import COMPILED_TYPES, compile_aliases, compiled_path, validate_aliases
from mailserver.tables.aliases import source_path, table_type


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add C{newaliases} to the admin tool's parser."""
    parser = subparsers.add_parser(
        "newaliases", help="validate alias_maps and compile them for the running daemon"
    )
    parser.add_argument("files", nargs="*", metavar="FILE", help="aliases(5) files (default: those of alias_maps)")
    parser.set_defaults(func=run_newaliases)


def alias_sources(config) -> list[tuple[str, bool]]:
    """(source path, compiled?) for each C{alias_maps} entry; C{texthash:} is not compiled."""
    return [(source_path(m), table_type(m) in COMPILED_TYPES) for m in config.alias_maps]


def compile_all(
    sources: Iterable[tuple[str, bool]], out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """Validate (and compile) each source; print problems and a summary; 1 if any has errors."""
    out = out or sys.stdout
    err = err or sys.stderr
    sources = list(sources)
    if not sources:
        print("newaliases: alias_maps is empty: nothing to do", file=err)
        return 0
    failed = False
    for path, compiled in sources:
        if compiled:
            table, problems = compile_aliases(path)
        else:
            table, _, problems = validate_aliases(path)
        for problem in problems:
            print(problem, file=err)
        errors = sum(1 for p in problems if p.severity == "error")
        if errors or table is None:
            failed = True
            print(f"{path}: {errors} error(s): {compiled_path(path) if compiled else path} not changed", file=err)
        elif compiled:
            print(f"{path}: {len(table)} aliases compiled into {compiled_path(path)}", file=out)
        else:
            print(f"{path}: {len(table)} aliases (texthash: read directly)", file=out)
    return 1 if failed else 0


def run_newaliases(args: argparse.Namespace, config) -> int:
    """The C{newaliases} command: the files named, else the config's alias_maps."""
    files = getattr(args, "files", None)
    sources = [(path, True) for path in files] if files else alias_sources(config)
    return compile_all(sources)


def newaliases_main(argv: Sequence[str] | None = None) -> int:
    """The C{newaliases} console script: C{newaliases [-c CONFIG] [FILE ...]}."""
    parser = argparse.ArgumentParser(
        prog="newaliases", description="Validate and compile the aliases(5) files of alias_maps."
    )
    parser.add_argument("-c", "--config", help="main configuration file (default: $MAILSERVER_CONFIG, else the embedded default)")
    parser.add_argument("files", nargs="*", metavar="FILE", help="aliases(5) files (default: alias_maps)")
    args = parser.parse_args(argv)
    if args.files:
        return compile_all((path, True) for path in args.files)
    from mailserver.locate import find_config

    try:
        config, warnings = find_config(args.config)
    except ConfigError as error:
        for problem in error.problems:
            print(problem, file=sys.stderr)
        return 1
    for warning in warnings:
        print(warning, file=sys.stderr)
    return run_newaliases(args, config)
