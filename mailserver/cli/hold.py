"""
C{mailserver hold list|release ID...|delete ID...}: the messages a content
check HOLD kept back, in C{data_directory/hold} (like Postfix's
C{postqueue -p} on the hold queue, C{postsuper -H} and C{postsuper -d}).

A released message moves to C{hold/released/}; the running daemon delivers
it on its next pass, without running the content checks again.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from mailserver.store.hold import HoldArea, NoSuchMessage

FAILURE = 1


def hold_directory(config) -> str:
    """Where held messages live: C{data_directory/hold}."""
    return os.path.join(config.data_directory, "hold")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the C{hold} command and its subcommands to the admin tool's parser."""
    hold = subparsers.add_parser("hold", help="list, release or delete held messages (content check HOLD)")
    commands = hold.add_subparsers(dest="hold_command", metavar="COMMAND")
    commands.required = True
    commands.add_parser("list", help="list held messages").set_defaults(func=run_list)
    release = commands.add_parser("release", help="deliver held messages (content checks are not run again)")
    release.add_argument("ids", nargs="+", metavar="ID")
    release.set_defaults(func=run_release)
    delete = commands.add_parser("delete", help="delete held messages")
    delete.add_argument("ids", nargs="+", metavar="ID")
    delete.set_defaults(func=run_delete)


def run_list(args: argparse.Namespace, config) -> int:
    """One block per message: id, size, time and sender; recipients; reason."""
    area = HoldArea(hold_directory(config))
    entries = area.list()
    for entry in entries:
        if entry.problem is not None:
            print(f"{entry.id:<24} {entry.problem}")
            continue
        envelope = entry.envelope
        when = time.strftime("%a %b %d %H:%M:%S", time.localtime(envelope.get("time", 0)))
        print(f"{entry.id:<24} {entry.size:>8} {when}  {envelope.get('sender') or '<>'}")
        for recipient in envelope.get("recipients", ()):
            print(f"{'':<34}{recipient}")
        details = [f"client [{envelope['client_ip']}]"] if envelope.get("client_ip") else []
        if envelope.get("reason"):
            details.append(f"reason: {envelope['reason']}")
        if details:
            print(f"{'':<34}({'; '.join(details)})")
    noun = "message" if len(entries) == 1 else "messages"
    print(f"-- {len(entries)} held {noun}" if entries else "Hold area is empty", file=sys.stderr)
    return 0


def _each(args: argparse.Namespace, config, verb: str, method: str) -> int:
    area = HoldArea(hold_directory(config))
    status = 0
    for message_id in args.ids:
        try:
            getattr(area, method)(message_id.upper())
        except NoSuchMessage:
            print(f"mailserver hold: {message_id}: no such held message", file=sys.stderr)
            status = FAILURE
        except OSError as error:
            print(f"mailserver hold: {message_id}: {error.strerror or error}", file=sys.stderr)
            status = FAILURE
        else:
            print(f"{message_id.upper()}: {verb}")
    return status


def run_release(args: argparse.Namespace, config) -> int:
    """Move each message to hold/released/ for the daemon to deliver."""
    return _each(args, config, "released", "mark_released")


def run_delete(args: argparse.Namespace, config) -> int:
    """Delete each held message."""
    return _each(args, config, "deleted", "delete")
