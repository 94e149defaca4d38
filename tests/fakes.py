"""In-memory fakes, one per interface, so stage and protocol tests never touch the disk."""

from __future__ import annotations

import os
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
from mailserver.interfaces import IFolder, IFolderRegistry, IMailStore, IOutboundQueue, IQuota, IUserDatabase
from mailserver.store import flags as flagmod
from mailserver.store.records import MessageRecord, Snapshot


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

    def file_into(self, maildir: str, folder: str, flags=(), create: bool = False):
        """Every folder exists: C{maildir/.folder}, no flags."""
        return os.path.join(maildir, "." + folder), "", [f"fileinto {folder}"]


@implementer(IQuota)
class MemoryQuota:
    """Quotas by user name: C{limits[user]} and C{used[user]}, checked synchronously."""

    def __init__(self) -> None:
        self.limits: dict = {}
        self.used: dict = {}
        self.warned: list[tuple[str, Usage, int]] = []  # every warn() call: (user, usage before, size)

    def limits_of(self, user):
        return self.limits.get(user, UNLIMITED)

    def usage(self, user, maildir):
        return succeed((self.used.get(user, Usage()), self.limits_of(user)))

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


@implementer(IFolder)
class MemoryFolder:
    """
    An IMAP folder held in memory (L{IFolder} without a disk), so IMAP tests
    can show the protocol goes through the folder interfaces alone.

    @param describe: C{describe(crlf_bytes) -> summary} (IMAP's
        C{structure.describe}), as the index is given.
    """

    def __init__(self, path: str, describe, uidvalidity: int = 1, clock=lambda: 1_700_000_000.0) -> None:
        self.path = path
        self._describe = describe
        self._clock = clock
        self._uidvalidity = uidvalidity
        self._uidnext = 1
        self._highest = 0
        self._records: dict[int, MessageRecord] = {}
        self._data: dict[int, bytes] = {}
        self._modseqs: dict[int, int] = {}
        self._expunged: list[tuple[int, int]] = []
        self._keywords: list[str | None] = []
        self._unclaimed: set[int] = set()
        self._publish()

    def _publish(self) -> None:
        self.snapshot = Snapshot(
            self._uidvalidity, self._uidnext, tuple(self._records[u] for u in sorted(self._records)),
            tuple(self._keywords), unclaimed=frozenset(self._unclaimed), modseqs=dict(self._modseqs),
            highestmodseq=self._highest,
        )

    def _changed(self, uid: int) -> None:
        self._highest += 1
        self._modseqs[uid] = self._highest

    def _put(self, uid: int, data: bytes, letters: str, mtime: float, subdir: str) -> None:
        base = f"m{uid}"
        name = f"{base}:{flagmod.make_info(letters)}" if subdir == "cur" else base
        summary = self._describe(data)
        self._records[uid] = MessageRecord(uid, base, subdir, name, letters, mtime, len(data), summary)
        self._data[uid] = data
        self._changed(uid)

    # -- IFolderReader

    def refresh(self, force: bool = False) -> Snapshot:
        return self.snapshot

    def read(self, uid: int) -> bytes | None:
        return self._data.get(uid)

    def read_many(self, uids, transform=None):
        found = {uid: self._data.get(uid) for uid in uids}
        if transform is None:
            return found
        return {uid: None if data is None else transform(data) for uid, data in found.items()}

    def size_of(self, uids, snap=None):
        records = [r for r in (snap or self.snapshot).records if r.uid in set(uids)]
        return sum(r.size for r in records), len(records)

    def vanished_since(self, modseq: int):
        return sorted(uid for m, uid in self._expunged if m > modseq), True

    # -- IFolderWriter

    def append(self, data: bytes, flags, mtime):
        flags = [flagmod.canonical_flag(f) for f in flags]
        self._keywords = flagmod.add_keywords(self._keywords, flags)
        letters = flagmod.flags_to_letters(flags, self._keywords)
        uid, self._uidnext = self._uidnext, self._uidnext + 1
        data = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        self._put(uid, data, letters, self._clock() if mtime is None else mtime, "cur" if letters else "new")
        if letters:
            self._unclaimed.add(uid)
        self._publish()
        return self._uidvalidity, uid

    def store(self, uids, flags, mode):
        return self.conditional_store(uids, flags, mode, None)[0]

    def conditional_store(self, uids, flags, mode, unchangedsince):
        flags = [flagmod.canonical_flag(f) for f in flags]
        if mode >= 0:
            self._keywords = flagmod.add_keywords(self._keywords, flags)
        changed, modified = {}, []
        for uid in uids:
            record = self._records.get(uid)
            if record is None:
                continue
            if unchangedsince is not None and self._modseqs[uid] > unchangedsince:
                modified.append(uid)
                continue
            current = flagmod.letters_to_flags(record.letters, self._keywords)
            letters = flagmod.flags_to_letters(flagmod.apply_store(current, flags, mode), self._keywords, keep=record.letters)
            if (letters, record.subdir) != (record.letters, "cur"):
                self._put(uid, self._data[uid], letters, record.mtime, "cur")
            changed[uid] = self._records[uid]
        self._publish()
        return changed, modified

    def claim_recent(self):
        claimed = set(self._unclaimed)
        self._unclaimed.clear()
        for record in list(self._records.values()):
            if record.subdir == "new":
                self._put(record.uid, self._data[record.uid], record.letters, record.mtime, "cur")
                claimed.add(record.uid)
        self._publish()
        return claimed

    def expunge(self, uids=None):
        removed = [u for u, r in sorted(self._records.items()) if "T" in r.letters and (uids is None or u in uids)]
        self._remove(removed)
        return removed

    def transfer(self, uids, target: "MemoryFolder", move: bool):
        pairs = []
        for uid in uids:
            record = self._records.get(uid)
            if record is None:
                continue
            flags = flagmod.letters_to_flags(record.letters, self._keywords)
            _, new = target.append(self._data[uid], sorted(flags), record.mtime)
            pairs.append((uid, new))
        if move:
            self._remove([uid for uid, _ in pairs])
        return pairs

    def _remove(self, uids) -> None:
        for uid in uids:
            del self._records[uid], self._data[uid], self._modseqs[uid]
            self._highest += 1
            self._expunged.append((self._highest, uid))
        self._publish()


@implementer(IFolderRegistry)
class MemoryFolderRegistry:
    """One L{MemoryFolder} per folder path: what L{imap_account_factory} is given instead of the disk index."""

    def __init__(self, describe) -> None:
        self._describe = describe
        self.folders: dict[str, MemoryFolder] = {}

    def get(self, path: str, root: str) -> MemoryFolder:
        key = os.path.normpath(os.path.abspath(path))
        if key not in self.folders:
            self.folders[key] = MemoryFolder(key, self._describe)
        return self.folders[key]

    def forget(self, path: str) -> None:
        key = os.path.normpath(os.path.abspath(path))
        for name in [k for k in self.folders if k == key or k.startswith(key + ".")]:
            del self.folders[name]
