"""
A sendmail-compatible command: C{sendmail} and C{mailserver sendmail}.

Reads a message on stdin and drops it into the maildrop
(C{$data_directory/maildrop}, L{mailserver.queue.pickup}); the daemon picks
it up, now or when it next starts.  Flags as Postfix's sendmail:

  -t            recipients from To:/Cc:/Bcc: (added to those given), Bcc: removed
  -i, -oi       a line with a single "." does not end the message
  -f sender     envelope sender ("" or "<>" for the null sender); -r is a synonym
  -F name       full name for a From: header that sendmail adds
  -bp           list the queue (as mailq);  -q  flush the queue
  -C path       the main configuration file (stand-alone command only)
  --            end of options, recipients follow

Accepted and ignored: -oem -oee -odi -odb -oQ... (any other -o), -B type,
-N dsn, -R ret, -V envid, -m, -v, -n, -U, -G, -bm, -A, -L, -O, -X, -e, -h, -p.
Exit status from sysexits.h.
"""

from __future__ import annotations

import argparse
import email.utils
import errno
import os
import secrets
import sys
import time
from dataclasses import dataclass, field
from typing import BinaryIO, Sequence, TextIO

from mailserver.queue import submission

EX_OK = 0
EX_USAGE = 64
EX_DATAERR = 65
EX_NOUSER = 67
EX_SOFTWARE = 70
EX_OSERR = 71
EX_CANTCREAT = 73
EX_TEMPFAIL = 75
EX_NOPERM = 77
EX_CONFIG = 78

#: Options that take a value (attached, "-fuser", or as the next word).
_WITH_VALUE = frozenset("ABCFLNORVXbefhopr")
#: Options without a value.
_FLAGS = frozenset("GIUcimntv")
#: -b modes we refuse, with the reason.
_UNSUPPORTED_MODES = {
    "s": "SMTP on standard input (-bs) is not supported; connect to port 25 or 587",
    "d": "daemon mode (-bd) is not supported; run 'twistd mailserver'",
    "D": "daemon mode (-bD) is not supported; run 'twistd mailserver'",
    "i": "use 'mailserver newaliases' to rebuild aliases",
    "v": "address verification (-bv) is not supported",
}


class UsageError(ValueError):
    """Bad command line: EX_USAGE."""


@dataclass
class SendmailOptions:
    mode: str = "deliver"  # deliver, mailq or flush
    extract: bool = False
    ignore_dots: bool = False
    sender: str | None = None
    fullname: str | None = None
    config_path: str | None = None
    recipients: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)


def parse_arguments(argv: Sequence[str]) -> SendmailOptions:
    """Parse sendmail's command line (POSIX style: options end at the first non-option)."""
    options = SendmailOptions()
    index = 0
    while index < len(argv):
        word = argv[index]
        if word == "--":
            options.recipients.extend(argv[index + 1 :])
            break
        if not word.startswith("-") or word == "-":
            options.recipients.extend(argv[index:])
            break
        position = 1
        while position < len(word):
            letter = word[position]
            if letter in _WITH_VALUE:
                value = word[position + 1 :]
                if not value:
                    index += 1
                    if index >= len(argv):
                        raise UsageError(f"option requires an argument -- {letter}")
                    value = argv[index]
                _apply(options, letter, value)
                break
            if letter == "q":
                options.mode = "flush"  # -q, -q30m, -qR...: a queue run now
                break
            if letter not in _FLAGS:
                raise UsageError(f"illegal option -- {letter}")
            _apply(options, letter, None)
            position += 1
        index += 1
    return options


def _apply(options: SendmailOptions, letter: str, value: str | None) -> None:
    if letter == "t":
        options.extract = True
    elif letter == "i":
        options.ignore_dots = True
    elif letter == "I":
        raise UsageError(_UNSUPPORTED_MODES["i"])
    elif letter in "fr":
        options.sender = "" if value in ("", "<>") else value.strip().strip("<>")
    elif letter == "F":
        options.fullname = value
    elif letter == "C":
        options.config_path = value
    elif letter == "o":
        if value == "i":
            options.ignore_dots = True
        else:
            options.ignored.append(f"-o{value}")
    elif letter == "b":
        if value == "p":
            options.mode = "mailq"
        elif value == "m":
            options.mode = "deliver"
        elif value[:1] in _UNSUPPORTED_MODES:
            raise UsageError(_UNSUPPORTED_MODES[value[:1]])
        else:
            raise UsageError(f"unsupported mode -b{value}")
    else:
        options.ignored.append(f"-{letter}{value or ''}")


def _login() -> tuple[str, str]:
    """The invoking user's login name and full name (from the password file)."""
    import pwd

    uid = os.getuid()
    try:
        entry = pwd.getpwuid(uid)
    except KeyError:
        name = os.environ.get("LOGNAME") or os.environ.get("USER")
        if not name:
            raise LookupError(f"no login name found for user ID {uid}") from None
        return name, ""
    return entry.pw_name, entry.pw_gecos.split(",", 1)[0]


