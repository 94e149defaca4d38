"""Stage: a final address in a local domain -> the user's Maildir, or 550 5.1.1."""

from __future__ import annotations

import os
from dataclasses import dataclass

from zope.interface import implementer

from mailserver.address import Address
from mailserver.envelope import Envelope, LocalMailbox, Verdict
from mailserver.errors import MailError
from mailserver.interfaces import IRecipientStage, IUserDatabase
from mailserver.store.location import maildir_for

USER_UNKNOWN = MailError(550, "5.1.1", "Recipient address rejected: User unknown in local recipient table")


@implementer(IRecipientStage)
@dataclass(frozen=True)
class LocalMailboxes:
    """
    Resolve a local address to a mailbox: the passwd-file user C{user@domain},
    a bare C{user} entry for domains in C{mydestination}, the address without
    its C{recipient_delimiter} extension, and C{postmaster}, which always
    exists (RFC 5321 section 4.5.1): without such a user it has its own
    Maildir under C{virtual_mailbox_base}; C{MAILER-DAEMON} goes to
    C{postmaster}.
    """

    users: IUserDatabase
    mydestination: frozenset[str]
    recipient_delimiter: str
    home_mailbox: str
    virtual_mailbox_base: str
    name: str = "local_recipient_maps"

    def resolve(self, address: Address) -> LocalMailbox | None:
        """The mailbox of a local C{address}, or None if there is no such user."""
        candidates = [address]
        base = address.base(self.recipient_delimiter) if self.recipient_delimiter else address
        if base is not address:
            candidates.append(base)
        for candidate in candidates:
            keys = [candidate.key]
            if candidate.domain in self.mydestination:
                keys.append(candidate.local.lower())
            for key in keys:
                record = self.users.lookup(key)
                if record is not None:
                    path = maildir_for(record.name, record.home, self.home_mailbox, self.virtual_mailbox_base)
                    qualified = record.name if "@" in record.name else f"{record.name}@{candidate.domain}"
                    return LocalMailbox(qualified, path, record.home or None)
        if base.local.lower() in ("postmaster", "mailer-daemon"):
            if base.local.lower() == "mailer-daemon":
                return self.resolve(Address("postmaster", address.domain))
            name = f"postmaster@{address.domain}"
            return LocalMailbox(name, os.path.join(self.virtual_mailbox_base, address.domain, "postmaster"))
        return None

    def check(self, envelope: Envelope, recipient: Address) -> Verdict:
        mailbox = self.resolve(recipient)
        if mailbox is None:
            return Verdict.reject(USER_UNKNOWN)
        return Verdict.accept(mailbox)
