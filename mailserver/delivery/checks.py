"""
Postfix cleanup(8)-style content checks: header_checks, mime_header_checks,
nested_header_checks and body_checks over L{mailserver.tables.regexp} tables.

L{ContentChecks} is immutable (rebuild it when a table reloads); each
L{ContentChecks.inspect} call keeps its state in a L{_Scan}.  The work is
pure CPU and linear in the message size, so callers run it in a thread.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from zope.interface import implementer

from mailserver.address import parse_mailbox
from mailserver.delivery.mime import (
    NESTING_LIMIT,
    BodyLine,
    BodyText,
    Header,
    HeaderEnd,
    HeaderKind,
    Uninspectable,
    body_lines,
    decode_header_text,
    line_end,
    walk,
)
from mailserver.errors import MailError
from mailserver.interfaces import IContentCheck
from mailserver.tables.regexp import Match, RuleTable

DEFAULT_BODY_CHECKS_SIZE_LIMIT = 51200  # Postfix body_checks_size_limit
DEFAULT_HEADER_SIZE_LIMIT = 102400  # Postfix header_size_limit
LINE_LENGTH_LIMIT = 2048  # Postfix line_length_limit: longer body lines are checked in pieces
_HEADER_LINE = re.compile(r"[\x21-\x39\x3b-\x7e]+:")
_STATUS = re.compile(r"([45])\.(\d{1,3})\.(\d{1,3})(?:\s+|$)(.*)", re.DOTALL)
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")
_MAX_REPLY = 400
# Hostile messages repeat the same boundary and part header lines thousands
# of times: one inspection remembers the verdict of this many distinct short
# lines per table (matching is a pure function of the text).
_MEMO_ENTRIES = 4096
_MEMO_TEXT_LIMIT = 512


@dataclass(frozen=True)
class CheckEvent:
    """One rule that fired: which table, which line, which rule, which action."""

    table: str  # the parameter: header_checks, mime_header_checks, nested_header_checks, body_checks
    file: str
    line: int
    rule: str
    action: str
    text: str  # the action text with $n expanded
    matched: str  # what the pattern matched, truncated
    decoded: bool = False  # matched the RFC 2047-decoded header text
    note: str = ""  # why an action was not applied, if it was not

    def __str__(self) -> str:
        action = f"{self.action} {self.text}".rstrip()
        decoded = " (decoded)" if self.decoded else ""
        note = f"; {self.note}" if self.note else ""
        return f"{self.table} {self.file}:{self.line}: {action}: matched {self.matched!r}{decoded}{note}; rule: {self.rule}"


@dataclass(frozen=True)
class MimeErrorEvent:
    """A message the checks cannot inspect (Postfix's C{mime-error} reject)."""

    error: str  # Postfix's text, e.g. mime.NESTING_ERROR
    context: str  # the header where it was found, truncated

    def __str__(self) -> str:
        return f"reject: mime-error {self.error}: {self.context}"


@dataclass(frozen=True)
class ContentVerdict:
    """
    What the checks decided, and the (possibly rewritten) message.  For a
    message given as a view of a spool file (not C{bytes}), C{message} is
    that view unchanged and the caller applies C{edits} (C{(start, end,
    replacement)}, in order) itself, streaming.
    """

    message: bytes
    error: MailError | None = None
    discard: bool = False
    hold: bool = False
    redirect: str | None = None
    bcc: tuple[str, ...] = ()
    events: tuple[CheckEvent | MimeErrorEvent, ...] = ()
    hold_reason: str | None = None
    edits: tuple[tuple[int, int, bytes], ...] = ()


@implementer(IContentCheck)
class ContentChecks:
    """
    Postfix's header, MIME header, nested header and body checks.

    A table of C{None} is not configured.  MIME headers (Content-Type and
    friends, MIME-Version) and every header of a multipart part go to
    C{mime_header_checks}; without it, primary MIME headers go to
    C{header_checks} and those of attached messages to
    C{nested_header_checks}.

    While any table is configured, a message whose MIME structure nests
    deeper than C{mime_nesting_limit}, or whose multipart Content-Type is
    too long to parse, is refused (C{550 5.6.0}): its inner parts would
    otherwise pass unchecked.
    """

    name = "cleanup"

    def __init__(
        self,
        header_checks: RuleTable | None = None,
        mime_header_checks: RuleTable | None = None,
        nested_header_checks: RuleTable | None = None,
        body_checks: RuleTable | None = None,
        body_checks_size_limit: int = DEFAULT_BODY_CHECKS_SIZE_LIMIT,
        decode_headers: bool = True,
        header_size_limit: int = DEFAULT_HEADER_SIZE_LIMIT,
        mime_nesting_limit: int = NESTING_LIMIT,
    ) -> None:
        self.header_checks = _configured(header_checks)
        self.mime_header_checks = _configured(mime_header_checks)
        self.nested_header_checks = _configured(nested_header_checks)
        self.body_checks = _configured(body_checks)
        self.body_checks_size_limit = max(0, body_checks_size_limit)
        self.decode_headers = decode_headers
        self.header_size_limit = header_size_limit
        self.mime_nesting_limit = max(0, mime_nesting_limit)

    def __repr__(self) -> str:
        tables = (self.header_checks, self.mime_header_checks, self.nested_header_checks, self.body_checks)
        return f"<ContentChecks {' '.join(repr(t) for t in tables if t is not None) or 'empty'}>"

    def table_for(self, header: Header) -> tuple[str, RuleTable] | None:
        """The parameter name and table that C{header} is checked against."""
        if header.kind is HeaderKind.MULTIPART or header.is_mime:
            if self.mime_header_checks is not None:
                return "mime_header_checks", self.mime_header_checks
            if header.kind is HeaderKind.MULTIPART:
                return None
        if header.kind is HeaderKind.PRIMARY:
            return ("header_checks", self.header_checks) if self.header_checks is not None else None
        if self.nested_header_checks is not None:
            return "nested_header_checks", self.nested_header_checks
        return None

    def inspect(self, envelope: object, message: bytes) -> ContentVerdict:
        """Run every configured check over C{message}; see L{ContentVerdict}."""
        if (
            self.header_checks is None
            and self.mime_header_checks is None
            and self.nested_header_checks is None
            and self.body_checks is None
        ):
            return ContentVerdict(message)
        return _Scan(self, message).run()


def _configured(table: RuleTable | None) -> RuleTable | None:
    """An empty table is the same as none: skip the work."""
    return table if table is not None and len(table) else None


class _Scan:
    """The state of one inspection: verdict so far and the pending edits."""

    def __init__(self, checks: ContentChecks, message: bytes) -> None:
        self.checks = checks
        self.message = message
        self.edits: list[tuple[int, int, bytes]] = []  # (start, end, replacement), in order
        self.events: list[CheckEvent | MimeErrorEvent] = []
        self.error: MailError | None = None
        self.discard = False
        self.hold_reason: str | None = None
        self.redirect: str | None = None
        self.bcc: list[str] = []
        self.memo: dict[tuple[str, str], tuple[Match | None, bool]] = {}

    def run(self) -> ContentVerdict:
        checks = self.checks
        body = checks.body_checks
        limit = checks.body_checks_size_limit if body is not None else 0
        for event in walk(self.message, limit, checks.mime_nesting_limit):
            if isinstance(event, HeaderEnd):
                continue  # the most frequent event in hostile input, and nothing to check
            if isinstance(event, Header):
                chosen = checks.table_for(event)
                if chosen is not None:
                    self._header(event, *chosen)
            elif isinstance(event, BodyText) and body is not None:
                # Only text before the limit (plus one line piece) is ever matched.
                stop = min(event.end, event.start + limit - event.offset + LINE_LENGTH_LIMIT)
                if body.may_match(self.message[event.start : stop].decode("utf-8", "replace")):
                    for line in body_lines(self.message, event):
                        self._body(line, body, limit)
                        if self.error is not None or self.discard:
                            break
            elif isinstance(event, BodyLine) and body is not None:
                self._body(event, body, limit)
            elif isinstance(event, Uninspectable):
                # Postfix's cleanup answers 550 with mime_state.c's 5.6.0 text.
                self.error = MailError(550, "5.6.0", event.error)
                self.events.append(MimeErrorEvent(event.error, _UNPRINTABLE.sub("?", event.text[:100])))
            if self.error is not None or self.discard:
                break
        return ContentVerdict(
            message=self._rewritten(),
            error=self.error,
            discard=self.discard,
            hold=self.hold_reason is not None,
            redirect=self.redirect,
            bcc=tuple(self.bcc),
            events=tuple(self.events),
            hold_reason=self.hold_reason,
            edits=tuple(self.edits),
        )

    def _header(self, header: Header, table_name: str, table: RuleTable) -> None:
        text = header.text[: self.checks.header_size_limit]
        key = (table_name, text)
        remembered = self.memo.get(key)
        if remembered is None:
            found = table.match(text)
            decoded = False
            if found is None and self.checks.decode_headers:
                plain = decode_header_text(text)
                if plain != text:
                    found = table.match(plain)
                    decoded = True
            self._remember(key, found, decoded)
        else:
            found, decoded = remembered
        if found is not None:
            self._act(found, table_name, decoded, header.start, header.end, is_header=True)

    def _remember(self, key: tuple[str, str], found: Match | None, decoded: bool) -> None:
        if len(key[1]) <= _MEMO_TEXT_LIMIT and len(self.memo) < _MEMO_ENTRIES:
            self.memo[key] = (found, decoded)

    def _body(self, line: BodyLine, table: RuleTable, limit: int) -> None:
        text = line.text
        if len(text) <= LINE_LENGTH_LIMIT:
            key = ("body_checks", text)
            remembered = self.memo.get(key)
            if remembered is None:
                found = table.match(text)
                self._remember(key, found, False)
            else:
                found = remembered[0]
        else:
            # Postfix checks a long line as line_length_limit-sized records.
            found = None
            for piece in range(0, len(text), LINE_LENGTH_LIMIT):
                if line.offset + piece >= limit:
                    break
                found = table.match(text[piece : piece + LINE_LENGTH_LIMIT])
                if found is not None:
                    break
        if found is not None:
            self._act(found, "body_checks", False, line.start, line.end, is_header=False)

    def _act(self, found: Match, table: str, decoded: bool, start: int, end: int, is_header: bool) -> None:
        action, text = found.action, found.text
        if action in ("DUNNO", "OK"):
            return
        note = ""
        if action == "REJECT":
            self.error = _reject_error(text)
        elif action == "DISCARD":
            self.discard = True
        elif action == "HOLD":
            if self.hold_reason is None:
                self.hold_reason = text or f"{table} {found.rule.file}:{found.rule.line}"
        elif action == "IGNORE":
            self.edits.append((start, end, b""))
        elif action in ("PREPEND", "REPLACE"):
            if is_header and not _HEADER_LINE.match(text):
                note = f"ignored: {text!r} is not a header line"
            else:
                eol = line_end(self.message, end)
                if action == "PREPEND":
                    self.edits.append((start, start, text.encode("utf-8") + (eol or b"\n")))
                else:
                    self.edits.append((start, end, text.encode("utf-8") + eol))
        elif action in ("REDIRECT", "BCC"):
            try:
                address = str(parse_mailbox(text))
            except MailError as error:
                note = f"ignored: bad address {text!r}: {error.text}"
            else:
                if action == "REDIRECT":
                    self.redirect = address
                elif address not in self.bcc:
                    self.bcc.append(address)
        # WARN: the event below is the whole effect.
        self.events.append(
            CheckEvent(
                table=table,
                file=found.rule.file,
                line=found.rule.line,
                rule=found.rule.source,
                action=action,
                text=text,
                matched=found.matched,
                decoded=decoded,
                note=note,
            )
        )

    def _rewritten(self) -> bytes:
        """The message with the edits applied; the input itself when there are none or it is a view."""
        if not self.edits or not isinstance(self.message, bytes):
            return self.message
        return apply_edits(self.message, self.edits)


def apply_edits(data: bytes, edits: Sequence[tuple[int, int, bytes]]) -> bytes:
    """C{data} with C{(start, end, replacement)} edits (in order) applied."""
    pieces: list[bytes] = []
    position = 0
    for start, end, replacement in edits:
        pieces.append(data[position:start])
        pieces.append(replacement)
        position = end
    pieces.append(data[position:])
    return b"".join(pieces)


def _reject_error(text: str) -> MailError:
    """C{550 5.7.1 text}; a leading C{5.x.y} or C{4.x.y} in the text is used (4 -> 451)."""
    code, enhanced = 550, "5.7.1"
    status = _STATUS.match(text)
    if status is not None:
        klass, subject, detail, text = status.groups()
        enhanced = f"{klass}.{subject}.{detail}"
        code = 451 if klass == "4" else 550
    text = _UNPRINTABLE.sub("?", text.strip())[:_MAX_REPLY]
    return MailError(code, enhanced, text or "message content rejected")
