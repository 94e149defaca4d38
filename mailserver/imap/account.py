"""
The IMAP avatar: one user's Maildir as a twisted C{IAccount}.

L{imap_account_factory} is what the composition root gives the realm for
C{imap4.IAccount}.  Every disk operation runs in the reactor's thread pool
through L{MaildirAccount.run}; the folder indexes are shared by all
accounts of the factory (one L{IFolderRegistry}, injected by the
composition root), so sessions of the same user in this process see one
consistent index per folder.  The account depends on the folder interfaces
(L{IFolder}, and L{IFolderTree} for the user's folder tree, built by an
injected factory), not on the store that implements them.
"""

from __future__ import annotations

import os
from typing import Any, Callable

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.mail.imap4 import IAccount, INamespacePresenter, MailboxException
from zope.interface import implementer

from mailserver.imap import list_extended, listing
from mailserver.imap.mailbox import SelectedMailbox
from mailserver.imap.replies import Refused
from mailserver.interfaces import IFolder, IFolderRegistry, IFolderTree, IMailboxNotifier
from mailserver.store.folder_names import (
    DEFAULT_SPECIAL_USE,
    DELIMITER,
    FolderError,
    FolderNotFoundError,
    disk_name,
    normalize_name,
)
from mailserver.store.records import Snapshot

FolderTreeOf = Callable[[str, dict[str, str]], IFolderTree]
"""C{folders_of(maildir, special_use)}: the user's L{IFolderTree} (C{service.py} gives C{store.folders.Folders})."""


class _MailboxInfo:
    """What twisted's listMailboxes wants per name: flags and delimiter."""

    def __init__(self, attributes: list[str]) -> None:
        self._attributes = attributes

    def getFlags(self) -> list[str]:
        return self._attributes

    def getHierarchicalDelimiter(self) -> str:
        return DELIMITER


