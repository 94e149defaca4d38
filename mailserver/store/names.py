"""
Maildir file names: make them and take them apart (pure).

A delivered file is named ``<sec>.M<usec>P<pid>Q<n>.<host>,S=<size>`` like
Dovecot's: seconds and microseconds of the delivery time, the process id and
a per-process delivery counter make the name unique on this host; ``,S=``
records the file size so readers need no ``stat()``, and ``,W=`` (written
when known) the size with CRLF line endings, which IMAP reports as
RFC822.SIZE.  Once a reader has seen a message it adds the info part
``:2,<FLAGS>``.  See https://cr.yp.to/proto/maildir.html.
"""

from __future__ import annotations

from typing import NamedTuple

#: Separates the unique part (with its ``,K=V`` fields) from the info.
INFO_SEPARATOR = ":"

# The Maildir spec replaces "/" and ":" in the host name by octal escapes,
# as Courier and Dovecot do; "," is escaped too so a host name can never
# be mistaken for a ",S=" field.
_HOST_ESCAPES = str.maketrans({"/": "\\057", ":": "\\072", ",": "\\054"})


class MaildirName(NamedTuple):
    """A parsed file name: the unique part, the ``,S=`` size and the info."""

    unique: str
    size: int | None
    info: str | None


def escape_host(host: str) -> str:
    """The host name as it may appear in a file name (no "/", ":" or ",")."""
    return host.translate(_HOST_ESCAPES)


def make_name(
    now: float,
    pid: int,
    counter: int,
    host: str,
    size: int,
    vsize: int | None = None,
) -> str:
    """
    A new file name for a message of C{size} bytes delivered at C{now}.

    @param now: seconds since the epoch (the reactor's C{seconds()}).
    @param pid: this process's id.
    @param counter: this process's delivery counter, never reused.
    @param host: the host name, unescaped.
    @param size: the file size in bytes (``,S=``).
    @param vsize: the size with CRLF line endings (``,W=``), if known.
    """
    if now < 0 or pid < 0 or counter < 0 or size < 0:
        raise ValueError("Maildir name fields must not be negative")
    if vsize is not None and vsize < 0:
        raise ValueError("Maildir name fields must not be negative")
    sec, usec = divmod(int(now * 1_000_000), 1_000_000)
    name = f"{sec}.M{usec}P{pid}Q{counter}.{escape_host(host)},S={size}"
    if vsize is not None:
        name += f",W={vsize}"
    return name


def split_name(basename: str) -> tuple[str, dict[str, str], str | None]:
    """
    Split a file name into its unique part, its ``,K=V`` fields and its info.

    Fields are only recognised at the end of the part before ``:``, each a
    single letter, ``=`` and a value without ``,``; anything else stays in
    the unique part, so names written by other software parse too.  The
    info is everything after the first ``:`` (``"2,FS"``), or L{None}.
    """
    base, sep, info = basename.partition(INFO_SEPARATOR)
    pieces = base.split(",")
    fields: dict[str, str] = {}
    while len(pieces) > 1 and _is_field(pieces[-1]):
        key, _, value = pieces.pop().partition("=")
        fields.setdefault(key, value)
    return ",".join(pieces), fields, (info if sep else None)


def parse_name(basename: str) -> MaildirName:
    """
    Parse a Maildir file name: C{(unique_part, size or None, info or None)}.

    A ``,S=`` value that is not a decimal number counts as absent: readers
    then fall back to C{stat()}.
    """
    unique, fields, info = split_name(basename)
    return MaildirName(unique, _size(fields.get("S")), info)


def virtual_size(basename: str) -> int | None:
    """The ``,W=`` size (CRLF line endings) of a file name, or L{None}."""
    return _size(split_name(basename)[1].get("W"))


def _is_field(piece: str) -> bool:
    return len(piece) >= 2 and piece[0].isascii() and piece[0].isalpha() and piece[1] == "="


def _size(value: str | None) -> int | None:
    if value is None or not value.isascii() or not value.isdigit():
        return None
    return int(value)
