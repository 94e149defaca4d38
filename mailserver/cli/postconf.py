"""
C{mailserver postconf [-n|-d] [-h] [-x] [NAME ...]}: the parameters, like Postfix's C{postconf}.

Prints C{name = value} lines with values as written (before C{$name}
expansion): the effective value by default, only those set in the file with
C{-n}, the built-in defaults with C{-d}.  C{-h} prints the values alone,
C{-x} expands their C{$name} references as the daemon does.  An unknown name
is reported as Postfix does (C{postconf: warning: NAME: unknown parameter})
and makes the exit status 1.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Mapping, TextIO

from mailserver.config.embedded import EMBEDDED_MAIN_CF
from mailserver.config.expand import ExpansionError, expand
from mailserver.config.maincf import parse_main_cf
from mailserver.config.parameters import DEFAULT, DECLARED, PARAMETERS, parse_config


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add C{postconf} to the admin tool's parser (C{-h} is Postfix's, so help is C{--help} only)."""
    parser = subparsers.add_parser("postconf", add_help=False,
                                   help="show parameters: effective (default), -n set, -d defaults")
    parser.add_argument("--help", action="help", help="show this help message and exit")
    modes = parser.add_mutually_exclusive_group()
    modes.add_argument("-n", dest="mode", action="store_const", const="set", help="only parameters set in the file")
    modes.add_argument("-d", dest="mode", action="store_const", const="default", help="the built-in defaults")
    parser.add_argument("-h", dest="values_only", action="store_true", help="print the values only, no 'name = '")
    parser.add_argument("-x", dest="expand", action="store_true", help="expand $name references in the values")
    parser.add_argument("names", nargs="*", metavar="NAME", help="only these parameters")
    parser.set_defaults(func=run_postconf, mode="effective")


def default_values(config) -> dict[str, str]:
    """Each parameter's default text, computed for C{config}'s directory (no file settings)."""
    defaults, _ = parse_config("", DEFAULT, base_directory=config.config_directory)
    return {name: defaults.raw(name) for name in DECLARED}


def file_values(config) -> dict[str, str]:
    """The effective values as written, with the file's own (undeclared) names that values may use."""
    text = EMBEDDED_MAIN_CF
    if os.path.isfile(config.path):
        with open(config.path, encoding="utf-8") as handle:
            text = handle.read()
    values = {setting.name: setting.value for setting in parse_main_cf(text, config.path)[0]}
    values.update((name, config.raw(name)) for name in DECLARED)
    return values


def expander(values: Mapping[str, str]) -> Callable[[str], str]:
    """C{name -> value} with every C{$name} expanded (recursively; a loop or a bad C{$} is left as written)."""
    done: dict[str, str] = {}
    active: list[str] = []

    def lookup(name: str) -> str | None:
        if name not in values:
            return None
        if name not in done:
            if name in active or len(active) > len(values):
                raise ExpansionError(f"expansion loop at ${name}")
            active.append(name)
            try:
                done[name] = expand(values[name], lookup)[0]
            finally:
                active.pop()
        return done[name]

    def expanded(name: str) -> str:
        try:
            return lookup(name) or ""
        except (ExpansionError, RecursionError):
            return values[name]

    return expanded


def postconf(config, mode: str, names: list[str], out: TextIO, err: TextIO, values_only: bool = False,
             expand_values: bool = False) -> int:
    """Print the lines; 1 if a name is unknown."""
    status = 0
    for name in names:
        if name not in DECLARED:
            err.write(f"postconf: warning: {name}: unknown parameter\n")
            status = 1
    wanted = [n for n in dict.fromkeys(names) if n in DECLARED] if names else [p.name for p in PARAMETERS]
    if not names:
        wanted.sort()  # Postfix prints them in name order
    values = default_values(config) if mode == "default" else file_values(config)
    value_of = expander(values) if expand_values else values.__getitem__
    for name in wanted:
        if mode == "set" and config.where(name)[0] == DEFAULT:
            continue
        value = value_of(name)
        out.write((value if values_only else f"{name} = {value}".rstrip()) + "\n")
    return status


def run_postconf(args: argparse.Namespace, config) -> int:
    return postconf(config, args.mode, args.names, sys.stdout, sys.stderr, args.values_only, args.expand)
