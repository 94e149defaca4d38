"""
The composition root: a Config becomes tables, store, portal and listeners
under one MultiService.  The only module (with tap.py) that imports
everything.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
from functools import partial
from typing import Any, Callable

from twisted.application.service import MultiService, Service
from twisted.cred.checkers import ANONYMOUS, AllowAnonymousAccess
from twisted.cred.portal import Portal
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.python.threadpool import ThreadPool
from twisted.internet.threads import deferToThreadPool
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger
from twisted.mail import imap4, pop3
from twisted.names import client as dns
from twisted.mail.smtp import IMessageDeliveryFactory

from mailserver.auth.challengers import CHALLENGERS
from mailserver.auth.cache import VerifiedCache
from mailserver.auth.checker import PasswordChecker
from mailserver.auth.throttle import AuthThrottle
from mailserver.auth.realm import MailRealm
from mailserver.auth.userdb import FileUserDatabase
from mailserver.config.endpoints import parse_endpoint, with_backlog, with_unix_mode
from mailserver.config.parameters import Config, listen_endpoints
from mailserver.delivery.alias_stage import AliasStage
from mailserver.delivery.authentication import InboundAuthentication, SenderSPF
from mailserver.delivery.check_tables import ReloadingContentChecks
from mailserver.delivery.aliases import AliasExpander
from mailserver.delivery.targets import LocalTargets
from mailserver.delivery.sender_login import SenderLogin
from mailserver.delivery.trusted_origin import TrustedOrigin
from mailserver.envelope import Client
from mailserver.delivery.inject import Injector
from mailserver.delivery.incoming import IncomingSpool
from mailserver.delivery.pipeline import DeliveryAgent, DeliveryCore
from mailserver.delivery.milter_filter import MilterFilter
from mailserver.envelope import MessageMilter
from mailserver.errors import ConfigError, MailError, Problem
from mailserver.delivery.recipients import RecipientSyntax
from mailserver.delivery.relay_policy import RelayPolicy, in_networks
from mailserver.delivery.local_mailboxes import LocalMailboxes
from mailserver.delivery.sieve_filter import SieveFilter
from mailserver.interfaces import IFolderRegistry, ISieveScripts
from mailserver.sieve.account import Quotas as SieveQuotas
from mailserver.sieve.account import sieve_account_factory
from mailserver.sieve.checker import EXTENSIONS as SIEVE_EXTENSIONS
from mailserver.managesieve.server import ManageSieveFactory
from mailserver.delivery.transaction import Committer
from mailserver.durable import replace_atomically
from mailserver.sieve.interpreter import Limits as SieveLimits
from mailserver.sieve.scripts import ScriptCache
from mailserver.imap.account import imap_account_factory
from mailserver.mailauth.dkim_keys import KeyStore
from mailserver.mailauth.dkim_sign import DKIMSigner, SigningQueue
from mailserver.mailauth.dns import DNSLookup
from mailserver.milter.sessions import session_opener
from mailserver.mailauth.inbound import Authenticator, InboundPolicy
from mailserver.mailauth.verify_process import VerifyProcesses
from mailserver.mailauth.mta_sts import MTASTSPolicies, https_fetcher
from mailserver.imap.server import IMAPFactory
from mailserver.imap.structure import DESCRIBE_VERSION, describe
from mailserver.limits import DescriptorBudget, LoginLimits, RefusalLog
from mailserver.metrics.collectors import count_entries
from mailserver.metrics.wiring import Sources as MetricSources, build_metrics
from mailserver.periodic import PeriodicTask
from mailserver.pop3.factory import POP3Factory
from mailserver.pop3.mailbox import pop3_mailbox_factory
from mailserver.quota_rule import LimitsByRecord, QuotaLimits
from mailserver.smtp.factory import SMTPFactory
from mailserver.stale_socket import remove_stale_socket
from mailserver.smtp.lmtp import LMTPFactory, LMTPPolicy
from mailserver.smtp.server import SMTPPolicy
from mailserver.spam_defence import SpamDefence
from mailserver.tables.aliasdb import read_include_file, watch_alias_maps, watch_virtual_maps
from mailserver.store.user_mailboxes import UserMailboxes
from mailserver.tls import CertificateError, PlaintextPolicy, TLSSettings, build_contexts, wrap_implicit
from mailserver.queue.manager import QueueManager
from mailserver.queue.nexthop import load_sasl_passwords
from mailserver.queue.pickup import PickupService
from mailserver.queue.pickup_bounce import PickupDelivery
from mailserver.queue.relay import Relay
from mailserver.queue.spool import CORRUPT, STATES as SPOOL_STATES, Spool
from mailserver.store.cleanup import MaildirTmpCleaner
from mailserver.store.folders import Folders, disk_name, folder_registry, normalize_name
from mailserver.store.hold import HoldArea
from mailserver.store.maildir import MaildirStore
from mailserver.store.quota import MaildirQuota
from mailserver.store.notify import MailboxNotifier
from mailserver.store.reader import MaildirReader
from mailserver.store.writers import WriterThreads

log = Logger(namespace="mailserver.service")

SMTP_LISTENERS = ("smtpd_listen", "submission_listen", "smtps_listen")
#: Seconds after start before the first Maildir tmp/ sweep (the start-up work comes first).
MAILDIR_CLEANUP_DELAY = 60.0


class LazyResolver:
    """
    twisted.names' resolver, made on first use (it re-reads resolv.conf on a
    timer from then on), so a server that never relays never starts one.
    """

    def __init__(self, reactor: Any, resolv: str = "/etc/resolv.conf") -> None:
        self._reactor = reactor
        self._resolv = resolv
        self._resolver: Any = None

    def _get(self) -> Any:
        if self._resolver is None:
            self._resolver = dns.Resolver(self._resolv, reactor=self._reactor)
        return self._resolver

    def lookupMailExchange(self, name: str, timeout: Any = None) -> Deferred:
        return self._get().lookupMailExchange(name, timeout)

    def lookupAddress(self, name: str, timeout: Any = None) -> Deferred:
        return self._get().lookupAddress(name, timeout)

    def lookupIPV6Address(self, name: str, timeout: Any = None) -> Deferred:
        return self._get().lookupIPV6Address(name, timeout)

    def lookupText(self, name: str, timeout: Any = None) -> Deferred:
        return self._get().lookupText(name, timeout)

    def lookupPointer(self, name: str, timeout: Any = None) -> Deferred:
        return self._get().lookupPointer(name, timeout)

    def stop(self) -> None:
        """Cancel the resolv.conf re-read timer (at service stop)."""
        call = getattr(self._resolver, "_parseCall", None)
        if call is not None and call.active():
            call.cancel()


class Listener(Service):
    """One endpoint description listening with one factory; C{port} once listening."""

    def __init__(self, name: str, description: str, endpoint: Any, factory: Any, reactor: Any) -> None:
        self.setName(f"{name} {description}")
        self.reactor = reactor
        self.description = description
        self.endpoint = endpoint
        self.factory = factory
        self.port: Any = None
        self.listening: Deferred = Deferred()
        self._listen_called = False

    def privilegedStartService(self) -> None:
        """Bind now, before twistd's C{--uid}/C{--gid} drop root (ports below 1024)."""
        super().privilegedStartService()
        self._listen()

    def startService(self) -> None:
        super().startService()
        self._listen()

    def _listen(self) -> None:
        if self._listen_called:
            return
        self._listen_called = True

        def listening(port: Any) -> Any:
            self.port = port
            self.listening.callback(port)
            return port

        def failed(failure: Any) -> None:
            log.critical(
                "{name}: cannot listen on {description}: {error}; stopping",
                name=self.name, description=self.description, error=failure.getErrorMessage(),
            )
            if self.reactor.running:
                self.reactor.stop()
            else:  # bound at start-up, before twistd runs the reactor
                self.reactor.callWhenRunning(self.reactor.stop)

        unix = parse_endpoint(self.description)
        if unix.type == "unix" and remove_stale_socket(unix.arguments["address"]):
            log.info("{name}: removed the stale socket {path}", name=self.name, path=unix.arguments["address"])
        self.endpoint.listen(self.factory).addCallbacks(listening, failed)

    def stopService(self) -> Deferred | None:
        super().stopService()
        self._listen_called = False
        if self.port is not None:
            return maybeDeferred(self.port.stopListening)
        return None


