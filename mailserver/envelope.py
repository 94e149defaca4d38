"""
Pure: the value objects that travel from the protocols through the delivery
pipeline (the SMTP session fills an L{Envelope}, the pipeline routes it).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from mailserver.address import Address
from mailserver.errors import MailError


@dataclass(frozen=True)
class Client:
    """Who is talking to us: peer IP, HELO name, TLS and SASL state."""

    ip: str
    helo: str = ""
    tls: bool = False
    sasl_user: str | None = None
    protocol: str = "ESMTP"  # ESMTP, ESMTPS, ESMTPA, ESMTPSA, or "local" for sendmail
    trusted: bool = False  # mail made or picked up by this host (sendmail, bounces): may relay


@dataclass(frozen=True)
class LocalMailbox:
    """A final local destination: the user's Maildir."""

    user: str  # the passwd-file name, e.g. alice@example.com
    maildir: str  # absolute path of the Maildir directory
    home: str | None = None  # the user's home from the passwd-file (Sieve scripts live there)


@dataclass(frozen=True)
class RemoteAddress:
    """A final destination on another host: goes to the outbound queue."""

    address: Address


@dataclass(frozen=True)
class FileTarget:
    """An alias target C{/path/file}: append in mbox format."""

    path: str
    owner_uid: int | None = None


@dataclass(frozen=True)
class CommandTarget:
    """An alias target C{|command}: pipe the message to a program."""

    command: str
    owner_uid: int | None = None


Destination = LocalMailbox | RemoteAddress | FileTarget | CommandTarget


@dataclass(frozen=True)
class Recipient:
    """One accepted RCPT: the address as given and where it ends up."""

    original: Address  # as given at RCPT TO (X-Original-To)
    destinations: tuple[Destination, ...]
    owner: Address | None = None  # owner-NAME of a list: the envelope sender for its copies
    # Whether a local mailbox of it had a quota limit when RCPT looked (None: not looked up).
    # End of DATA goes by this answer (quota_gate.limited), not by a second look-up.
    quota_limited: bool | None = field(default=None, compare=False, repr=False)


@dataclass
class Envelope:
    """One SMTP transaction: client, sender and the recipients accepted so far."""

    client: Client
    sender: Address | None  # None is the null sender <>
    recipients: list[Recipient] = field(default_factory=list)
    queue_id: str = ""
    size_declared: int | None = None
    body_8bit: bool = False
    started: float = 0.0  # reactor time of MAIL FROM (0: unknown)
    milter: MessageMilter | None = None  # the SMTP session's milters for this message
    spf: Any = None  # the SPF result evaluated at MAIL FROM (mailauth), reused at end of DATA
    spf_pending: Any = None  # a Deferred of that result, when MAIL FROM did not need to wait for it


class Outcome(enum.Enum):
    ACCEPT = "accept"  # final: the recipient is accepted with destinations
    CONTINUE = "continue"  # no opinion (Postfix DUNNO): ask the next stage
    REJECT = "reject"  # refused: error says how


@dataclass(frozen=True)
class Verdict:
    """What a recipient stage decided."""

    outcome: Outcome
    destinations: tuple[Destination, ...] = ()
    error: MailError | None = None
    rewritten: Address | None = None  # a stage may hand the next one another address
    owner: Address | None = None  # owner-NAME of an expanded list

    @classmethod
    def accept(cls, *destinations: Destination, owner: Address | None = None) -> Verdict:
        return cls(Outcome.ACCEPT, tuple(destinations), owner=owner)

    @classmethod
    def proceed(cls, rewritten: Address | None = None) -> Verdict:
        if rewritten is None and cls is Verdict:
            return _PROCEED  # frozen: one will do for every stage without an opinion
        return cls(Outcome.CONTINUE, rewritten=rewritten)

    @classmethod
    def reject(cls, error: MailError) -> Verdict:
        return cls(Outcome.REJECT, error=error)


_PROCEED = Verdict(Outcome.CONTINUE)


@dataclass
class MessageMilter:
    """
    The milter session of one message and the macros known so far (C{i},
    C{{mail_addr}} ...): set by the SMTP session at MAIL, used at end of DATA.
    """

    session: Any  # an IMilterSession (interfaces.py; a pure module does not import it)
    macros: dict[str, str] = field(default_factory=dict)
    discard: bool = False  # a milter said discard at MAIL or RCPT
