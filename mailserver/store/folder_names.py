"""
Pure: IMAP mailbox names and how they map to Maildir++ folder directories
(see L{mailserver.store.folders}, which re-exports these names), and the
folder errors with their IMAP response codes.

IMAP names use ``/`` as hierarchy delimiter; on disk the folder ``a/b`` is
``.a.b`` under the user's Maildir and INBOX is the Maildir itself.  Each
component is written in IMAP's modified UTF-7 with ``.`` encoded as
``&AC4-``.  Names are checked strictly (L{normalize_name}) before any path
is built.
"""

from __future__ import annotations

import base64

DELIMITER = "/"
INBOX = "INBOX"
#: Longest mailbox name, in characters, and deepest hierarchy we accept.
MAX_NAME_LENGTH = 255
MAX_DEPTH = 16
#: Longest directory name on disk (NAME_MAX, with room to spare).
MAX_DISK_NAME = 250


#: The SPECIAL-USE folders made on first login: name -> attribute.
DEFAULT_SPECIAL_USE: dict[str, str] = {
    "Sent": "\\Sent",
    "Drafts": "\\Drafts",
    "Trash": "\\Trash",
    "Junk": "\\Junk",
}


class FolderError(Exception):
    """A folder operation was refused; C{code} is an IMAP response code or None."""

    code: str | None = None


class FolderNameError(FolderError):
    """The name is not acceptable as a mailbox name."""

    code = "CANNOT"


class FolderExistsError(FolderError):
    code = "ALREADYEXISTS"


class FolderNotFoundError(FolderError):
    code = "NONEXISTENT"


class FolderInUseError(FolderError):
    code = "CANNOT"


def mutf7_encode(text: str) -> str:
    """IMAP modified UTF-7 (RFC 3501 5.1.3)."""
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            raw = "".join(pending).encode("utf-16-be")
            out.append("&" + base64.b64encode(raw).decode("ascii").rstrip("=").replace("/", ",") + "-")
            pending.clear()

    for ch in text:
        if 0x20 <= ord(ch) <= 0x7E:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            pending.append(ch)
    flush()
    return "".join(out)


def mutf7_decode(text: str, strict: bool = False) -> str:
    """
    Decode modified UTF-7; raises FolderNameError when malformed.

    With C{strict} (names from clients), only the canonical encoding is
    accepted (RFC 3501 5.1.3): printable ASCII spelled as itself, one
    ``&...-`` run per run of other characters, no stray base64 bits, so
    ``&AGEAYgBj-`` is not another spelling of ``abc``, nor ``a&AC8-b`` of
    ``a/b``.
    """
    decoded = _mutf7_decode(text)
    if strict and mutf7_encode(decoded) != text:
        raise FolderNameError("mailbox name is not canonical modified UTF-7")
    return decoded


def _mutf7_decode(text: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch != "&":
            if not 0x20 <= ord(ch) <= 0x7E:
                raise FolderNameError("mailbox name is not valid modified UTF-7")
            out.append(ch)
            i += 1
            continue
        end = text.find("-", i + 1)
        if end < 0:
            raise FolderNameError("mailbox name has an unterminated &-sequence")
        chunk = text[i + 1:end]
        if not chunk:
            out.append("&")
        else:
            b64 = chunk.replace(",", "/")
            b64 += "=" * (-len(b64) % 4)
            try:
                raw = base64.b64decode(b64, validate=True)
                out.append(raw.decode("utf-16-be"))
            except (ValueError, UnicodeDecodeError) as e:
                raise FolderNameError("mailbox name is not valid modified UTF-7") from e
        i = end + 1
    return "".join(out)


def _is_control(ch: str) -> bool:
    code = ord(ch)
    return code < 0x20 or 0x7F <= code < 0xA0 or 0xD800 <= code < 0xE000


def normalize_name(name: str, allow_trailing_delimiter: bool = False) -> str:
    """
    Check a (decoded) mailbox name and return its canonical form.

    A first component spelled any case of ``INBOX`` becomes ``INBOX``.

    @raise FolderNameError: with a reason a user can act on.
    """
    if allow_trailing_delimiter and name.endswith(DELIMITER) and name != DELIMITER:
        name = name[: -len(DELIMITER)]
    if not name:
        raise FolderNameError("empty mailbox name")
    if len(name) > MAX_NAME_LENGTH:
        raise FolderNameError(f"mailbox name longer than {MAX_NAME_LENGTH} characters")
    if any(_is_control(ch) for ch in name):
        raise FolderNameError("control characters are not allowed in mailbox names")
    if "*" in name or "%" in name:
        raise FolderNameError("wildcards * and % are not allowed in mailbox names")
    if name.startswith(DELIMITER):
        raise FolderNameError("mailbox names must not start with /")
    parts = name.split(DELIMITER)
    if len(parts) > MAX_DEPTH:
        raise FolderNameError(f"mailbox hierarchy deeper than {MAX_DEPTH} levels")
    for part in parts:
        if not part:
            raise FolderNameError("empty hierarchy level in mailbox name")
        if part in (".", ".."):
            raise FolderNameError("mailbox name components . and .. are not allowed")
        if part != part.strip():
            raise FolderNameError("mailbox name components must not start or end with spaces")
    if parts[0].upper() == INBOX:
        parts[0] = INBOX
    return DELIMITER.join(parts)


def is_inbox(name: str) -> bool:
    return name == INBOX


def disk_name(name: str) -> str:
    """The directory name (relative to the root) of a normalised name; "" for INBOX."""
    if is_inbox(name):
        return ""
    encoded = "." + ".".join(mutf7_encode(part).replace(".", "&AC4-") for part in name.split(DELIMITER))
    if len(encoded.encode("utf-8")) > MAX_DISK_NAME:
        raise FolderNameError("mailbox name too long")
    return encoded


def name_from_disk(entry: str) -> str | None:
    """The mailbox name of a root directory entry, or None if it is not a folder."""
    if len(entry) < 2 or not entry.startswith(".") or entry.startswith(".."):
        return None
    try:
        parts = [mutf7_decode(part) for part in entry[1:].split(".")]
        return normalize_name(DELIMITER.join(parts))
    except FolderNameError:
        return None


def parent_names(name: str) -> list[str]:
    """``a/b/c`` -> ``["a", "a/b"]``."""
    parts = name.split(DELIMITER)
    return [DELIMITER.join(parts[:i]) for i in range(1, len(parts))]