class TableWatcher(Service):
    """Polls alias and check tables, so C{newaliases} and table edits apply without a restart."""

    def __init__(self, *maps: Any) -> None:
        self.maps = [m for m in maps if m is not None]

    def startService(self) -> None:
        super().startService()
        for table in self.maps:
            table.start()

    def stopService(self) -> None:
        super().stopService()
        for table in self.maps:
            table.stop()


class HoldReleaser(Service):
    """Delivers what C{mailserver hold release} released, without running the checks again."""

    def __init__(self, server: "Server", interval: float = 5.0) -> None:
        self.server = server
        self.loop = PeriodicTask("hold release", self.run, interval, server.reactor)
        self.cleanup = PeriodicTask("hold area tmp/ cleanup", self.purge, 3600.0, server.reactor)
        self.interval = interval

    def startService(self) -> None:
        super().startService()
        self.loop.start(now=True)
        self.cleanup.start(now=True)

    def stopService(self) -> None:
        super().stopService()
        self.loop.stop()
        self.cleanup.stop()

    def purge(self) -> Deferred:
        """Remove crash leftovers from the hold area's tmp/ (older than a day)."""
        reactor = self.server.reactor
        d = deferToThreadPool(reactor, reactor.getThreadPool(), self.server.hold_area.purge_tmp)

        def purged(count: int) -> None:
            if count:
                log.warn("removed {count} crash leftover(s) from the hold area's tmp/", count=count)

        return d.addCallback(purged)

    def run(self) -> Deferred:
        return Deferred.fromCoroutine(self._run())

    async def _run(self) -> None:
        server = self.server
        pool = server.reactor.getThreadPool()
        released = await deferToThreadPool(server.reactor, pool, lambda: list(server.hold_area.take_released()))
        for message_id, record, message in released:
            try:
                await self._deliver(record, message)
            except MailError as error:
                log.error("held message {id} not delivered: {error}", id=message_id, error=error.reply())
                continue
            await deferToThreadPool(server.reactor, pool, server.hold_area.remove_released, message_id)
            log.info("held message {id} released and delivered", id=message_id)

    async def _deliver(self, record: dict, message: bytes) -> None:
        # A trusted origin (recorded when held) is signed on release, as it would have been then.
        client = Client(
            ip=record.get("client_ip", ""), helo=record.get("helo", ""), sasl_user=record.get("sasl_user"),
            trusted=record.get("trusted", False),
        )
        await self.server.injector.inject(
            record.get("sender", ""), record["recipients"], message, run_checks=False, client=client
        )


