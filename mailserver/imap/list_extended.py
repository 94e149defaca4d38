"""
LIST-EXTENDED (RFC 5258) with LIST-STATUS (RFC 5819) and the SPECIAL-USE
selection (RFC 6154): parsing of the extended LIST command and, pure,
the selection of mailboxes it names.

``LIST (SUBSCRIBED RECURSIVEMATCH) "" (pat1 pat2) RETURN (CHILDREN
SUBSCRIBED SPECIAL-USE STATUS (MESSAGES UNSEEN))``: selection options
choose which mailboxes are listed, return options what is said of each.
A plain ``LIST ref pattern`` is the same with no options.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from mailserver.imap.listing import Pattern, list_folders
from mailserver.imap.syntax import ParseError, Reader
from mailserver.store.folder_names import parent_names

SELECTION = frozenset({"SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"})
RETURNS = frozenset({"SUBSCRIBED", "CHILDREN", "SPECIAL-USE", "STATUS"})
#: Patterns one LIST may give.
MAX_PATTERNS = 100


@dataclass(frozen=True)
class ListCommand:
    reference: bytes
    patterns: tuple[bytes, ...]
    selection: frozenset[str] = frozenset()
    returns: frozenset[str] = frozenset()
    status_items: tuple[str, ...] = ()
    extended: bool = False


@dataclass(frozen=True)
class Entry:
    name: str
    attributes: list[str] = field(default_factory=list)
    childinfo: bool = False  # ("CHILDINFO" ("SUBSCRIBED")): RECURSIVEMATCH found a subscribed child


def _options(reader: Reader, allowed: frozenset[str], what: str) -> list[str]:
    options: list[str] = []
    for option in reader.names(what):
        if option not in allowed:
            raise ParseError(f"unknown {what} {option}")
        options.append(option)
        if option == "STATUS" and allowed is RETURNS:
            reader.sp()
            options.extend("STATUS:" + item for item in _status_items(reader))
    return options


def _status_items(reader: Reader) -> list[str]:
    reader.expect(b"(")
    items = [reader.atom("status item").upper()]
    while not reader.maybe(b")"):
        reader.sp()
        items.append(reader.atom("status item").upper())
    return items


def parse(reader: Reader) -> ListCommand:
    """The arguments of LIST, basic (RFC 3501) or extended (RFC 5258)."""
    selection: list[str] = []
    extended = False
    if reader.peek() == b"(":
        selection = _options(reader, SELECTION, "selection option")
        reader.sp()
        extended = True
    reference = reader.astring("reference")
    reader.sp()
    if reader.peek() == b"(":
        reader.expect(b"(")
        patterns = [reader.list_mailbox()]
        while not reader.maybe(b")"):
            reader.sp()
            patterns.append(reader.list_mailbox())
            if len(patterns) > MAX_PATTERNS:
                raise ParseError("too many patterns")
        extended = True
    else:
        patterns = [reader.list_mailbox()]
    returns: list[str] = []
    if not reader.at_end():
        reader.sp()
        if reader.atom("RETURN").upper() != "RETURN":
            raise ParseError("expected RETURN")
        reader.sp()
        returns = _options(reader, RETURNS, "return option")
        extended = True
    reader.end()
    chosen = frozenset(selection)
    if "RECURSIVEMATCH" in chosen and not chosen & {"SUBSCRIBED", "SPECIAL-USE"}:
        raise ParseError("RECURSIVEMATCH needs another selection option")
    status_items = tuple(dict.fromkeys(r[7:] for r in returns if r.startswith("STATUS:")))
    return ListCommand(
        reference,
        tuple(patterns),
        chosen,
        frozenset(r for r in returns if not r.startswith("STATUS:")),
        status_items,
        extended,
    )


def select(
    existing: list[str],
    subscribed: Iterable[str],
    reference: str,
    patterns: list[str],
    selection: frozenset[str],
    returns: frozenset[str],
    special_use: dict[str, str],
) -> list[Entry]:
    """The mailboxes an extended LIST names, with their attributes, INBOX first then by name."""
    matchers = [Pattern(reference, p) for p in patterns]

    def matches(name: str) -> bool:
        return any(m.match(name) for m in matchers)

    present = set(existing)
    subs = set(subscribed)
    parents = {p for name in existing for p in parent_names(name)}
    entries: dict[str, Entry] = {}
    if not selection & {"SUBSCRIBED", "SPECIAL-USE"}:
        for pattern in patterns:
            for name, attrs in list_folders(existing, reference, pattern, special_use):
                entries.setdefault(name, Entry(name, attrs))
    else:
        candidates = subs if "SUBSCRIBED" in selection else present
        for name in candidates:
            if not matches(name):
                continue
            if "SPECIAL-USE" in selection and (name not in present or name not in special_use):
                continue
            entries[name] = Entry(name, [] if name in present else ["\\NonExistent"])
        if "RECURSIVEMATCH" in selection:
            for name in candidates:
                if name in entries or ("SPECIAL-USE" in selection and name not in special_use):
                    continue
                for parent in parent_names(name):
                    if parent in entries:
                        entries[parent] = Entry(parent, entries[parent].attributes, True)
                    elif matches(parent):
                        entries[parent] = Entry(parent, [] if parent in present else ["\\NonExistent"], True)
        for name, entry in entries.items():
            if "CHILDREN" in returns and name in present:
                entry.attributes.append("\\HasChildren" if name in parents else "\\HasNoChildren")
            if name in special_use and name in present:
                entry.attributes.append(special_use[name])
    if "SUBSCRIBED" in selection or "SUBSCRIBED" in returns:
        for name, entry in entries.items():
            if name in subs:
                entry.attributes.append("\\Subscribed")
    names = sorted(entries, key=lambda n: (n != "INBOX", n))
    return [entries[n] for n in names]
