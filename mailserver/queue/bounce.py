"""
Pure: RFC 3464 delivery status notifications (bounces and delay warnings).

A DSN is a C{multipart/report; report-type=delivery-status} with three
parts: a human-readable explanation, the machine-readable
C{message/delivery-status} (Reporting-MTA, Arrival-Date, and per recipient
Final-Recipient, Action, Status, Remote-MTA, Diagnostic-Code quoting the
remote's reply), and the original message's header as
C{text/rfc822-headers}.  It comes from C{MAILER-DAEMON@myhostname} and is
sent with the null envelope sender, so it can never cause another bounce.
Whether to send one at all (never to the null sender) is the queue
manager's decision, not this module's.
"""

from __future__ import annotations

import email.utils
import hashlib
import re
import time
from dataclasses import dataclass
from typing import Sequence

from mailserver.header_block import header_end

FAILED = "failed"
DELAYED = "delayed"

_UNPRINTABLE = re.compile(r"[^\x20-\x7e]+")
_STATUS = re.compile(r"[245]\.\d{1,3}\.\d{1,3}\Z")
_WIDTH = 78


@dataclass(frozen=True)
class RecipientReport:
    """What to say about one recipient in a DSN."""

    recipient: str
    action: str  # FAILED or DELAYED
    status: str  # RFC 3463 code, "5.1.1"
    text: str = ""  # our explanation for people: "host mx[1.2.3.4] said: ..."
    remote_mta: str = ""  # host name of the remote MTA that replied
    diagnostic: str = ""  # the remote's SMTP reply, "550 5.1.1 User unknown"
    last_attempt: float | None = None
    will_retry_until: float | None = None  # for DELAYED


def build_dsn(
    *,
    reporting_mta: str,
    queue_id: str,
    sender: str,
    to: str,
    arrival: float,
    now: float,
    reports: Sequence[RecipientReport],
    original: bytes,
    postmaster_copy: bool = False,
) -> bytes:
    """
    The DSN as message bytes (lines end in LF) for the envelope sender C{to}.

    @param reporting_mta: C{myhostname}.
    @param sender: the original message's envelope sender (C{""} for null),
        shown in the report.
    @param to: who the DSN is for: the original sender, or postmaster for a
        bounce that could not be returned (C{postmaster_copy}).
    @param original: the original message; only its header is included.
    @raise ValueError: with no reports or an unknown action.
    """
    if not reports:
        raise ValueError("a DSN needs at least one recipient report")
    for report in reports:
        if report.action not in (FAILED, DELAYED):
            raise ValueError(f"unknown DSN action {report.action!r}")
    delayed_only = all(r.action == DELAYED for r in reports)
    headers_part = original_headers(original)
    boundary = _boundary(queue_id, now, reporting_mta, headers_part)
    eight_bit = any(b > 0x7E for b in headers_part)
    if delayed_only:
        subject = "Delayed Mail (still being retried)"
    elif postmaster_copy:
        subject = "Undelivered Mail Returned to Sender (postmaster copy)"
    else:
        subject = "Undelivered Mail Returned to Sender"
    stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(now))
    digest = hashlib.sha1(
        "\n".join(r.recipient for r in reports).encode("utf-8", "replace")
    ).hexdigest()[:8]
    top = [
        f"From: MAILER-DAEMON@{reporting_mta} (Mail Delivery System)",
        f"To: {_clean(to)}",
        f"Subject: {subject}",
        f"Date: {email.utils.formatdate(now, localtime=True)}",
        f"Message-ID: <{stamp}.{queue_id}.{digest}@{reporting_mta}>",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        "Content-Type: multipart/report; report-type=delivery-status;",
        f'\tboundary="{boundary}"',
        f"Content-Transfer-Encoding: {'8bit' if eight_bit else '7bit'}",
        "",
        "This is a MIME-encapsulated message.",
        "",
        f"--{boundary}",
        "Content-Description: Notification",
        "Content-Type: text/plain; charset=us-ascii",
        "",
        human_text(reporting_mta, reports, delayed_only, postmaster_copy),
        f"--{boundary}",
        "Content-Description: Delivery report",
        "Content-Type: message/delivery-status",
        "",
        delivery_status(reporting_mta, queue_id, sender, arrival, reports),
        f"--{boundary}",
        "Content-Description: Undelivered Message Headers",
        "Content-Type: text/rfc822-headers",
        f"Content-Transfer-Encoding: {'8bit' if eight_bit else '7bit'}",
        "",
    ]
    tail = f"\n--{boundary}--\n".encode("ascii")
    return "\n".join(top).encode("ascii") + b"\n" + headers_part + tail