class HangupReload(Service):
    """C{kill -HUP} (what C{mailserver reload} sends) reloads the tables."""

    def __init__(self, server: "Server") -> None:
        self.server = server
        self._previous: Any = None

    def startService(self) -> None:
        super().startService()
        reactor = self.server.reactor
        self._previous = signal.signal(signal.SIGHUP, lambda *_: reactor.callFromThread(self.server.reload))

    def stopService(self) -> None:
        super().stopService()
        if self._previous is not None:
            signal.signal(signal.SIGHUP, self._previous)


class _PoolService(Service):
    """
    Starts and stops a thread pool of our own with the service tree; with
    C{workers} (verification processes whose fallback is this pool), starts
    them after the pool and stops the pool only once they have ended, so
    what they hand back at their end still runs.
    """

    def __init__(self, pool: ThreadPool, workers: Any = None) -> None:
        self.pool = pool
        self.workers = workers

    def startService(self) -> None:
        super().startService()
        self.pool.start()
        if self.workers is not None:
            self.workers.start()

    def stopService(self) -> Any:
        super().stopService()
        if self.workers is None:
            self.pool.stop()
            return None
        return self.workers.stop().addBoth(lambda _: self.pool.stop())


class _StopHook(Service):
    def __init__(self, hook: Any) -> None:
        self.hook = hook

    def stopService(self) -> None:
        super().stopService()
        self.hook()


class StatusFile(Service):
    """C{data_directory/status.json}: pid and listeners, for C{mailserver status}."""

    def __init__(self, path: str, listeners: dict[str, list[str]]) -> None:
        self.path = path
        self.listeners = listeners

    def startService(self) -> None:
        super().startService()
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        status = {"pid": os.getpid(), "listeners": self.listeners}
        replace_atomically(self.path, json.dumps(status).encode("utf-8"), 0o644)

    def stopService(self) -> None:
        super().stopService()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def imap_folder_registry() -> IFolderRegistry:
    """IMAP's folders: one index per folder, describing messages for IMAP."""
    return folder_registry(describe, DESCRIBE_VERSION)


def maildir_imap_accounts(
    maildir_of: Callable[[str], str], notifier: Any, reactor: Any, registry: IFolderRegistry | None = None, **options: Any
) -> Callable[[str], Any]:
    """C{imap_account_factory} over Maildir++ folder trees (L{Folders}) and, by default, a new L{imap_folder_registry}."""
    return imap_account_factory(maildir_of, notifier, reactor, Folders, registry or imap_folder_registry(), **options)


def status_path(config: Config) -> str:
    return os.path.join(config.data_directory, "status.json")


