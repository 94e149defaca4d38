"""Where each passwd-file user's Maildir and Sieve home are (home_mailbox / virtual_mailbox_base)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable

from mailserver.interfaces import IUserDatabase
from mailserver.store.location import maildir_for


@dataclass(frozen=True)
class UserMailboxes:
    """Maildir lookup for logins (POP3, IMAP, ManageSieve) and the Maildir cleaner."""

    users: IUserDatabase
    home_mailbox: str
    virtual_mailbox_base: str

    def maildir_of(self, user: str) -> str:
        """The Maildir of an authenticated user (the passwd-file name)."""
        record = self.users.lookup(user)
        home = record.home if record is not None else None
        name = record.name if record is not None else user
        return maildir_for(name, home, self.home_mailbox, self.virtual_mailbox_base)

    def home_of(self, user: str) -> str:
        """Where a user's Sieve scripts live: the passwd-file home, else the Maildir (as delivery finds them)."""
        record = self.users.lookup(user)
        if record is not None and record.home:
            return record.home
        return self.maildir_of(user)

    def known_maildirs(self, local_domains: Iterable[str]) -> list[str]:
        """Every Maildir delivered to now: each user's, and postmaster's fallback per local domain."""
        found = []
        for record in self.users.users():
            try:
                found.append(maildir_for(record.name, record.home, self.home_mailbox, self.virtual_mailbox_base))
            except ValueError:
                continue
        for domain in sorted(local_domains):
            found.append(os.path.join(self.virtual_mailbox_base, domain, "postmaster"))
        return found