def deliver(
    options: SendmailOptions,
    config,
    stdin: BinaryIO,
    err: TextIO,
    login: tuple[str, str] | None = None,
    now: float | None = None,
) -> int:
    """Read the message, prepare it and write it into the maildrop; the exit status."""
    from mailserver.address import parse_mailbox
    from mailserver.errors import MailError
    from mailserver.queue.pickup import write_pickup

    myorigin = getattr(config, "myorigin", "") or config.myhostname
    now = time.time() if now is None else now
    try:
        user, gecos = login or _login()
    except LookupError as e:
        if options.sender is None:
            err.write(f"sendmail: {e}\n")
            return EX_OSERR
        user, gecos = "", ""
    if options.sender is None:
        sender = f"{user}@{myorigin}"
    else:
        sender = submission.qualify(options.sender, myorigin)
    if sender:
        try:
            parse_mailbox(sender)
        except MailError as e:
            err.write(f"sendmail: bad sender address <{sender}>: {e.text}\n")
            return EX_DATAERR
    try:
        message = submission.collect_message(
            stdin, options.ignore_dots, int(getattr(config, "message_size_limit", 0) or 0)
        )
    except submission.MessageTooLarge as e:
        err.write(f"sendmail: {e}\n")
        return EX_DATAERR
    except OSError as e:
        err.write(f"sendmail: cannot read the message: {e}\n")
        return EX_OSERR
    recipients = submission.split_addresses(options.recipients)
    if options.extract:
        recipients += submission.extract_recipients(message)
        message = submission.remove_headers(message, ["Bcc", "Resent-Bcc"])
    qualified = []
    for recipient in recipients:
        address = submission.qualify(recipient, myorigin)
        try:
            parse_mailbox(address)
        except MailError as e:
            err.write(f"sendmail: bad recipient address <{recipient}>: {e.text}\n")
            return EX_NOUSER
        qualified.append(address)
    qualified = list(dict.fromkeys(qualified))
    if not qualified:
        err.write("sendmail: no recipients specified\n")
        return EX_USAGE
    message = submission.qualify_header_addresses(message, myorigin)
    fullname = options.fullname if options.fullname is not None else os.environ.get("NAME") or gecos
    from_address = sender or f"{user}@{myorigin}"
    stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(now))
    message = submission.add_missing_headers(
        message,
        [
            ("From", email.utils.formataddr((fullname, from_address)) if fullname else from_address),
            ("Date", email.utils.formatdate(now, localtime=True)),
            ("Message-ID", f"<{stamp}.{secrets.token_hex(6)}@{config.myhostname}>"),
        ],
    )
    maildrop = os.path.join(config.data_directory, "maildrop")
    flags = {"extract_recipients": options.extract, "uid": os.getuid()}
    if options.ignored:
        flags["ignored"] = list(options.ignored)
    try:
        write_pickup(maildrop, sender, qualified, message, flags)
    except PermissionError as e:
        err.write(f"sendmail: cannot write to {maildrop}: {e.strerror}\n")
        return EX_NOPERM
    except OSError as e:
        err.write(f"sendmail: cannot write to {maildrop}: {e.strerror or e}\n")
        if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EAGAIN, errno.EINTR):
            return EX_TEMPFAIL
        return EX_CANTCREAT
    return EX_OK


def run(options: SendmailOptions, config, stdin: BinaryIO, out: TextIO, err: TextIO) -> int:
    """Act on parsed options: deliver, list the queue (-bp) or flush it (-q)."""
    from mailserver.cli import queue as queue_cli

    if options.mode == "mailq":
        return queue_cli.list_queue(config, out, err)
    if options.mode == "flush":
        return queue_cli.request_flush(config, err)
    return deliver(options, config, stdin, err)


def run_sendmail(args, config) -> int:
    """C{mailserver sendmail ...}: C{args.sendmail_args} are sendmail's words."""
    try:
        options = parse_arguments(args.sendmail_args)
    except UsageError as e:
        sys.stderr.write(f"sendmail: {e}\n")
        return EX_USAGE
    return _guarded(options, config)


def _guarded(options: SendmailOptions, config) -> int:
    try:
        return run(options, config, sys.stdin.buffer, sys.stdout, sys.stderr)
    except Exception as e:  # a bug must still give sendmail's "software error" status
        sys.stderr.write(f"sendmail: internal error: {e!r}\n")
        return EX_SOFTWARE


def register(subparsers) -> None:
    """Add C{mailserver sendmail [sendmail flags] [--] recipients}."""
    parser = subparsers.add_parser(
        "sendmail",
        help="submit a message read on stdin, like sendmail",
        add_help=False,
        prefix_chars="\0",  # every word, "-t" included, belongs to sendmail
    )
    parser.add_argument("sendmail_args", nargs=argparse.REMAINDER)
    parser.set_defaults(func=run_sendmail)


def sendmail_main(argv: Sequence[str] | None = None) -> int:
    """The C{sendmail} console script."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        options = parse_arguments(argv)
    except UsageError as e:
        sys.stderr.write(f"sendmail: {e}\n")
        return EX_USAGE
    from mailserver.cli.queue import load_configuration

    config = load_configuration(options.config_path)
    if config is None:
        return EX_CONFIG
    return _guarded(options, config)
