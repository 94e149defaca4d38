"""
Pure: ENVELOPE and BODYSTRUCTURE of a message, and the summary the folder
index caches (L{describe}).

Values are taken from the message as it is (encoded words stay encoded,
as RFC 3501 wants); only the search fields are decoded.
"""

from __future__ import annotations

import email.errors
import email.header
import email.utils
from datetime import date

from mailserver.imap import parts as mime
from mailserver.imap import wire
from mailserver.imap.sorting import sort_fields
from mailserver.imap.wire import NIL, plist


def nstring(value: bytes | str | None) -> bytes:
    """An nstring of header text (str values are latin-1 decoded bytes)."""
    if isinstance(value, str):
        value = value.encode("latin-1", "replace")
    return wire.nstring(value)


def string(value: bytes | str) -> bytes:
    if isinstance(value, str):
        value = value.encode("latin-1", "replace")
    return wire.string(value)

#: Bump when L{describe}'s output changes: cached summaries are rebuilt.
DESCRIBE_VERSION = "imap-summary-4"

#: The header fields whose decoded values are cached for SEARCH.
SEARCH_FIELDS = ("from", "to", "cc", "bcc", "subject")
#: Of those, the address fields: their addresses are also kept without
#: comments or spaces, so ``SEARCH FROM user@domain`` finds
#: ``<user (comment)@ (comment) domain>``.
ADDRESS_FIELDS = ("from", "to", "cc", "bcc")


# ---------------------------------------------------------------- addresses


def _tokens(text: str) -> list[tuple[str, str]]:
    """
    Lex an address header: (kind, text) with kinds q(uoted) a(tom)
    s(pecial) and c(omment), the comment's text without its parentheses.
    """
    out: list[tuple[str, str]] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in " \t\r\n":
            i += 1
        elif ch == "(":
            depth, buf = 0, []
            while i < n:
                if text[i] == "\\":
                    buf.append(text[i + 1:i + 2])
                    i += 2
                    continue
                if text[i] == "(":
                    depth += 1
                elif text[i] == ")":
                    depth -= 1
                    if depth == 0:
                        i += 1
                        break
                buf.append(text[i])
                i += 1
            out.append(("c", "".join(buf)[1:]))
        elif ch == '"':
            j, buf = i + 1, []
            while j < n and text[j] != '"':
                if text[j] == "\\" and j + 1 < n:
                    j += 1
                buf.append(text[j])
                j += 1
            out.append(("q", "".join(buf)))
            i = j + 1
        elif ch == ")":
            i += 1  # a stray ")" outside a comment is dropped (it stops atoms, so it must be consumed here)
        elif ch in "<>,:;@.[]":
            if ch == "[":
                j = text.find("]", i)
                j = n if j < 0 else j + 1
                out.append(("a", text[i:j]))
                i = j
            else:
                out.append(("s", ch))
                i += 1
        else:
            j = i
            while j < n and text[j] not in ' \t\r\n()"<>,:;@.[]':
                j += 1
            out.append(("a", text[i:j]))
            i = j
    return out


def _spec(tokens: list[tuple[str, str]]) -> tuple[str | None, str | None]:
    """(local part, domain) of addr-spec tokens."""
    text, at = [], None
    for kind, value in tokens:
        if kind == "s" and value == "@" and at is None:
            at = len(text)
        text.append(('"%s"' % value.replace("\\", "\\\\").replace('"', '\\"')) if kind == "q" else value)
    if at is None:
        local = "".join(text)
        return (local or None), None
    return "".join(text[:at]) or None, "".join(text[at + 1:]) or None


def _phrase(tokens: list[tuple[str, str]]) -> str | None:
    words, previous_dot = [], False
    for kind, value in tokens:
        if kind == "c":
            continue
        if kind == "s" and value == ".":
            if words:
                words[-1] += "."
            previous_dot = True
            continue
        if previous_dot and words and kind == "a":
            words[-1] += value
        else:
            words.append(value)
        previous_dot = False
    phrase = " ".join(words).strip()
    return phrase or None


