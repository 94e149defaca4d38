"""
Pure: whether a vacation reply may be sent (RFC 5230 section 4.5 and 5,
RFC 3834), the reply and reject messages, and the once-per-period memory.
"""

from __future__ import annotations

import email.utils
import json
import time
from email.header import Header

from mailserver.sieve.actions import Vacation
from mailserver.sieve.message import SieveMessage, addresses

#: Local parts that never get an auto-reply (RFC 3834 3.1.1, Pigeonhole's list).
_SYSTEM_SENDERS = ("mailer-daemon", "listserv", "majordomo", "postmaster", "root")
_LIST_HEADERS = ("list-id", "list-help", "list-subscribe", "list-unsubscribe", "list-post",
                 "list-owner", "list-archive")
#: Most (sender, handle) pairs remembered per user.
MAX_MEMORY = 10000


def refusal(vacation: Vacation, message: SieveMessage, sender: str, own: list[str]) -> str | None:
    """Why no reply may go to C{sender} (None: one may); C{own} are the user's addresses."""
    if not sender:
        return "null sender"
    local = sender.rpartition("@")[0].lower()
    if local in _SYSTEM_SENDERS or local.startswith("owner-") or local.endswith(("-request", "-owner", "-bounces")):
        return "system or list sender"
    mine = {a.lower() for a in own} | {a.lower() for a in vacation.addresses}
    if sender.lower() in mine:
        return "sender is the recipient"
    auto = " ".join(message.header_values("auto-submitted")).strip().lower()
    if auto and not auto.startswith("no"):
        return "Auto-Submitted message"
    precedence = " ".join(message.header_values("precedence")).strip().lower()
    if precedence in ("bulk", "list", "junk"):
        return f"Precedence: {precedence}"
    if any(message.has_header(h) for h in _LIST_HEADERS):
        return "mailing list message"
    if message.has_header("x-auto-response-suppress") and "oof" in " ".join(
        message.header_values("x-auto-response-suppress")
    ).lower():
        return "X-Auto-Response-Suppress"
    listed = addresses(
        [v for h in ("to", "cc", "bcc", "resent-to", "resent-cc") for v in message.raw_header_values(h)]
    )
    if not any(address.lower() in mine for address in listed):
        return "recipient not in To/Cc"
    return None


def reply(vacation: Vacation, message: SieveMessage, sender: str, recipient: str, hostname: str, now: float) -> bytes:
    """The auto-reply to C{sender} (RFC 5230 5, RFC 3834 3.1)."""
    subject = vacation.subject
    if subject is None:
        original = " ".join(message.header_values("subject")) or "your message"
        subject = f"Auto: {original}"
    message_ids = " ".join(message.raw_header_values("message-id")).strip()
    references = " ".join(message.raw_header_values("references")).strip()
    lines = [
        f"From: {vacation.sender or recipient}",
        f"To: <{sender}>",
        f"Subject: {_encode(subject)}",
        f"Date: {email.utils.formatdate(now)}",
        f"Message-ID: {email.utils.make_msgid('vacation', hostname)}",
        "Auto-Submitted: auto-replied (vacation)",
        "Precedence: bulk",
    ]
    if message_ids:
        lines.append(f"In-Reply-To: {message_ids}")
        lines.append(f"References: {(references + ' ' + message_ids).strip()}")
    if vacation.mime:
        head = "\n".join(lines) + "\nMIME-Version: 1.0\n"
        return (head + vacation.reason.replace("\r\n", "\n").lstrip("\n")).encode("utf-8")
    lines += ["MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: 8bit"]
    body = vacation.reason.replace("\r\n", "\n")
    return ("\n".join(lines) + "\n\n" + body + ("" if body.endswith("\n") else "\n")).encode("utf-8")


def rejection(reason: str, message: SieveMessage, sender: str, recipient: str, hostname: str, now: float) -> bytes:
    """The rejection notice for Sieve reject/ereject (RFC 5429 2.1: an MDN-style report)."""
    boundary = f"reject-{int(now)}-{abs(hash((sender, recipient))) % 10**8}"
    original = message.raw.split(b"\n\n", 1)[0].decode("utf-8", "replace")
    subject = " ".join(message.header_values("subject"))
    text = (
        f"From: Mail Delivery System <MAILER-DAEMON@{hostname}>\n"
        f"To: <{sender}>\n"
        f"Subject: {_encode('Rejected: ' + subject)}\n"
        f"Date: {email.utils.formatdate(now)}\n"
        f"Message-ID: {email.utils.make_msgid('reject', hostname)}\n"
        "Auto-Submitted: auto-replied (rejected)\n"
        "MIME-Version: 1.0\n"
        f'Content-Type: multipart/report; report-type=disposition-notification; boundary="{boundary}"\n'
        "\n"
        f"--{boundary}\n"
        "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n"
        f"Your message to <{recipient}> was automatically rejected:\n\n{reason}\n\n"
        f"--{boundary}\n"
        "Content-Type: message/disposition-notification\n\n"
        f"Reporting-UA: {hostname}; mailserver Sieve\n"
        f"Final-Recipient: rfc822; {recipient}\n"
        + (f"Original-Message-ID: {' '.join(message.raw_header_values('message-id'))}\n"
           if message.has_header("message-id") else "")
        + "Disposition: automatic-action/MDN-sent-automatically; deleted\n\n"
        f"--{boundary}\n"
        "Content-Type: text/rfc822-headers\n\n"
        f"{original}\n\n"
        f"--{boundary}--\n"
    )
    return text.encode("utf-8")


def _encode(text: str) -> str:
    return text if text.isascii() else Header(text, "utf-8").encode()


def load_memory(data: bytes | None) -> dict[str, float]:
    """The memory file's content: "handle sender" -> time until which no reply is sent."""
    if not data:
        return {}
    try:
        loaded = json.loads(data)
    except ValueError:
        return {}
    if not isinstance(loaded, dict):
        return {}
    return {str(k): float(v) for k, v in loaded.items() if isinstance(v, (int, float))}


def remember(memory: dict[str, float], key: str, until: float, now: float) -> bytes:
    """C{memory} with C{key} remembered until C{until}, expired entries dropped, bounded; as file bytes."""
    kept = {k: v for k, v in memory.items() if v > now}
    kept[key] = until
    if len(kept) > MAX_MEMORY:
        kept = dict(sorted(kept.items(), key=lambda item: item[1])[-MAX_MEMORY:])
    return json.dumps(kept, sort_keys=True).encode()


def memory_key(vacation: Vacation, sender: str) -> str:
    return f"{vacation.handle} {sender.lower()}"


def is_remembered(memory: dict[str, float], key: str, now: float | None = None) -> bool:
    return memory.get(key, 0.0) > (time.time() if now is None else now)
