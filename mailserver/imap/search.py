"""
Pure: SEARCH keys (RFC 3501 6.4.4) parsed into a tree and evaluated.

Criteria on flags, sizes, dates, UIDs and the cached header fields need
only the folder index; BODY, TEXT and HEADER on other fields need the
message, which L{needs_content} tells the caller to load (in a thread).
"""

from __future__ import annotations

import email
import email.policy
from dataclasses import dataclass
from datetime import date
from typing import Any, Callable

from mailserver.imap import parts as mime
from mailserver.imap.structure import SEARCH_FIELDS, decode_header
from mailserver.imap.syntax import ParseError, Reader
from mailserver.imap.wire import local_date

#: Charsets SEARCH accepts (others get NO [BADCHARSET]).
CHARSETS = ("US-ASCII", "UTF-8")
_MAX_DEPTH = 50

Node = tuple


class BadCharset(ValueError):
    """SEARCH CHARSET names a charset we do not support."""


_FLAG_KEYS = {
    "ANSWERED": ("\\Answered", True),
    "DELETED": ("\\Deleted", True),
    "DRAFT": ("\\Draft", True),
    "FLAGGED": ("\\Flagged", True),
    "SEEN": ("\\Seen", True),
    "RECENT": ("\\Recent", True),
    "UNANSWERED": ("\\Answered", False),
    "UNDELETED": ("\\Deleted", False),
    "UNDRAFT": ("\\Draft", False),
    "UNFLAGGED": ("\\Flagged", False),
    "UNSEEN": ("\\Seen", False),
    "OLD": ("\\Recent", False),
}
_STRING_KEYS = {"BCC", "BODY", "CC", "FROM", "SUBJECT", "TEXT", "TO"}
_DATE_KEYS = {
    "BEFORE": ("internal", "<"),
    "ON": ("internal", "="),
    "SINCE": ("internal", ">="),
    "SENTBEFORE": ("sent", "<"),
    "SENTON": ("sent", "="),
    "SENTSINCE": ("sent", ">="),
}


def parse_search(reader: Reader) -> tuple[str, Node]:
    """``[CHARSET x SP] search-key *(SP search-key)`` -> (charset, tree)."""
    charset = "US-ASCII"
    if reader.peek().upper() == b"C":
        mark = (reader._i, reader._j)
        word = reader.atom("search key").upper()
        if word == "CHARSET":
            reader.sp()
            charset = parse_charset(reader)
            reader.sp()
        else:
            reader._i, reader._j = mark
    return charset, parse_keys(reader, charset)


def parse_keys(reader: Reader, charset: str) -> Node:
    """``search-key *(SP search-key)`` to the end of the command (SORT and THREAD name the charset first)."""
    keys = [_key(reader, charset, 0)]
    while not reader.at_end():
        reader.sp()
        keys.append(_key(reader, charset, 0))
    return ("and", keys) if len(keys) > 1 else keys[0]


def parse_charset(reader: Reader) -> str:
    """SORT's and THREAD's mandatory charset; L{BadCharset} if we do not know it."""
    charset = reader.astring("charset").decode("ascii", "replace").upper()
    if charset not in CHARSETS:
        raise BadCharset(charset)
    return charset


def _text(reader: Reader, charset: str) -> str:
    raw = reader.astring("search string")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _key(reader: Reader, charset: str, depth: int) -> Node:
    if depth > _MAX_DEPTH:
        raise ParseError("search keys nested too deeply")
    if reader.maybe(b"("):
        keys = [_key(reader, charset, depth + 1)]
        while not reader.maybe(b")"):
            reader.sp()
            keys.append(_key(reader, charset, depth + 1))
        return ("and", keys)
    first = reader.peek()
    if first.isdigit() or first in (b"*", b"$"):
        return ("seq", reader.seqset())
    word = reader.atom("search key").upper()
    if word == "ALL":
        return ("all",)
    if word == "NEW":
        return ("and", [("flag", "\\Recent", True), ("flag", "\\Seen", False)])
    if word in _FLAG_KEYS:
        flag, present = _FLAG_KEYS[word]
        return ("flag", flag, present)
    reader.sp()
    if word in ("KEYWORD", "UNKEYWORD"):
        return ("flag", reader.atom("keyword"), word == "KEYWORD")
    if word in _STRING_KEYS:
        return ("string", word.lower(), _text(reader, charset))
    if word == "HEADER":
        name = reader.astring("header field name").decode("latin-1").lower()
        reader.sp()
        return ("header", name, _text(reader, charset))
    if word in _DATE_KEYS:
        which, op = _DATE_KEYS[word]
        return ("date", which, op, reader.date())
    if word in ("LARGER", "SMALLER"):
        return ("size", ">" if word == "LARGER" else "<", reader.number("size"))
    if word == "UID":
        return ("uid", reader.seqset())
    if word == "MODSEQ":
        # RFC 7162: [entry-name entry-type-req] mod-sequence-valzer; we keep
        # one MODSEQ per message, so the entry only has to be well formed.
        if reader.peek() == b'"':
            reader.string("entry name")
            reader.sp()
            kind = reader.atom("entry type").lower()
            if kind not in ("priv", "shared", "all"):
                raise ParseError(f"bad MODSEQ entry type {kind}")
            reader.sp()
        return ("modseq", reader.modseq())
    if word == "NOT":
        return ("not", _key(reader, charset, depth + 1))
    if word == "OR":
        a = _key(reader, charset, depth + 1)
        reader.sp()
        return ("or", a, _key(reader, charset, depth + 1))
    raise ParseError(f"unknown search key {word}")