def _mailbox(tokens: list[tuple[str, str]]) -> tuple[str | None, str | None, str | None, str | None] | None:
    """
    (name, route, local part, domain); comments are ignored, except that
    ``user@domain (Real Name)`` takes its name from the comment, as the
    old form RFC 822 used and Dovecot reads it.
    """
    comments = [value.strip() for kind, value in tokens if kind == "c" and value.strip()]
    tokens = [token for token in tokens if token[0] != "c"]
    if not tokens:
        return None
    if ("s", "<") in tokens:
        lt = tokens.index(("s", "<"))
        try:
            gt = tokens.index(("s", ">"), lt)
        except ValueError:
            gt = len(tokens)
        name = _phrase(tokens[:lt])
        inner = tokens[lt + 1:gt]
        route = None
        if ("s", ":") in inner:
            colon = inner.index(("s", ":"))
            route = "".join(v for _, v in inner[:colon]) or None
            inner = inner[colon + 1:]
        local, domain = _spec(inner)
        return name, route, local, domain
    local, domain = _spec(tokens)
    return (comments[-1] if comments else None), None, local, domain


def parse_addresses(value: bytes) -> list[tuple]:
    """
    An address list as IMAP address tuples (name, adl, mailbox, host).

    Groups become C{(None, None, group, None)} ... C{(None, None, None, None)}.
    """
    tokens = _tokens(value.decode("latin-1"))
    result: list[tuple] = []
    current: list[tuple[str, str]] = []
    in_group, depth = False, 0

    def flush() -> None:
        mailbox = _mailbox(current)
        if mailbox is not None and (mailbox[2] or mailbox[3]):
            name, route, local, domain = mailbox
            result.append((name, route, local, domain if domain is not None else ""))
        current.clear()

    for kind, text in tokens:
        if kind == "s" and text == "<":
            depth += 1
        elif kind == "s" and text == ">":
            depth = max(0, depth - 1)
        if depth == 0 and kind == "s" and text == ",":
            flush()
        elif depth == 0 and kind == "s" and text == ":" and not in_group:
            result.append((None, None, _phrase(current) or "", None))
            current.clear()
            in_group = True
        elif depth == 0 and kind == "s" and text == ";" and in_group:
            flush()
            result.append((None, None, None, None))
            in_group = False
        else:
            current.append((kind, text))
    flush()
    if in_group:
        result.append((None, None, None, None))
    return result


def _address_list(value: bytes | None) -> bytes:
    if value is None:
        return NIL
    addresses = parse_addresses(value)
    if not addresses:
        return NIL
    return plist(plist(nstring(part) for part in address) for address in addresses)


# ---------------------------------------------------------------- envelope


def envelope(entity: mime.Entity) -> bytes:
    """The ENVELOPE of a message entity (RFC 3501 7.4.2)."""
    h = entity.header
    sender = h("sender") or h("from")
    reply_to = h("reply-to") or h("from")
    return plist(
        [
            nstring(h("date")),
            nstring(h("subject")),
            _address_list(h("from")),
            _address_list(sender),
            _address_list(reply_to),
            _address_list(h("to")),
            _address_list(h("cc")),
            _address_list(h("bcc")),
            nstring(h("in-reply-to")),
            nstring(h("message-id")),
        ]
    )


# ---------------------------------------------------------------- body structure


def _params(params: list[tuple[str, str]]) -> bytes:
    if not params:
        return NIL
    return plist(b" ".join((string(k), string(v))) for k, v in params)


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")


def _disposition(entity: mime.Entity) -> bytes:
    value = entity.header("content-disposition")
    if value is None:
        return NIL
    kind, _, rest = value.decode("latin-1").partition(";")
    kind = kind.strip()
    if not kind:
        return NIL
    return plist([string(kind), _params(mime.parse_params(rest))])


def _language(entity: mime.Entity) -> bytes:
    value = entity.header("content-language")
    if value is None:
        return NIL
    tags = [t.strip() for t in value.decode("latin-1").split(",") if t.strip()]
    if not tags:
        return NIL
    if len(tags) == 1:
        return string(tags[0])
    return plist(string(t) for t in tags)