class Server:
    """The parts built from one Config, kept apart so tests can reach each."""

    def __init__(self, config: Config, reactor: Any, resolver: Any = None, relay_port: int = 25) -> None:
        """C{resolver} and C{relay_port} replace DNS and port 25 (tests)."""
        self.config = config
        self.reactor = reactor
        self.users = FileUserDatabase(config.passwd_file, reactor)
        self.notifier = MailboxNotifier(reactor)
        # The store's group commits get writer threads of their own (leaner than the reactor's
        # pool), as many as it runs at once (MaildirStore.max_writers).
        self.store_writers = WriterThreads(reactor, size=2)
        self.store = MaildirStore(
            reactor, config.myhostname, on_delivered=self.notifier.changed, threadpool=self.store_writers
        )
        self._limits_by_record = LimitsByRecord(config.quota_rule)  # parsed once per passwd-file record
        # Quota reads (small files) get threads of their own: in the reactor's pool they would
        # queue behind the store's fsyncs and hold up every pipelined RCPT.
        self.quota_pool = ThreadPool(minthreads=0, maxthreads=2, name="quota")
        self.quota = MaildirQuota(
            reactor, self.quota_limits, self.store, config.myhostname, config.quota_warning, threadpool=self.quota_pool
        )
        local_domains = frozenset(config.mydestination) | frozenset(config.virtual_mailbox_domains)
        self.local_domains = local_domains
        self.mailboxes = UserMailboxes(self.users, config.home_mailbox, config.virtual_mailbox_base)
        self.local_mailboxes = LocalMailboxes(
            users=self.users,
            mydestination=frozenset(config.mydestination),
            recipient_delimiter=config.recipient_delimiter,
            home_mailbox=config.home_mailbox,
            virtual_mailbox_base=config.virtual_mailbox_base,
        )
        self.aliases = watch_alias_maps(config.alias_maps, reactor)
        self.virtual_aliases = watch_virtual_maps(config.virtual_alias_maps, reactor) if config.virtual_alias_maps else None
        expander = AliasExpander(
            self.aliases,
            self.virtual_aliases or (lambda: None),
            local_domains.__contains__,
            read_include_file,
            allow_files="alias" in config.allow_mail_to_files,
            allow_commands="alias" in config.allow_mail_to_commands,
            include_files="include" in config.allow_mail_to_files,
            include_commands="include" in config.allow_mail_to_commands,
            myorigin=config.myorigin,
        )
        self.spool = Spool(os.path.join(config.data_directory, "queue"), reactor)
        # Trusted mail (SASL users, mynetworks, sendmail, bounces) is DKIM-signed, in a thread, before spooling.
        self.signer = DKIMSigner(
            KeyStore(config.dkim_key_directory), config.dkim_selector, config.dkim_signing_domains, reactor
        )
        self.trusted_origin = TrustedOrigin(tuple(config.mynetworks))
        self.outbound = SigningQueue(self.spool, self.signer, self.trusted_origin)
        queue_available = True
        alias_stage = AliasStage(
            expander, self.local_mailboxes, local_domains.__contains__, queue_available, config.recipient_delimiter, reactor
        )
        stages = [
            RecipientSyntax(myorigin=config.myorigin),
            *([alias_stage] if config.alias_maps or config.virtual_alias_maps else []),
            RelayPolicy(
                is_local_domain=local_domains.__contains__,
                mynetworks=tuple(config.mynetworks),
                queue_available=queue_available,
            ),
            self.local_mailboxes,
        ]
        self.checks = ReloadingContentChecks(config, reactor)
        self.hold_area = HoldArea(os.path.join(config.data_directory, "hold"))
        # SMTP DATA past the spill threshold, as it arrives.  Whatever a crash left
        # there was never acknowledged: removed before anything listens.
        self.incoming = IncomingSpool(os.path.join(config.data_directory, "incoming"), reactor)
        removed = self.incoming.clear()
        if removed:
            log.info("removed {count} unacknowledged spool files from {directory}",
                     count=removed, directory=self.incoming.directory)
        self.resolver = resolver or LazyResolver(reactor)
        # DNSBL score and greylisting at RCPT, before the router (docs/spam.rst); rate limits; pregreet.
        self.spam = SpamDefence(config, reactor, self.resolver, self.trusted_origin)
        stages[-1:-1] = self.spam.stages
        # Inbound SPF/DKIM/ARC/DMARC at end of DATA (docs/internet.rst); trusted clients skip it.
        # DKIM/ARC verification is CPU work under the GIL: two threads of its own, not queued behind disk I/O.
        self.mailauth_pool = ThreadPool(minthreads=0, maxthreads=2, name="mail-authentication")
        self.authenticator = Authenticator(
            self.resolver, reactor,
            InboundPolicy(
                authserv_id=config.authserv_id,
                dmarc_reject_action=config.dmarc_reject_action,
                dmarc_quarantine_action=config.dmarc_quarantine_action,
                spf_fail_action=config.spf_fail_action,
                own_domains=local_domains,
                own_domain_fail_action=config.dmarc_own_domain_fail_action,
            ),
            pool=self.mailauth_pool,
        )
        if config.mail_authentication_verify_processes > 0:  # verification outside our GIL (docs/internet.rst)
            verifier = self.authenticator.dkim
            verifier.processes = VerifyProcesses(reactor, config.mail_authentication_verify_processes, verifier.in_thread)
        filters, sender_checks = [], []
        if config.mail_authentication_checks:
            # SPF at MAIL FROM (refused there when spf_fail_action = reject), the rest at end of DATA.
            sender_checks.append(SenderSPF(self.authenticator, self.trusted_origin, config.spf_fail_action == "reject"))
            filters.append(InboundAuthentication(self.authenticator, self.trusted_origin, reactor))
        # Milters (docs/spam.rst): SMTP sessions run connect..RCPT, this filter the content.
        self.smtpd_milters = session_opener(config, reactor, "smtpd")
        self.non_smtpd_milters = session_opener(config, reactor, "non_smtpd")
        if self.smtpd_milters is not None or self.non_smtpd_milters is not None:
            filters.append(MilterFilter(reactor, stages, config.junk_folder, self._local_milter))
        targets = LocalTargets(
            reactor, self.hold_area, self.trusted_origin, config.default_privs, config.command_time_limit
        )
        self.core = DeliveryCore(
            reactor=reactor,
            hostname=config.myhostname,
            stages=stages,
            committer=Committer(
                store=self.store, queue=self.outbound, to_file=targets.to_file, to_command=targets.to_command,
                hold=targets.hold, sieve=self.sieve_filter(),
            ),
            checks=[self.checks] if self.checks.configured else [],
            recipient_limit=config.smtpd_recipient_limit,
            message_size_limit=config.message_size_limit,
            sender_owned_by=SenderLogin(
                self.users, expander, self.local_mailboxes, local_domains.__contains__, config.recipient_delimiter, reactor
            ).owned_by,
            spool=self.incoming,
            filters=filters,
            sender_checks=sender_checks,
            junk_directory=disk_name(normalize_name(config.junk_folder)),
            quota=self.quota,
        )
        self.expander = expander
        self.injector = Injector(self.core)
        self.relay = Relay(
            reactor,
            self.resolver,
            port=relay_port,
            helo_name=config.smtp_helo_name,
            relayhost=config.relayhost,
            sasl_passwords=load_sasl_passwords(config.smtp_sasl_password_maps),
            tls_security_level=config.smtp_tls_security_level,
            connect_timeout=config.smtp_connect_timeout,
            destination_concurrency_limit=config.default_destination_concurrency_limit,
            mta_sts=MTASTSPolicies(
                DNSLookup(self.resolver), https_fetcher(reactor, DNSLookup(self.resolver)), reactor
            ) if config.smtp_mta_sts else None,
        )
        self.queue_manager = QueueManager(
            self.spool,
            self.relay,
            reactor,
            inject_bounce=self._inject_bounce,
            myhostname=config.myhostname,
            minimal_backoff_time=config.minimal_backoff_time,
            maximal_backoff_time=config.maximal_backoff_time,
            maximal_queue_lifetime=config.maximal_queue_lifetime,
            bounce_queue_lifetime=config.bounce_queue_lifetime,
            queue_run_delay=config.queue_run_delay,
            postmaster=f"postmaster@{config.myorigin}",
        )
        self.pickup = PickupService(
            os.path.join(config.data_directory, "maildrop"),
            reactor,
            PickupDelivery(
                self.injector.inject_reporting,
                self._inject_bounce,
                reactor,
                myhostname=config.myhostname,
                postmaster=f"postmaster@{config.myorigin}",
            ),
            max_size=config.message_size_limit + 65536 if config.message_size_limit else 1 << 40,
        )
        # Failed logins are delayed (growing, per client address) and banned by the throttle,
        # which each session puts in front of the portal; the checker itself does not wait.
        # Hashing has a small pool of its own: Argon2 costs 64 MiB and tens of
        # milliseconds a try, and a login flood must not stall deliveries.
        self.hashing_pool = ThreadPool(minthreads=0, maxthreads=2, name="password-hashing")
        # Passwords that verified are not hashed again for auth_cache_ttl (Dovecot's auth cache).
        cache = VerifiedCache(config.auth_cache_size, config.auth_cache_ttl, reactor.seconds)
        self.checker = PasswordChecker(
            self.users, reactor, failure_delay=0, threadpool=self.hashing_pool, cache=cache
        )
        self.throttle = AuthThrottle(reactor, base_delay=config.auth_failure_delay, limit=config.auth_failure_limit)
        self.plaintext = PlaintextPolicy.from_config(config)
        try:
            self.tls = build_contexts(TLSSettings.from_config(config), config.data_directory, config.myhostname)
        except CertificateError as error:
            raise ConfigError([Problem(config.where("smtpd_tls_cert_file")[0], config.where("smtpd_tls_cert_file")[1],
                                       str(error))]) from None
        self.realm = MailRealm(
            {
                IMessageDeliveryFactory: self._delivery_avatar,
                pop3.IMailbox: pop3_mailbox_factory(
                    self.mailboxes.maildir_of, reactor, MaildirReader, changed=self.notifier.changed
                ),
                imap4.IAccount: maildir_imap_accounts(self.mailboxes.maildir_of, self.notifier, reactor, quota=self.quota),
                ISieveScripts: sieve_account_factory(self.mailboxes.home_of, SieveQuotas(
                    max_script_size=config.sieve_max_script_size or 1 << 20,
                    max_scripts=config.sieve_quota_max_scripts,
                    max_storage=config.sieve_quota_max_storage,
                )),
            },
            anonymous_interfaces=frozenset({IMessageDeliveryFactory}),
        )
        self.portal = Portal(self.realm, [AllowAnonymousAccess(), self.checker])
        # IMAP and POP3 leave a reserve of descriptors to SMTP, the store and the queue.
        self.descriptors = DescriptorBudget.from_rlimit(reactor)
        refusals = RefusalLog(reactor)
        self.login_limits = {
            protocol: LoginLimits(
                protocol, client_limit, config.login_per_ip_limit, config.mail_max_userip_connections,
                config.login_timeout, self.descriptors, refusals,
            )
            for protocol, client_limit in (
                ("imap", config.imap_client_limit), ("pop3", config.pop3_client_limit),
                ("managesieve", config.pop3_client_limit),
            )
        }

    def _local_milter(self, envelope: Any) -> MessageMilter | None:
        """A C{non_smtpd_milters} session for mail from sendmail/pickup, with the local macros."""
        if self.non_smtpd_milters is None:
            return None
        session, context = self.non_smtpd_milters()
        sender = str(envelope.sender) if envelope.sender else ""
        context = context.with_(client_addr="127.0.0.1", client_name="localhost", queue_id=envelope.queue_id,
                                mail_addr=sender)  # fmt: skip
        return MessageMilter(session, context.values())

    def _inject_bounce(self, sender: str, recipients: Any, message: bytes) -> Deferred:
        """Deliver a DSN this host wrote: the pipeline without content checks."""
        return self.injector.inject(sender, recipients, message, False)

    def quota_limits(self, user: str) -> QuotaLimits:
        """C{user}'s quota: the passwd-file's C{userdb_quota_rule} extra field, else C{quota_rule}."""
        try:
            return self._limits_by_record(user, self.users.lookup(user))
        except ValueError as error:
            log.warn("{user}: bad quota rule in passwd-file, using quota_rule: {error}", user=user, error=error)
            return self.config.quota_rule

    def reload(self) -> None:
        """SIGHUP / C{mailserver reload}: re-read users, alias and check tables and certificates now."""
        log.info("reloading tables")
        self.users.reload(force=True)
        for maps in (self.aliases, self.virtual_aliases):
            for watched in getattr(maps, "watched", ()):
                watched.reload(force=True)
        self.checks.reload()
        # Certificate files are read off the reactor thread; new connections get the new pair.
        deferToThreadPool(self.reactor, self.reactor.getThreadPool(), self.tls.reload)

    def _delivery_avatar(self, user: Any) -> DeliveryAgent:
        return DeliveryAgent(self.core, None if user is ANONYMOUS else user)

    def _session_limits(self) -> dict[str, Any]:
        """The SMTP limits that SMTP and LMTP sessions share (smtpd_* parameters)."""
        config = self.config
        return dict(
            hostname=config.myhostname,
            message_size_limit=config.message_size_limit,
            timeout=config.smtpd_timeout,
            data_time_limit=config.smtpd_data_time_limit,
            min_data_rate=config.smtpd_min_data_rate,
            hard_error_limit=config.smtpd_hard_error_limit,
            line_length_limit=config.line_length_limit,
            bare_newline=config.smtpd_forbid_bare_newline,
        )

    def smtp_factory(self, listener: str) -> SMTPFactory:
        config = self.config
        policy = SMTPPolicy(
            banner=config.smtpd_banner,
            **self._session_limits(),
            auth_required=listener != "smtpd_listen",
            tls_required=config.smtpd_tls_security_level == "encrypt" and listener != "smtps_listen",
            disable_plaintext_auth=config.disable_plaintext_auth,
        )
        implicit = listener == "smtps_listen"
        tls = self.tls.smtpd if config.smtpd_tls_security_level != "none" or implicit else None
        return SMTPFactory(
            self.portal,
            policy,
            self.reactor,
            max_connections=config.smtpd_max_connections,
            per_client_limit=config.smtpd_client_connection_count_limit,
            stress_timeout=config.smtpd_stress_timeout,
            context_factory=tls,
            challengers=dict(CHALLENGERS) if config.smtpd_sasl_auth_enable else {},
            implicit_tls=implicit,
            throttle=self.throttle,
            open_milter=self.smtpd_milters,
            rates=self.spam.rates if listener == "smtpd_listen" else None,
        )

    def sieve_filter(self) -> SieveFilter:
        """Sieve at final delivery: global scripts from main.cf, per-user scripts in each home."""
        config = self.config
        limits = SieveLimits(
            max_actions=config.sieve_max_actions,
            max_redirects=config.sieve_max_redirects,
            vacation_min_period=config.sieve_vacation_min_period,
            vacation_default_period=config.sieve_vacation_default_period,
            vacation_max_period=config.sieve_vacation_max_period,
        )
        return SieveFilter(
            self.store,
            before=config.sieve_before.replace(",", " ").split(),
            after=config.sieve_after.replace(",", " ").split(),
            global_dir=config.sieve_global,
            recipient_delimiter=config.recipient_delimiter,
            hostname=config.myhostname,
            limits=limits,
            autocreate=config.lda_mailbox_autocreate,
            cache=ScriptCache(max_size=config.sieve_max_script_size or 1 << 20),
        )

    def pop3_factory(self) -> POP3Factory:
        # The checker already delays failed passwords (auth_failure_delay).
        return POP3Factory(
            self.portal, self.reactor, timeout=self.config.pop3_timeout, context_factory=self.tls.pop3,
            allow_plaintext=self.plaintext, throttle=self.throttle, limits=self.login_limits["pop3"],
        )

    def factories(self) -> dict[str, Any]:
        """One protocol factory per listener parameter that has a protocol so far."""
        factories: dict[str, Any] = {name: self.smtp_factory(name) for name in ("smtpd_listen", "submission_listen")}
        factories["smtpd_listen"] = self.spam.wrap_smtpd(factories["smtpd_listen"])
        factories["smtps_listen"] = wrap_implicit(self.smtp_factory("smtps_listen"), self.tls.smtpd)
        factories["pop3_listen"] = self.pop3_factory()
        factories["pop3s_listen"] = wrap_implicit(self.pop3_factory(), self.tls.pop3)
        factories["imap_listen"] = self.imap_factory()
        factories["imaps_listen"] = wrap_implicit(self.imap_factory(), self.tls.imap)
        factories["managesieve_listen"] = ManageSieveFactory(
            self.portal, self.reactor, sieve_extensions=SIEVE_EXTENSIONS, context_factory=self.tls.imap, allow_plaintext=self.plaintext,
            throttle=self.throttle, timeout=self.config.managesieve_timeout,
            max_literal=self.config.sieve_max_script_size or 1 << 20,
            max_redirects=self.config.sieve_max_redirects, limits=self.login_limits["managesieve"],
        )
        factories["lmtp_listen"] = self.lmtp_factory()
        return factories

    def lmtp_factory(self) -> LMTPFactory:
        """LMTP: the SMTP pipeline (aliases, checks per lmtp_content_checks, quotas) for a local MTA."""
        config = self.config
        filters = []
        if config.lmtp_mail_authentication_checks:
            filters.append(InboundAuthentication(self.authenticator, self.trusted_origin, self.reactor))
        core = dataclasses.replace(
            self.core, checks=self.core.checks if config.lmtp_content_checks else [], filters=filters
        )
        policy = LMTPPolicy(
            banner=f"{config.myhostname} LMTP {config.mail_name}",
            **self._session_limits(),
            local_domains=self.local_domains,
        )
        tls = self.tls.smtpd if config.lmtp_tls_security_level == "may" else None
        return LMTPFactory(DeliveryAgent(core, None), policy, self.reactor, context_factory=tls)

    def imap_factory(self) -> IMAPFactory:
        config = self.config
        return IMAPFactory(
            self.portal, self.reactor, self.notifier, timeout=config.imap_timeout,
            literal_limit=config.imap_literal_limit or 50 * 1024 * 1024,
            context_factory=self.tls.imap, allow_plaintext=self.plaintext, throttle=self.throttle,
            preauth_timeout=config.login_timeout, limits=self.login_limits["imap"],
            literal_deadline=config.imap_literal_deadline,
            literal_min_rate=config.imap_literal_min_rate,
        )


