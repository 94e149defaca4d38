"""
Pure: Dovecot-style quota rules -> limits; usage against limits.

A rule is C{*:storage=SIZE}, C{*:messages=N} or both joined by C{:}
(C{*:storage=1G:messages=50000}); C{bytes=} is a synonym of C{storage=}.
SIZE takes Dovecot's units B, k, M, G, T (powers of 1024; no unit: bytes).
C{none}, an empty rule or a limit of 0 means no limit.  This is the
value of main.cf's C{quota_rule} and of the passwd-file extra field
C{userdb_quota_rule} (or C{quota_rule}) that overrides it per user.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mailserver.errors import MailError

_SIZE = re.compile(r"(\d+)\s*([bkmgt]?)b?\Z", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
#: Extra fields of the passwd-file that give a user's own rule, first found wins.
USER_FIELDS = ("userdb_quota_rule", "quota_rule")


@dataclass(frozen=True)
class QuotaLimits:
    """Storage (bytes) and message-count limits; 0 is no limit."""

    storage: int = 0
    messages: int = 0

    @property
    def limited(self) -> bool:
        return bool(self.storage or self.messages)

    def maildirsize_line(self) -> str:
        """The first line of a Maildir++ C{maildirsize} file: C{NS,NC}."""
        return f"{self.storage}S,{self.messages}C"


UNLIMITED = QuotaLimits()


def parse_size(text: str) -> int:
    match = _SIZE.match(text.strip())
    if match is None:
        raise ValueError(f"bad quota size {text!r} (expected a number with unit B, k, M, G or T)")
    return int(match.group(1)) * _UNITS[match.group(2).lower()]


def parse_quota_rule(text: str) -> QuotaLimits:
    """C{*:storage=1G:messages=1000} -> L{QuotaLimits}; ValueError when malformed."""
    text = text.strip()
    if not text or text.lower() == "none":
        return UNLIMITED
    mailbox, _, rest = text.partition(":")
    if mailbox != "*":
        raise ValueError(f"bad quota rule {text!r}: only the '*' (whole account) rule is supported")
    storage = messages = 0
    for item in rest.split(":"):
        name, equals, value = item.partition("=")
        name = name.strip().lower()
        if not equals:
            if name in ("ignore", "none", ""):
                continue
            raise ValueError(f"bad quota rule item {item!r}: expected storage=SIZE or messages=N")
        if name in ("storage", "bytes"):
            storage = parse_size(value)
        elif name == "messages":
            if not value.strip().isdigit():
                raise ValueError(f"bad quota message count {value!r}")
            messages = int(value)
        else:
            raise ValueError(f"unknown quota rule item {name!r} (storage, bytes, messages)")
    return QuotaLimits(storage, messages)


def user_rule_problem(extra: dict[str, str]) -> str | None:
    """What is wrong with a user's own quota rule (passwd-file extra field), or None."""
    for field in USER_FIELDS:
        if field in extra:
            try:
                parse_quota_rule(extra[field])
            except ValueError as error:
                return f"{field}: {error}"
            return None
    return None


def user_limits(default: QuotaLimits, extra: dict[str, str]) -> QuotaLimits:
    """A user's limits: their passwd-file rule if any, else C{default}."""
    for field in USER_FIELDS:
        if field in extra:
            return parse_quota_rule(extra[field])
    return default


class LimitsByRecord:
    """
    Each user's limits (L{user_limits}) parsed once per passwd-file record,
    not per message.  The cache holds the record it was parsed from and is
    used only while the user database returns that very object: reloading
    the passwd-file makes new records, so a changed rule takes effect with
    the reload, as it did when every message parsed it.
    """

    def __init__(self, default: QuotaLimits, size: int = 100_000) -> None:
        self.default = default
        self.size = size
        self._parsed: dict[str, tuple[object, QuotaLimits]] = {}  # user -> (record, its limits)

    def __call__(self, user: str, record: object | None) -> QuotaLimits:
        """C{user}'s limits from C{record} (None: no such user, the default); ValueError as L{user_limits}."""
        if record is None:
            return self.default
        seen = self._parsed.get(user)
        if seen is not None and seen[0] is record:
            return seen[1]
        limits = user_limits(self.default, getattr(record, "extra", None) or {})
        if len(self._parsed) >= self.size:
            self._parsed.clear()
        self._parsed[user] = (record, limits)
        return limits


@dataclass(frozen=True)
class Usage:
    """Bytes and messages used."""

    storage: int = 0
    messages: int = 0

    def percent(self, limits: QuotaLimits) -> int:
        """The larger of the storage and message percentages (0 without limits)."""
        shares = [0]
        if limits.storage:
            shares.append(self.storage * 100 // limits.storage)
        if limits.messages:
            shares.append(self.messages * 100 // limits.messages)
        return max(shares)

    def exceeds(self, limits: QuotaLimits, size: int = 0, count: int = 0) -> bool:
        """True if adding C{size} bytes in C{count} messages goes past a limit."""
        if limits.storage and self.storage + size > limits.storage:
            return True
        return bool(limits.messages and self.messages + count > limits.messages)


def over_quota(user: str) -> MailError:
    return MailError(552, "5.2.2", f"<{user}>: Mailbox full, over quota")
