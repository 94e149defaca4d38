"""Policy: may a SASL user send as this envelope sender? (reject_sender_login_mismatch)"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThreadPool

from mailserver.address import Address
from mailserver.delivery.aliases import AliasExpander
from mailserver.delivery.local_mailboxes import LocalMailboxes
from mailserver.interfaces import IUserDatabase


@dataclass(frozen=True)
class SenderLogin:
    """
    A login owns its own address (with or without a C{recipient_delimiter}
    extension) and every alias that leads to it; the alias tables are
    expanded in a thread because C{:include:} files are read.
    """

    users: IUserDatabase
    expander: AliasExpander
    mailboxes: LocalMailboxes
    is_local_domain: Callable[[str], bool]
    recipient_delimiter: str
    reactor: Any

    def owned_by(self, user: str, sender: Address) -> Deferred:
        """Deferred True if SASL user C{user} may send as C{sender}."""
        record = self.users.lookup(user)
        own = {user.lower(), record.name.lower() if record else user.lower()}
        delimiter = self.recipient_delimiter
        if sender.key in own or (delimiter and sender.base(delimiter).key in own):
            return succeed(True)

        def leads_to_user(expansion: Any) -> bool:
            for target in expansion.targets:
                key = getattr(target, "key", None)
                if key is None:
                    continue
                mailbox = self.mailboxes.resolve(target) if self.is_local_domain(target.domain) else None
                if key in own or (mailbox is not None and mailbox.user.lower() in own):
                    return True
            return False

        d = deferToThreadPool(self.reactor, self.reactor.getThreadPool(), self.expander.expand, sender, delimiter)
        return d.addCallbacks(leads_to_user, lambda failure: False)
