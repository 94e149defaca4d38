"""
Pure: the queue file's envelope, a small versioned JSON document.

One envelope per queued message: sender, arrival time, when to try next,
and per recipient its state (pending, delivered, bounced), attempt count
and last error.  JSON rather than pickle (twisted.mail's relay manager
pickles): safe to read, readable by people, stable across versions.
Unknown versions or malformed documents raise L{EnvelopeError}; the
spool moves such files aside instead of guessing.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field

#: The envelope format written by this code.
ENVELOPE_VERSION = 1

PENDING = "pending"
DELIVERED = "delivered"
BOUNCED = "bounced"
RECIPIENT_STATES = (PENDING, DELIVERED, BOUNCED)

#: Queue ids: upper-case hex, like Postfix's short ids (but a little longer).
_QUEUE_ID = re.compile(r"[0-9A-F]{10,32}\Z")


class EnvelopeError(ValueError):
    """An envelope that cannot be read: bad JSON, unknown version, wrong types."""


def is_queue_id(text: str) -> bool:
    """True if C{text} looks like one of our queue ids (safe as a file name)."""
    return bool(_QUEUE_ID.match(text))


@dataclass
class RecipientState:
    """One recipient of a queued message and what happened to it so far."""

    address: str
    status: str = PENDING
    attempts: int = 0
    last_error: str = ""  # for mailq and logs: "host mx[1.2.3.4] said: 450 ..."
    enhanced: str = ""  # RFC 3463 status of the last result: "4.2.0", "5.1.1"
    remote_mta: str = ""  # the host that gave the last reply, if any
    diagnostic: str = ""  # the remote's reply, quoted in a DSN: "550 5.1.1 unknown"
    notified: bool = False  # a bounce for this recipient was handed over (or none is due)


@dataclass
class QueueEnvelope:
    """Everything the queue knows about one message except its content."""

    queue_id: str
    sender: str  # "" is the null sender
    recipients: list[RecipientState]
    arrival: float
    next_attempt: float
    attempts: int = 0
    last_attempt: float | None = None
    size: int = 0
    state: str = field(default="incoming", compare=False)  # the directory it was read from

    @property
    def pending(self) -> list[RecipientState]:
        return [r for r in self.recipients if r.status == PENDING]

    @property
    def unnotified_bounces(self) -> list[RecipientState]:
        return [r for r in self.recipients if r.status == BOUNCED and not r.notified]

    @property
    def finished(self) -> bool:
        """Nothing left to do: every recipient delivered, or bounced and reported."""
        return all(
            r.status == DELIVERED or (r.status == BOUNCED and r.notified) for r in self.recipients
        )


def dumps(envelope: QueueEnvelope) -> bytes:
    """The envelope as JSON bytes (one line, ending in LF)."""
    document = {
        "version": ENVELOPE_VERSION,
        "queue_id": envelope.queue_id,
        "sender": envelope.sender,
        "arrival": envelope.arrival,
        "next_attempt": envelope.next_attempt,
        "attempts": envelope.attempts,
        "last_attempt": envelope.last_attempt,
        "size": envelope.size,
        "recipients": [asdict(r) for r in envelope.recipients],
    }
    return json.dumps(document, ensure_ascii=True, sort_keys=True).encode("ascii") + b"\n"


def loads(data: bytes, state: str = "incoming") -> QueueEnvelope:
    """Parse JSON bytes written by L{dumps}; raise L{EnvelopeError} if unusable."""
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise EnvelopeError(f"not JSON: {e}") from None
    if not isinstance(document, dict):
        raise EnvelopeError("not a JSON object")
    version = document.get("version")
    if version != ENVELOPE_VERSION:
        raise EnvelopeError(f"unknown envelope version {version!r}")
    queue_id = _typed(document, "queue_id", str)
    if not is_queue_id(queue_id):
        raise EnvelopeError(f"bad queue id {queue_id!r}")
    raw_recipients = _typed(document, "recipients", list)
    if not raw_recipients:
        raise EnvelopeError("no recipients")
    last_attempt = document.get("last_attempt")
    if last_attempt is not None and not _is_number(last_attempt):
        raise EnvelopeError("last_attempt: not a number")
    return QueueEnvelope(
        queue_id=queue_id,
        sender=_typed(document, "sender", str),
        recipients=[_recipient(item) for item in raw_recipients],
        arrival=_number(document, "arrival"),
        next_attempt=_number(document, "next_attempt"),
        attempts=_typed(document, "attempts", int),
        last_attempt=last_attempt,
        size=_typed(document, "size", int),
        state=state,
    )


def _recipient(item: object) -> RecipientState:
    if not isinstance(item, dict):
        raise EnvelopeError("recipient: not an object")
    status = _typed(item, "status", str)
    if status not in RECIPIENT_STATES:
        raise EnvelopeError(f"recipient: unknown status {status!r}")
    address = _typed(item, "address", str)
    if not address:
        raise EnvelopeError("recipient: empty address")
    return RecipientState(
        address=address,
        status=status,
        attempts=_typed(item, "attempts", int),
        last_error=_typed(item, "last_error", str),
        enhanced=_typed(item, "enhanced", str),
        remote_mta=_typed(item, "remote_mta", str),
        diagnostic=_typed(item, "diagnostic", str),
        notified=_typed(item, "notified", bool),
    )


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number(document: dict, key: str) -> float:
    value = document.get(key)
    if not _is_number(value):
        raise EnvelopeError(f"{key}: not a number")
    return float(value)


def _typed(document: dict, key: str, kind: type):
    value = document.get(key)
    # bool is a subclass of int: keep them apart.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise EnvelopeError(f"{key}: expected {kind.__name__}")
    return value
