"""C{mailserver [-c CONFIG] COMMAND ...}: the administration command."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from mailserver.errors import ConfigError, Problem


def run_check(args: argparse.Namespace, config) -> int:
    """Like C{postfix check}: the config and every file it names, each problem at file:line."""
    from mailserver.cli.checks import check_files

    problems: list[Problem] = list(args.warnings) + check_files(config)
    for problem in problems:
        print(problem)
    errors = sum(1 for p in problems if p.severity == "error")
    print(f"{config.path}: {errors} error(s), {len(problems) - errors} warning(s)", file=sys.stderr)
    if args.dns:
        from mailserver.cli.dns_check import run_published, summary

        findings = run_published(args, config)
        for finding in findings:
            print(finding)
        print(summary(findings), file=sys.stderr)
        errors += sum(finding.status == "FAIL" for finding in findings)
    return 1 if errors else 0


def run_status(args: argparse.Namespace, config) -> int:
    """Whether the daemon runs (status file + live pid) and on which listeners; exit 3 if not."""
    from mailserver.cli.daemon import NotRunning, read_status

    try:
        status = read_status(config)
    except NotRunning as error:
        print(f"mailserver is not running ({error})")
        return 3
    print(f"mailserver is running, pid {status['pid']}, data_directory {config.data_directory}")
    for name, descriptions in sorted(status.get("listeners", {}).items()):
        print(f"  {name}: {', '.join(descriptions)}")
    return 0


def run_reload(args: argparse.Namespace, config) -> int:
    """Like C{postfix reload}: the running daemon re-reads its tables (SIGHUP)."""
    from mailserver.cli.daemon import NotRunning, notify

    try:
        pid = notify(config)
    except NotRunning as error:
        print(f"mailserver reload: daemon not running ({error})", file=sys.stderr)
        return 1
    print(f"mailserver reload: signalled pid {pid}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from mailserver.cli import aliases, dkim, hold, queue, sendmail, user

    parser = argparse.ArgumentParser(prog="mailserver", description="Administer the mail server.")
    parser.add_argument("-c", "--config", help="main configuration file (default: $MAILSERVER_CONFIG, else the embedded default)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    from mailserver.cli import dns_check, init, postconf

    for module in (postconf, init):
        module.register(commands)
    check = commands.add_parser("check", help="validate the configuration and the files it names")
    dns_check.add_arguments(check)
    check.set_defaults(func=run_check)
    commands.add_parser("status", help="is the daemon running, on which listeners").set_defaults(func=run_status)
    commands.add_parser("reload", help="make the daemon re-read its tables (SIGHUP)").set_defaults(func=run_reload)
    for module in (user, aliases, hold, queue, sendmail, dkim):
        module.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from mailserver.locate import find_config

    args = build_parser().parse_args(argv)
    if not getattr(args, "needs_config", True):
        return args.func(args)
    try:
        config, warnings = find_config(args.config)
    except ConfigError as error:
        for problem in error.problems:
            print(problem, file=sys.stderr)
        return 1
    args.warnings = warnings
    if args.func is not run_check:
        for warning in warnings:
            print(warning, file=sys.stderr)
    return args.func(args, config)


def newaliases(argv: Sequence[str] | None = None) -> int:
    """The C{newaliases} console script, for habit."""
    from mailserver.cli.aliases import newaliases_main

    return newaliases_main(argv)
