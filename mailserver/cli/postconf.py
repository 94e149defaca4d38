"""
C{mailserver postconf [-n|-d] [NAME ...]}: the parameters, like Postfix's C{postconf}.

Prints C{name = value} lines with values as written (before C{$name}
expansion): the effective value by default, only those set in the file with
C{-n}, the built-in defaults with C{-d}.  An unknown name is reported as
Postfix does (C{postconf: warning: NAME: unknown parameter}) and makes the
exit status 1.
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from mailserver.config.parameters import DEFAULT, DECLARED, PARAMETERS, parse_config


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add C{postconf} to the admin tool's parser."""
    parser = subparsers.add_parser("postconf", help="show parameters: effective (default), -n set, -d defaults")
    modes = parser.add_mutually_exclusive_group()
    modes.add_argument("-n", dest="mode", action="store_const", const="set", help="only parameters set in the file")
    modes.add_argument("-d", dest="mode", action="store_const", const="default", help="the built-in defaults")
    parser.add_argument("names", nargs="*", metavar="NAME", help="only these parameters")
    parser.set_defaults(func=run_postconf, mode="effective")


def default_values(config) -> dict[str, str]:
    """Each parameter's default text, computed for C{config}'s directory (no file settings)."""
    defaults, _ = parse_config("", DEFAULT, base_directory=config.config_directory)
    return {name: defaults.raw(name) for name in DECLARED}


def postconf(config, mode: str, names: list[str], out: TextIO, err: TextIO) -> int:
    """Print the lines; 1 if a name is unknown."""
    status = 0
    for name in names:
        if name not in DECLARED:
            err.write(f"postconf: warning: {name}: unknown parameter\n")
            status = 1
    wanted = [n for n in dict.fromkeys(names) if n in DECLARED] if names else [p.name for p in PARAMETERS]
    if not names:
        wanted.sort()  # Postfix prints them in name order
    values = default_values(config) if mode == "default" else None
    for name in wanted:
        if mode == "set" and config.where(name)[0] == DEFAULT:
            continue
        value = values[name] if values is not None else config.raw(name)
        out.write(f"{name} = {value}".rstrip() + "\n")
    return status


def run_postconf(args: argparse.Namespace, config) -> int:
    return postconf(config, args.mode, args.names, sys.stdout, sys.stderr)