@implementer(IAccount, INamespacePresenter)
class MaildirAccount:
    """
    One logged-in user's folders.

    @param folders: the user's folder tree; its C{root} is the Maildir (INBOX).
    """

    log = Logger()

    def __init__(
        self,
        user: str,
        folders: IFolderTree,
        registry: IFolderRegistry,
        notifier: IMailboxNotifier | None,
        reactor: Any,
        threadpool: Any = None,
        quota: Any = None,
    ) -> None:
        self.user = user
        self.quota = quota  # IQuota, or None: no quotas
        self.root = folders.root
        self.folders = folders
        self.registry = registry
        self.notifier = notifier
        self.reactor = reactor
        self._threadpool = threadpool
        self._subscribed: list[str] = []
        self._paths: dict[str, str] = {}

    # ------------------------------------------------------------ plumbing

    def run(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> Deferred:
        """Run blocking C{f} in the thread pool."""
        pool = self._threadpool or self.reactor.getThreadPool()
        return deferToThreadPool(self.reactor, pool, f, *args, **kwargs)

    def open(self) -> Deferred:
        """After login: create INBOX and the special-use folders if missing."""

        def setup() -> list[str]:
            try:
                self.folders.ensure_defaults()
            except OSError as e:
                # A full disk must not lock the user out: the folders are
                # made at a later login; existing mail is readable now.
                self.log.warn("imap: cannot create the default folders of {user}: {error}", user=self.user, error=e)
            return self.folders.subscriptions()

        def done(subscribed: list[str]) -> None:
            self._subscribed = subscribed

        return self.run(setup).addCallback(done)

    def logout(self) -> None:
        pass

    def path(self, name: str) -> str:
        """The checked directory of folder C{name} (remembered: the check stats the disk)."""
        path = self._paths.get(name)
        if path is None:
            path = self.folders.path(name)
            if len(self._paths) < 1000:
                self._paths[name] = path
        return path

    def index(self, name: str) -> IFolder:
        return self.registry.get(self.path(name), self.root)

    def changed(self, name: str) -> None:
        """Tell other sessions (IDLE) that folder C{name} changed."""
        if self.notifier is not None:
            self.notifier.changed([self.path(name)])

    @property
    def special_use(self) -> dict[str, str]:
        return self.folders.special_use

    # ------------------------------------------------------------ our API (coroutines)

    async def select_folder(self, name: str, readwrite: bool) -> SelectedMailbox:
        name = normalize_name(name)
        index = await self._existing(name)
        mailbox = SelectedMailbox(self, name, index, readwrite)
        await mailbox.open()
        return mailbox

    async def status(self, name: str) -> Snapshot:
        name = normalize_name(name)
        index = await self._existing(name)
        return await self.run(index.refresh)

    async def _existing(self, name: str) -> IFolder:
        """The index of folder C{name}; checks (in a thread) that it exists."""

        def check() -> IFolder:
            if not self.folders.exists(name):
                raise FolderNotFoundError(f"mailbox {name} does not exist")
            return self.index(name)

        return await self.run(check)

    async def target(self, name: str) -> IFolder:
        """The index of existing folder C{name} (COPY/MOVE destination)."""
        return await self._existing(normalize_name(name))

    async def list(self, reference: str, pattern: str, subscribed: bool) -> list[tuple[str, list[str]]]:
        """LIST or LSUB; the directory scan and the matching both run in a thread."""

        def scan_and_match() -> tuple[list[str], list[tuple[str, list[str]]]]:
            existing = self.folders.names()
            if not subscribed:
                return [], listing.list_folders(existing, reference, pattern, self.special_use)
            names = self.folders.subscriptions()
            return names, listing.list_subscribed(names, existing, reference, pattern, self.special_use)

        names, entries = await self.run(scan_and_match)
        if subscribed:
            self._subscribed = names
        return entries

    async def list_extended(
        self, reference: str, patterns: list[str], selection: frozenset[str], returns: frozenset[str]
    ) -> list[list_extended.Entry]:
        """LIST-EXTENDED (RFC 5258): scan and selection in a thread."""

        def scan_and_select() -> list[list_extended.Entry]:
            existing = self.folders.names()
            subscribed = self.folders.subscriptions() if selection or returns else []
            return list_extended.select(existing, subscribed, reference, patterns, selection, returns, self.special_use)

        return await self.run(scan_and_select)

    async def create_folder(self, name: str) -> str:
        return await self.run(self.folders.create, name)

    async def delete_folder(self, name: str) -> str:
        name = normalize_name(name)
        path = await self.run(self.folders.path, name)
        done = await self.run(self.folders.delete, name)  # drops the cached quota usage too
        self._paths.clear()
        self.registry.forget(path)
        self.changed_path(path)
        return done

    async def rename_folder(self, old: str, new: str) -> list[tuple[str, str]]:
        old = normalize_name(old)
        moves = await self.run(self.folders.rename, old, new)
        self._paths.clear()
        for source, _ in moves:
            path = os.path.join(self.root, disk_name(source)) if disk_name(source) else self.root
            self.registry.forget(path)
            self.changed_path(path)
        return moves

    def changed_path(self, path: str) -> None:
        if self.notifier is not None:
            self.notifier.changed([path])

    async def subscribe_folder(self, name: str) -> None:
        await self.run(self.folders.subscribe, name)
        self._subscribed = await self.run(self.folders.subscriptions)

    async def unsubscribe_folder(self, name: str) -> None:
        await self.run(self.folders.unsubscribe, name)
        self._subscribed = await self.run(self.folders.subscriptions)

    async def quota_usage(self) -> Any:
        """C{(Usage, QuotaLimits)} of this user, or None when the user has no limits."""
        if self.quota is None:
            return None
        usage, limits = await self.quota.usage(self.user, self.root)
        return (usage, limits) if limits.limited else None

    async def check_quota(self, size: int, count: int = 1) -> None:
        """NO [OVERQUOTA] if C{count} more messages of C{size} bytes in all do not fit."""
        result = await self.quota_usage()
        if result is not None and result[0].exceeds(result[1], size, count):
            raise Refused("Quota exceeded (mailbox for user is full)", "OVERQUOTA")

    async def append(self, name: str, data: bytes, flags: list[str], date: float | None) -> tuple[int, int]:
        name = normalize_name(name)
        index = await self._existing(name)
        await self.check_quota(len(data))
        result = await self.run(index.append, data, flags, date)
        self.changed(name)
        return result

    # ------------------------------------------------------------ twisted's IAccount

    def addMailbox(self, name: str, mbox: Any = None) -> Deferred:
        if mbox is not None:
            raise MailboxException("adding mailbox objects is not supported")
        return self.create(name)

    def create(self, pathspec: str) -> Deferred:
        return _deferred(self.create_folder(pathspec)).addCallback(lambda _: True)

    def select(self, name: str, rw: bool = True) -> Deferred:
        def missing(failure):
            failure.trap(FolderError)
            return None

        return _deferred(self.select_folder(name, rw)).addErrback(missing)

    def delete(self, name: str) -> Deferred:
        return _deferred(self.delete_folder(name)).addCallback(lambda _: True)

    def rename(self, oldname: str, newname: str) -> Deferred:
        return _deferred(self.rename_folder(oldname, newname)).addCallback(lambda _: True)

    def isSubscribed(self, name: str) -> bool:
        try:
            return normalize_name(name) in self._subscribed
        except FolderError:
            return False

    def subscribe(self, name: str) -> Deferred:
        return _deferred(self.subscribe_folder(name)).addCallback(lambda _: True)

    def unsubscribe(self, name: str) -> Deferred:
        return _deferred(self.unsubscribe_folder(name)).addCallback(lambda _: True)

    def listMailboxes(self, ref: str, wildcard: str) -> Deferred:
        def convert(entries):
            return [(name, _MailboxInfo(attrs)) for name, attrs in entries]

        return _deferred(self.list(ref, wildcard, False)).addCallback(convert)

    # ------------------------------------------------------------ INamespacePresenter

    def getPersonalNamespaces(self) -> list[list[str]]:
        return [["", DELIMITER]]

    def getSharedNamespaces(self) -> None:
        return None

    def getOtherNamespaces(self) -> None:
        return None

    def getUserNamespaces(self) -> None:
        return None


def _deferred(coroutine) -> Deferred:
    return Deferred.fromCoroutine(coroutine)


def imap_account_factory(
    maildir_of: Callable[[str], str],
    notifier: IMailboxNotifier | None,
    reactor: Any,
    folders_of: FolderTreeOf,
    registry: IFolderRegistry,
    special_use: dict[str, str] | None = None,
    threadpool: Any = None,
    quota: Any = None,
) -> Callable[[str], MaildirAccount]:
    """
    The realm's factory for C{imap4.IAccount} avatars.

    @param maildir_of: user name -> the user's Maildir path
        (C{store.location.maildir_for} over the user database).
    @param notifier: the process's L{IMailboxNotifier} (IDLE wake-ups).
    @param reactor: for the thread pool.
    @param folders_of: C{(maildir, special_use)} -> the user's L{IFolderTree}.
    @param registry: the process's L{IFolderRegistry} (C{service.py} gives
        one whose indexes describe messages for IMAP).
    @param special_use: folder name -> SPECIAL-USE attribute, created on
        first login (default Sent, Drafts, Trash, Junk).
    """
    special_use = DEFAULT_SPECIAL_USE if special_use is None else special_use

    def factory(user: str) -> MaildirAccount:
        folders = folders_of(os.path.abspath(maildir_of(user)), special_use)
        return MaildirAccount(user, folders, registry, notifier, reactor, threadpool, quota)

    return factory