def _smtp_sessions(factory: Any) -> Any:
    """Open sessions of an SMTP listener's factory (under implicit TLS, of the wrapped one)."""
    slots = getattr(getattr(factory, "wrappedFactory", factory), "slots")
    return lambda: len(slots.sessions)


def metrics_sources(server: Server, factories: dict[str, Any]) -> MetricSources:
    """What the gauges of docs/metrics.rst read: live counters and queue directories."""
    config = server.config
    connections: dict[str, Any] = {name.removesuffix("_listen"): _smtp_sessions(factories[name]) for name in SMTP_LISTENERS}
    sessions: dict[str, Any] = {}
    for protocol, limits in server.login_limits.items():
        connections[protocol] = lambda limits=limits: sum(limits.connections.values())
        sessions[protocol] = lambda limits=limits: sum(limits.sessions.values())
    spool = server.spool.directory.path
    queues: dict[str, Any] = {
        state: (lambda state=state: count_entries(os.path.join(spool, state))) for state in (*SPOOL_STATES, CORRUPT)
    }
    queues["hold"] = lambda: count_entries(server.hold_area.directory, frozenset({"tmp", "released"}))
    queues["maildrop"] = lambda: count_entries(os.path.join(config.data_directory, "maildrop"), frozenset({"corrupt"}))
    return MetricSources(connections, sessions, lambda: server.notifier.subscriptions, queues)