def _any_key(node: Node, test) -> bool:
    """Whether C{test} holds for a key of the tree (depth bounded by the parser)."""
    kind = node[0]
    if kind == "and":
        return any(_any_key(n, test) for n in node[1])
    if kind == "or":
        return _any_key(node[1], test) or _any_key(node[2], test)
    if kind == "not":
        return _any_key(node[1], test)
    return test(node)


def needs_content(node: Node) -> bool:
    """True if evaluating C{node} needs the message text."""
    return _any_key(node, lambda key: (key[0] == "string" and key[1] in ("body", "text"))
                    or (key[0] == "header" and key[1] not in SEARCH_FIELDS))


def uses_modseq(node: Node) -> bool:
    """True if C{node} has a MODSEQ key (the response then carries the highest MODSEQ found)."""
    return _any_key(node, lambda key: key[0] == "modseq")


@dataclass
class Facts:
    """What one message offers the evaluator."""

    seq: int
    uid: int
    flags: frozenset[str]
    internal: float
    size: int
    summary: dict[str, Any]
    #: C{content(uid)}: the message text (one reader shared by all facts of a search).
    content: Callable[[int], bytes | None] = lambda uid: None
    modseq: int = 0


@dataclass
class Context:
    """Mailbox-wide values: ``*`` for sequence numbers and for UIDs."""

    last_seq: int
    last_uid: int
    #: UIDs of the saved search result, for ``$``.
    saved: frozenset[int] = frozenset()


def matches(node: Node, facts: Facts, ctx: Context, cache: dict | None = None) -> bool:
    cache = {} if cache is None else cache
    kind = node[0]
    if kind == "all":
        return True
    if kind == "and":
        return all(matches(n, facts, ctx, cache) for n in node[1])
    if kind == "or":
        return matches(node[1], facts, ctx, cache) or matches(node[2], facts, ctx, cache)
    if kind == "not":
        return not matches(node[1], facts, ctx, cache)
    if kind == "flag":
        folded = node[1].lower()
        return any(f.lower() == folded for f in facts.flags) == node[2]
    if kind in ("seq", "uid") and node[1].saved:
        return facts.uid in ctx.saved
    if kind == "seq":
        return node[1].contains(facts.seq, ctx.last_seq)
    if kind == "uid":
        return node[1].contains(facts.uid, ctx.last_uid)
    if kind == "modseq":
        return facts.modseq >= node[1]
    if kind == "size":
        return facts.size > node[2] if node[1] == ">" else facts.size < node[2]
    if kind == "date":
        return _date_matches(node, facts)
    if kind == "string":
        return _string_matches(node[1], node[2], facts, cache)
    if kind == "header":
        return _header_matches(node[1], node[2], facts, cache)
    raise ValueError(f"unknown search node {kind}")


def _date_matches(node: Node, facts: Facts) -> bool:
    _, which, op, wanted = node
    day: date | None = None
    if which == "sent" and facts.summary.get("sent"):
        day = date.fromordinal(facts.summary["sent"])
    if day is None:
        day = local_date(facts.internal)
    if op == "<":
        return day < wanted
    if op == "=":
        return day == wanted
    return day >= wanted


def _contains(haystack: str, needle: str) -> bool:
    return needle.casefold() in haystack.casefold()


def _string_matches(key: str, needle: str, facts: Facts, cache: dict) -> bool:
    if key in SEARCH_FIELDS:
        value = facts.summary.get("fields", {}).get(key)
        return value is not None and _contains(value, needle)
    texts = _texts(facts, cache)
    if texts is None:
        return False
    header, body = texts
    if key == "body":
        return _contains(body, needle)
    return _contains(header, needle) or _contains(body, needle)


def _header_matches(name: str, needle: str, facts: Facts, cache: dict) -> bool:
    if name in SEARCH_FIELDS:
        value = facts.summary.get("fields", {}).get(name)
        return value is not None and _contains(value, needle)
    data = _content(facts, cache)
    if data is None:
        return False
    root = mime.parse(data)
    values = root.headers(name)
    return any(_contains(decode_header(v), needle) for v in values)


def _content(facts: Facts, cache: dict) -> bytes | None:
    if "content" not in cache:
        cache["content"] = facts.content(facts.uid)
    return cache["content"]


def _texts(facts: Facts, cache: dict) -> tuple[str, str] | None:
    """(decoded header, decoded text of the body parts), computed once per message."""
    if "texts" in cache:
        return cache["texts"]
    data = _content(facts, cache)
    if data is None:
        cache["texts"] = None
        return None
    root = mime.parse(data)
    header = "\n".join(
        name + ": " + decode_header(mime.field_value(raw)) for name, raw in root.fields
    )
    message = email.message_from_bytes(data, policy=email.policy.compat32)
    chunks = []
    for part in message.walk():
        if part.is_multipart():
            continue
        if part.get_content_maintype() not in ("text", "message"):
            continue
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            continue
        charset = part.get_content_charset() or "utf-8"
        try:
            chunks.append(payload.decode(charset, "replace"))
        except LookupError:
            chunks.append(payload.decode("latin-1"))
    body = "\n".join(chunks)
    cache["texts"] = (header, body)
    return cache["texts"]


def search(node: Node, facts_list: list[Facts], ctx: Context) -> list[Facts]:
    """The messages of C{facts_list} that match."""
    return [f for f in facts_list if matches(node, f, ctx, {})]

