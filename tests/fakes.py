"""In-memory fakes, one per interface, so stage and protocol tests never touch the disk."""

from __future__ import annotations

from dataclasses import dataclass

from twisted.cred.checkers import ANONYMOUS, AllowAnonymousAccess
from twisted.cred.portal import Portal
from twisted.internet.defer import Deferred, fail, succeed
from twisted.mail.smtp import IMessageDeliveryFactory
from zope.interface import implementer

from mailserver.quota_rule import UNLIMITED, Usage, over_quota
from mailserver.spooled import SpooledMessage
from mailserver.auth.realm import MailRealm
from mailserver.delivery.pipeline import DeliveryAgent, DeliveryCore
from mailserver.delivery.recipients import RecipientSyntax
from mailserver.delivery.relay_policy import RelayPolicy
from mailserver.delivery.local_mailboxes import LocalMailboxes
from mailserver.delivery.transaction import Committer
from mailserver.errors import MailError
from mailserver.interfaces import IMailStore, IOutboundQueue, IQuota, IUserDatabase


@dataclass(frozen=True)
class FakeUser:
    name: str
    home: str | None = None


@implementer(IUserDatabase)
class StaticUsers:
    """An IUserDatabase over a fixed list of names."""

    def __init__(self, *names: str) -> None:
        self._users = {name.lower(): FakeUser(name.lower()) for name in names}

    def lookup(self, name: str):
        local, at, domain = name.partition("@")
        return self._users.get(local.lower() + at + domain.lower())

    def users(self):
        return list(self._users.values())

    def domains(self):
        return {n.partition("@")[2] for n in self._users if "@" in n}


@implementer(IMailStore)
class MemoryStore:
    """Records deliveries; C{error} makes the next deliver fail."""

    def __init__(self) -> None:
        self.delivered: list[tuple[str, bytes]] = []  # (maildir, full bytes)
        self.error: MailError | None = None
        self.pending: list[Deferred] | None = None  # when a list, deliveries wait

    def deliver(self, message: bytes | SpooledMessage, copies):
        if self.error is not None:
            return fail(self.error)
        if isinstance(message, SpooledMessage):
            message = message.read()  # now: the spool file is gone once the transaction ends
        if callable(copies):  # a plan, called where the store writes
            copies = [copy[:2] for copy in copies()]
        def write(_=None):
            for maildir, prefix in copies:
                self.delivered.append((maildir, prefix + message))
            return [f"name{i}" for i in range(len(copies))]
        if self.pending is not None:
            d = Deferred()
            self.pending.append(d)
            return d.addCallback(write)
        return succeed(write())


@implementer(IQuota)
class MemoryQuota:
    """Quotas by user name: C{limits[user]} and C{used[user]}, checked synchronously."""

    def __init__(self) -> None:
        self.limits: dict = {}
        self.used: dict = {}
        self.warned: list[tuple[str, Usage, int]] = []  # every warn() call: (user, usage before, size)

    def usage(self, user, maildir):
        return succeed((self.used.get(user, Usage()), self.limits.get(user, UNLIMITED)))

    def check(self, user, maildir, size):
        usage, limits = self.usage(user, maildir).result
        return succeed(over_quota(user) if usage.exceeds(limits, size, 1) else None)

    def warn(self, user, maildir, before, size):
        self.warned.append((user, before, size))
        return succeed(None)


@implementer(IOutboundQueue)
class MemoryQueue:
    def __init__(self) -> None:
        self.queued: list[tuple[str, list[str], bytes]] = []
        self.clients: list = []

    def enqueue(self, sender, recipients, message, client=None):
        if isinstance(message, SpooledMessage):
            message = message.read()
        self.queued.append((sender, list(recipients), message))
        self.clients.append(client)
        return succeed(f"Q{len(self.queued)}")


def build_core(reactor, store=None, users=None, queue=None, hostname="mx.example.com", **kw) -> DeliveryCore:
    """A DeliveryCore wired like service.py does, over fakes."""
    users = users or StaticUsers("alice@example.com", "bob@example.com", "root")
    local = {"example.com", "mx.example.com", "localhost"}
    router = LocalMailboxes(
        users=users,
        mydestination=frozenset({"mx.example.com", "localhost"}),
        recipient_delimiter="+",
        home_mailbox="Maildir/",
        virtual_mailbox_base="/mail",
    )
    import ipaddress

    stages = [
        RecipientSyntax(myorigin=hostname),
        RelayPolicy(
            is_local_domain=lambda d: d in local,
            mynetworks=[ipaddress.ip_network("127.0.0.0/8")],
            queue_available=queue is not None,
        ),
        router,
    ]
    return DeliveryCore(
        reactor=reactor,
        hostname=hostname,
        stages=stages,
        committer=Committer(store=store or MemoryStore(), queue=queue),
        **kw,
    )


def anonymous_portal(core: DeliveryCore) -> Portal:
    realm = MailRealm(
        {IMessageDeliveryFactory: lambda user: DeliveryAgent(core, None if user is ANONYMOUS else user)},
        anonymous_interfaces=frozenset({IMessageDeliveryFactory}),
    )
    return Portal(realm, [AllowAnonymousAccess()])
