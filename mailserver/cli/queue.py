"""
C{mailserver queue list|flush|delete} and the C{mailq} command.

They work on the spool directory (C{$data_directory/queue}) directly, so
they work whether the daemon runs or not: C{list} reads the envelopes
(like Postfix's C{mailq}, with the last error per recipient), C{flush}
leaves a trigger file the running queue manager picks up within seconds
(like C{postqueue -f}), C{delete} removes messages (like C{postsuper -d}).
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
import time
from typing import Sequence, TextIO

from mailserver.queue.envelope import BOUNCED, PENDING, QueueEnvelope, is_queue_id
from mailserver.queue.spool import ACTIVE, SpoolDirectory

EX_OK = 0
EX_USAGE = 64
EX_SOFTWARE = 70
EX_CANTCREAT = 73
EX_NOPERM = 77
EX_CONFIG = 78

_ID_WIDTH = 15  # our ids are 14 hex digits, then "*" for a message being delivered
_RECIPIENT_COLUMN = _ID_WIDTH + 1 + 8 + 1 + 19 + 2


def spool_directory(config) -> str:
    """Where the outbound queue lives: C{$data_directory/queue}."""
    return os.path.join(config.data_directory, "queue")


def format_listing(entries: Sequence[QueueEnvelope]) -> str:
    """Pure: the queue as C{mailq} shows it ("*": being delivered now), oldest first."""
    if not entries:
        return "Mail queue is empty\n"
    lines = [f"{'-Queue ID-':<{_ID_WIDTH}} --Size-- ----Arrival Time---- -Sender/Recipient-------"]
    total = 0
    for entry in sorted(entries, key=lambda e: (e.arrival, e.queue_id)):
        total += entry.size
        marker = "*" if entry.state == ACTIVE else " "
        arrival = time.strftime("%a %b %d %H:%M:%S", time.localtime(entry.arrival))
        sender = entry.sender or "MAILER-DAEMON"
        lines.append(f"{entry.queue_id + marker:<{_ID_WIDTH}} {entry.size:>8} {arrival}  {sender}")
        shown = [
            r for r in entry.recipients if r.status == PENDING or (r.status == BOUNCED and not r.notified)
        ]
        last_error = None
        for recipient in shown:
            error = recipient.last_error
            if recipient.status == BOUNCED:
                error = f"bounced: {error}" if error else "bounced"
            if error and error != last_error:
                lines.extend(
                    textwrap.wrap(f"({error})", 78, initial_indent=" " * 7, subsequent_indent=" " * 8)
                )
                last_error = error
            lines.append(" " * _RECIPIENT_COLUMN + recipient.address)
        lines.append("")
    count = len(entries)
    kbytes = (total + 1023) // 1024
    lines.append(f"-- {kbytes} Kbytes in {count} Request{'s' if count != 1 else ''}.")
    return "\n".join(lines) + "\n"


def list_queue(config, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Print the queue; the exit status."""
    out = out or sys.stdout
    err = err or sys.stderr
    spool = SpoolDirectory(spool_directory(config))
    if not os.path.isdir(spool.path):
        out.write("Mail queue is empty\n")
        return EX_OK
    try:
        entries = spool.entries()
    except PermissionError as e:
        err.write(f"mailq: cannot read the queue {spool.path}: {e.strerror}\n")
        return EX_NOPERM
    except OSError as e:
        err.write(f"mailq: cannot read the queue {spool.path}: {e}\n")
        return EX_SOFTWARE
    out.write(format_listing(entries))
    return EX_OK


def run_list(args, config) -> int:
    return list_queue(config)


def request_flush(config, err: TextIO | None = None) -> int:
    """Leave the flush trigger for the queue manager; the exit status."""
    err = err or sys.stderr
    spool = SpoolDirectory(spool_directory(config))
    try:
        spool.request_flush()
    except PermissionError as e:
        err.write(f"queue flush: {spool.path}: {e.strerror}\n")
        return EX_NOPERM
    except OSError as e:
        err.write(f"queue flush: {spool.path}: {e}\n")
        return EX_CANTCREAT
    return EX_OK


def run_flush(args, config) -> int:
    return request_flush(config)


def run_delete(args, config, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Remove the messages named in C{args.queue_ids} (C{ALL} for every one, C{-} for stdin)."""
    out = out or sys.stdout
    err = err or sys.stderr
    spool = SpoolDirectory(spool_directory(config))
    ids: list[str] = []
    for word in args.queue_ids:
        if word == "-":
            ids.extend(sys.stdin.read().split())
        else:
            ids.append(word)
    ids = [word if word == "ALL" else word.upper() for word in ids]  # ids are upper-case hex
    try:
        if any(word == "ALL" for word in ids):
            count = spool.remove_all() if os.path.isdir(spool.path) else 0
            out.write(f"Deleted: {count} message{'s' if count != 1 else ''}\n")
            return EX_OK
        bad = [word for word in ids if not is_queue_id(word)]
        if bad:
            err.write(f"queue delete: invalid queue id: {' '.join(bad)}\n")
            return EX_USAGE
        missing = 0
        deleted = 0
        for queue_id in dict.fromkeys(ids):
            if os.path.isdir(spool.path) and spool.remove(queue_id):
                out.write(f"{queue_id}: removed\n")
                deleted += 1
            else:
                err.write(f"{queue_id}: not in the queue\n")
                missing += 1
    except PermissionError as e:
        err.write(f"queue delete: {spool.path}: {e.strerror}\n")
        return EX_NOPERM
    out.write(f"Deleted: {deleted} message{'s' if deleted != 1 else ''}\n")
    return 1 if missing else EX_OK


def register(subparsers) -> None:
    """Add C{queue list|flush|delete ID...|ALL} to the C{mailserver} command."""
    parser = subparsers.add_parser("queue", help="show, flush or delete outbound mail")
    commands = parser.add_subparsers(dest="queue_command", metavar="list|flush|delete")
    commands.required = True
    commands.add_parser("list", help="show the queue, like mailq").set_defaults(func=run_list)
    commands.add_parser("flush", help="try every deferred message now").set_defaults(func=run_flush)
    delete = commands.add_parser("delete", help="remove messages (ALL for every one, - to read ids)")
    delete.add_argument("queue_ids", nargs="+", metavar="ID|ALL")
    delete.set_defaults(func=run_delete)


def load_configuration(path: str | None, err: TextIO | None = None):
    """Load the main configuration for a stand-alone command (L{find_config}); None on error."""
    err = err or sys.stderr
    from mailserver.errors import ConfigError
    from mailserver.locate import find_config  # lazily: keep this module importable

    try:
        config, warnings = find_config(path)
    except ConfigError as e:
        err.write(f"{e}\n")
        return None
    except OSError as e:
        err.write(f"cannot read the configuration: {e}\n")
        return None
    for warning in warnings:
        err.write(f"{warning}\n")
    return config


def mailq_main(argv: Sequence[str] | None = None) -> int:
    """The C{mailq} console script."""
    parser = argparse.ArgumentParser(prog="mailq", description="Show the outbound mail queue.")
    parser.add_argument("-c", "--config", metavar="PATH", help="the main configuration file")
    parser.add_argument("-C", dest="config", metavar="PATH", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    config = load_configuration(args.config)
    if config is None:
        return EX_CONFIG
    return list_queue(config)