def human_text(
    reporting_mta: str,
    reports: Sequence[RecipientReport],
    delayed_only: bool,
    postmaster_copy: bool = False,
) -> str:
    """The first part, worded like Postfix's so people recognise it."""
    lines = [f"This is the mail system at host {reporting_mta}.", ""]
    if delayed_only:
        lines += [
            "####################################################################",
            "# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #",
            "####################################################################",
            "",
            "Your message could not be delivered for some time. It will be",
            "retried until it is too old. The headers of your message are",
            "attached below.",
        ]
    elif postmaster_copy:
        lines += [
            "A message that could not be delivered could not be returned to its",
            "sender either. The report and the message's headers are below.",
        ]
    else:
        lines += [
            "I'm sorry to have to inform you that your message could not",
            "be delivered to one or more recipients. The headers of your",
            "message are attached below.",
            "",
            "For further assistance, please send mail to postmaster.",
            "",
            "If you do so, please include this problem report.",
        ]
    lines += ["", "                   The mail system", ""]
    for report in reports:
        reason = report.text or report.diagnostic or report.status
        lines.append(_fold(f"<{_clean(report.recipient)}>: {_clean(reason)}", "    "))
    return "\n".join(lines) + "\n"


def delivery_status(
    reporting_mta: str,
    queue_id: str,
    sender: str,
    arrival: float,
    reports: Sequence[RecipientReport],
) -> str:
    """The C{message/delivery-status} body: per-message fields, then one block per recipient."""
    blocks = [
        "\n".join(
            [
                f"Reporting-MTA: dns; {reporting_mta}",
                f"X-Mailserver-Queue-ID: {queue_id}",
                f"X-Mailserver-Sender: rfc822; {_clean(sender)}".rstrip(),
                f"Arrival-Date: {email.utils.formatdate(arrival, localtime=True)}",
            ]
        )
    ]
    for report in reports:
        status = report.status if _STATUS.match(report.status) else _default_status(report.action)
        fields = [
            f"Final-Recipient: rfc822; {_clean(report.recipient)}",
            f"Action: {report.action}",
            f"Status: {status}",
        ]
        if report.remote_mta:
            fields.append(f"Remote-MTA: dns; {_clean(report.remote_mta)}")
        if report.diagnostic:
            fields.append(_fold(f"Diagnostic-Code: smtp; {_clean(report.diagnostic)}"))
        elif report.text:
            fields.append(_fold(f"Diagnostic-Code: X-Mailserver; {_clean(report.text)}"))
        if report.last_attempt is not None:
            fields.append(
                f"Last-Attempt-Date: {email.utils.formatdate(report.last_attempt, localtime=True)}"
            )
        if report.action == DELAYED and report.will_retry_until is not None:
            fields.append(
                f"Will-Retry-Until: {email.utils.formatdate(report.will_retry_until, localtime=True)}"
            )
        blocks.append("\n".join(fields))
    return "\n\n".join(blocks) + "\n"


def original_headers(message: bytes) -> bytes:
    """The header block of C{message} (LF line ends, ending in LF), or C{b""}."""
    message = message.replace(b"\r\n", b"\n")
    headers = message[: header_end(message)]
    if headers and not headers.endswith(b"\n"):
        headers += b"\n"
    return headers


def _default_status(action: str) -> str:
    return "4.0.0" if action == DELAYED else "5.0.0"


def _boundary(queue_id: str, now: float, reporting_mta: str, content: bytes) -> str:
    """A boundary that does not occur in C{content}, as Postfix builds them."""
    base = f"{queue_id}.{int(now)}/{reporting_mta}"
    candidate, n = base, 0
    while candidate.encode("ascii", "replace") in content:
        n += 1
        candidate = f"{base}/{n}"
    return candidate


def _clean(text: str) -> str:
    """One line of printable ASCII: DSN fields and the notice are 7-bit text."""
    return _UNPRINTABLE.sub(" ", text).strip()


def _fold(line: str, indent: str = " ") -> str:
    """Fold a long line at spaces to C{_WIDTH} columns, continuations indented."""
    if len(line) <= _WIDTH:
        return line
    out: list[str] = []
    current = ""
    for word in line.split(" "):
        if current and len(current) + 1 + len(word) > _WIDTH:
            out.append(current)
            current = indent + word
        else:
            current = f"{current} {word}" if current else word
    out.append(current)
    return "\n".join(out)