def _lines(data: bytes, entity: mime.Entity) -> int:
    """Text lines of the body: line ends, plus an unterminated last line."""
    count = data.count(b"\n", entity.body_start, entity.end)
    if entity.end > entity.body_start and data[entity.end - 1:entity.end] != b"\n":
        count += 1
    return count


def body_structure(data: bytes, entity: mime.Entity, extended: bool) -> bytes:
    """BODYSTRUCTURE (C{extended}) or BODY of C{entity} within C{data}."""
    if entity.children:
        items = [b"".join(body_structure(data, child, extended) for child in entity.children)]
        items.append(string(entity.subtype))
        if extended:
            items += [_params(entity.params), _disposition(entity), _language(entity), nstring(_text(entity.header("content-location")))]
        return plist(items)
    encoding = entity.header("content-transfer-encoding")
    params = entity.params
    if entity.maintype.lower() == "text" and entity.param("charset") is None:
        params = params + [("charset", "us-ascii")]
    items = [
        string(entity.maintype),
        string(entity.subtype),
        _params(params),
        nstring(_text(entity.header("content-id"))),
        nstring(_text(entity.header("content-description"))),
        string(_text(encoding) or "7bit"),
        b"%d" % (entity.end - entity.body_start),
    ]
    if entity.message is not None:
        items += [
            envelope(entity.message),
            body_structure(data, entity.message, extended),
            b"%d" % _lines(data, entity),
        ]
    elif entity.maintype.lower() == "text":
        items.append(b"%d" % _lines(data, entity))
    if extended:
        items += [
            nstring(_text(entity.header("content-md5"))),
            _disposition(entity),
            _language(entity),
            nstring(_text(entity.header("content-location"))),
        ]
    return plist(items)


# ---------------------------------------------------------------- search fields


def decode_header(value: bytes) -> str:
    """A header value with RFC 2047 words decoded; never raises."""
    text = value.decode("utf-8", "replace") if _is_utf8(value) else value.decode("latin-1")
    try:
        return str(email.header.make_header(email.header.decode_header(text)))
    except (ValueError, LookupError, UnicodeError, email.errors.HeaderParseError):
        return text


def address_text(value: bytes) -> str:
    """An address header as ``Name <local@domain>, ...``: comments and folding gone."""
    out = []
    for name, _route, local, domain in parse_addresses(value):
        if local is None or domain is None:
            continue  # group markers
        spec = f"{local}@{domain}" if domain else local
        out.append(f"{decode_header(name.encode('latin-1'))} <{spec}>" if name else f"<{spec}>")
    return ", ".join(out)


def _is_utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def sent_date(value: bytes | None) -> date | None:
    """The calendar date of a Date: header in its own zone (SENTON/SENTSINCE/SENTBEFORE)."""
    if value is None:
        return None
    parsed = email.utils.parsedate_tz(value.decode("latin-1"))
    if parsed is None:
        return None
    try:
        return date(parsed[0], parsed[1], parsed[2])
    except ValueError:
        return None


def describe(data: bytes) -> dict:
    """
    What the folder index keeps for a message (C{data} with CRLF line ends):
    its size, ENVELOPE, BODY and BODYSTRUCTURE in wire form, decoded
    search fields and the sent date as an ordinal.
    """
    root = mime.parse(data)
    sent = sent_date(root.header("date"))
    fields = {}
    for name in SEARCH_FIELDS:
        values = root.headers(name)
        if values:
            fields[name] = " ".join(decode_header(v) for v in values)
            if name in ADDRESS_FIELDS:
                fields[name] += "".join("\n" + address_text(v) for v in values)
    return {
        "size": len(data),
        "envelope": envelope(root).decode("latin-1"),
        "body": body_structure(data, root, False).decode("latin-1"),
        "bodystructure": body_structure(data, root, True).decode("latin-1"),
        "fields": fields,
        "sent": sent.toordinal() if sent else None,
        "sort": sort_fields(root.header, decode_header, first_mailbox),
    }


def first_mailbox(value: bytes) -> str:
    """SORT's FROM/TO/CC key: the local part of the first address (RFC 5256 addr-mailbox)."""
    for _name, _route, local, _domain in parse_addresses(value):
        if local is not None:  # a group's name counts, as in the ENVELOPE
            return local
    return ""