def add_metrics(top: MultiService, server: Server, factories: dict[str, Any]) -> None:
    """C{/metrics} on every C{metrics_listen} endpoint, for clients in C{metrics_allow}."""
    config = server.config
    metrics = build_metrics(
        metrics_sources(server, factories), lambda ip: in_networks(ip, config.metrics_allow), server.reactor
    )
    top.metrics = metrics  # type: ignore[attr-defined]
    metrics.observer_service().setServiceParent(top)
    for description in config.metrics_listen:
        endpoint = serverFromString(server.reactor, with_unix_mode(description))
        Listener("metrics_listen", description, endpoint, metrics.site, server.reactor).setServiceParent(top)


def listen_backlog(configured: int, somaxconn: str = "/proc/sys/net/core/somaxconn") -> int:
    """
    C{listen_backlog}, or for 0 the kernel's limit (a larger backlog is cut
    to it anyway) capped at 4096, or 100 (Postfix's) where it cannot be read.
    Twisted's own default of 50 leaves a burst of clients without a banner.
    """
    if configured:
        return min(configured, 65535)
    try:
        with open(somaxconn, encoding="ascii") as handle:
            return max(1, min(int(handle.read().strip()), 4096))
    except (OSError, ValueError):
        return 100


def build(config: Config, reactor: Any, **testing: Any) -> MultiService:
    """Everything the daemon runs, as one MultiService (C{testing}: see L{Server})."""
    server = Server(config, reactor, **testing)
    top = MultiService()
    top.server = server  # type: ignore[attr-defined]
    server.users.setServiceParent(top)
    _PoolService(server.hashing_pool).setServiceParent(top)
    _PoolService(server.quota_pool).setServiceParent(top)
    # The verification workers' fallback is the mailauth pool: it stops only once they have ended.
    _PoolService(server.mailauth_pool, workers=server.authenticator.dkim.processes).setServiceParent(top)
    TableWatcher(server.aliases, server.virtual_aliases, server.checks).setServiceParent(top)
    HoldReleaser(server).setServiceParent(top)
    server.spam.setServiceParent(top)
    known_maildirs = partial(server.mailboxes.known_maildirs, server.local_domains)
    MaildirTmpCleaner(known_maildirs, reactor, start_delay=MAILDIR_CLEANUP_DELAY).setServiceParent(top)
    server.queue_manager.setServiceParent(top)
    server.pickup.setServiceParent(top)
    _StopHook(getattr(server.resolver, "stop", lambda: None)).setServiceParent(top)
    _StopHook(server.notifier.stop).setServiceParent(top)
    HangupReload(server).setServiceParent(top)
    listeners: dict[str, list[str]] = {}
    backlog = listen_backlog(config.listen_backlog)
    factories = server.factories()
    for name, factory in factories.items():
        for description in listen_endpoints(config, name):
            endpoint = serverFromString(reactor, with_unix_mode(with_backlog(description, backlog)))
            Listener(name, description, endpoint, factory, reactor).setServiceParent(top)
            listeners.setdefault(name, []).append(description)
    if config.metrics_listen:
        add_metrics(top, server, factories)
        listeners["metrics_listen"] = list(config.metrics_listen)
    StatusFile(status_path(config), listeners).setServiceParent(top)
    log.info("mailserver for {domains} with listeners {listeners}", domains=sorted(server.local_domains), listeners=listeners)
    return top
