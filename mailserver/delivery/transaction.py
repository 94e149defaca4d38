"""
One DATA phase: collect the message, run the content checks off the reactor
thread, then commit it durably to the store and the queue before 250.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from twisted.internet import threads
from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import LogLevel
from twisted.python.failure import Failure
from zope.interface import implementer

from mailserver.envelope import (
    Client,
    CommandTarget,
    Envelope,
    FileTarget,
    LocalMailbox,
    Recipient,
    RemoteAddress,
)
from mailserver.address import parse_mailbox
from mailserver.delivery import quota_gate, spool_edits
from mailserver.delivery.received import add_missing_headers, delivery_prefix, received_header
from mailserver.delivery.filters import FilterResult, content_work, skips
from mailserver.delivery.recipient_route import route
from mailserver.delivery.sieve_filter import SieveFilter, SievePlan, write_memory
from mailserver.errors import MailError
from mailserver.interfaces import IMailStore, IOutboundQueue, ISMTPTransaction
from mailserver.logformat import QuickLogger
from mailserver.spooled import SpooledMessage

if TYPE_CHECKING:
    from mailserver.delivery.pipeline import DeliveryCore

log = QuickLogger(namespace="mailserver.delivery")


@dataclass
class Committer:
    """
    Where accepted mail goes: the Maildir store, the outbound queue (None
    until outbound delivery is configured), and the delivery functions for
    alias file and command targets.
    """

    store: IMailStore
    queue: IOutboundQueue | None = None
    to_file: Callable[[FileTarget, str, bytes], Deferred] | None = None
    to_command: Callable[[CommandTarget, str, str, bytes], Deferred] | None = None
    hold: Callable[[Envelope, bytes | SpooledMessage, str], Deferred] | None = None
    sieve: SieveFilter | None = None  # Sieve at final delivery (None: every copy to INBOX)


#: The origin of the messages Sieve makes (vacation replies, reject notices, redirects).
_OURSELVES = Client(ip="127.0.0.1", protocol="local", trusted=True)


@implementer(ISMTPTransaction)
class Transaction:
    """
    The message of one envelope.  The server feeds it dot-unstuffed bytes
    with LF line ends (L{write}) and calls L{commit} at end of data.  With
    an incoming spool (C{core.spool}) a large message goes to a spool file
    as it arrives; the caller pauses its input while L{behind}.  Spool files
    are removed when the transaction ends, whatever the outcome.
    """

    def __init__(self, core: DeliveryCore, envelope: Envelope, content_idle: bool | None = None,
                 quick: object | None = None) -> None:
        """
        C{content_idle} and C{quick}: the pipeline's L{content_work} for
        the envelope's client, if it knows it (asked at L{commit} otherwise).
        """
        self.core = core
        self.envelope = envelope
        self._content_idle = content_idle
        self._quick = quick
        self._writer = core.spool.writer() if core.spool is not None else None
        self._chunks: list[bytes] = []
        self._files: list[str] = []  # spool files to remove at the end
        self._quarantine: str | None = None  # why a filter sent the message to the junk folder
        self.size = 0
        self.error: MailError | None = None
        self._quota_seen: list = []  # (mailbox, usage before) read at end of data, for the warning

    def write(self, data: bytes) -> None:
        if self.error is not None:
            return
        self.size += len(data)
        if 0 < self.core.message_size_limit < self.size:
            self.fail(MailError(552, "5.3.4", "Message size exceeds fixed limit"))
            return
        if self._writer is not None:
            self._writer.write(data)
        else:
            self._chunks.append(data)

    @property
    def behind(self) -> bool:
        """True while the spool writer is behind: stop reading until L{when_caught_up}."""
        return self._writer is not None and self._writer.behind

    def when_caught_up(self, callback: Callable[[], object]) -> None:
        if self._writer is not None:
            self._writer.when_caught_up(callback)
        else:
            callback()

    def fail(self, error: MailError) -> None:
        """Refuse the message at end of data; stop storing now, keep reading until then."""
        if self.error is None:
            self.error = error
        self._chunks = []
        if self._writer is not None:
            self._writer.discard()

    def abort(self) -> None:
        self._chunks = []
        if self._writer is not None:
            self._writer.discard()
        self._remove_files()

    def _remove_files(self) -> None:
        files, self._files = self._files, []
        if files and self.core.spool is not None:
            self.core.spool.remove(files)

    def commit(self) -> Deferred[str]:
        """
        Deliver durably; fire with the 250 reply text or fail with L{MailError}.
        One reply for all recipients: if the message fits nobody's quota,
        552 5.2.2; if it fits only some, 452 4.2.2 and nothing is delivered
        (the client retries; no recipient is dropped silently).
        """
        if self._quick_eligible():
            data = self._take_chunks() if self._writer is None else self._writer.in_memory()
            if data is not None:
                step = self._quick
                return self._commit_plain(data) if step is None else self._commit_filtered(step, data)
        return Deferred.fromCoroutine(self._commit_all())

    def _plain(self) -> bool:
        """True for a message L{_commit_plain} commits (see L{_quick_eligible})."""
        return self._quick_eligible() and self._quick is None

    def _quick_eligible(self) -> bool:
        """
        True for the common cases the coroutines are not needed for -- the
        message in memory (the caller checks it never spilled to the spool),
        no error yet, no quota limit among the recipients, no content check,
        and either no filter with work to do for this client (then
        L{_commit_plain}) or one L{mailserver.interfaces.IImmediateFilter}, kept in C{_quick}
        (then L{_commit_filtered}) -- as L{content_work} tells; False for
        the general path.
        """
        if self.error is not None or quota_gate.limited(self.core.quota, self.envelope.recipients):
            return False
        idle = self._content_idle
        if idle is None:
            idle, self._quick = content_work(self.core.checks, self.core.filters, self.envelope.client)
            self._content_idle = idle
        return idle or self._quick is not None

    def _commit_plain(self, data: bytes) -> Deferred[str]:
        """L{commit} of a L{_plain} message, C{data}: the same steps with one Deferred, the store's."""
        return self._commit_received(self._received(data))

    def _commit_filtered(self, step: Any, data: bytes) -> Deferred[str]:
        """
        L{commit} of a message in memory whose only end-of-DATA work is
        C{step}, in callback style (C{step.filter_now}): what
        L{_commit_message} does with its result, then L{_commit_received}.
        """
        now = self.core.reactor.seconds()
        try:
            result = step.filter_now(self.envelope, self._with_headers(data, now))
            if not isinstance(result, Deferred):
                return self._filtered(result, step, now)
        except Exception:
            return fail()
        return result.addCallback(self._filtered, step, now)

    def _filtered(self, result: FilterResult, step: Any, now: float) -> Deferred[str]:
        """L{_commit_filtered} once C{step}'s C{result} is known."""
        if result.error is not None:
            self._log("reject", f"{step.name}: {result.error.reply()}")
            return fail(result.error)
        if result.quarantine is not None:
            self._quarantine = result.quarantine
        message = result.message
        if result.discard or result.hold is not None:
            detail = f"{step.name}: {result.hold or 'DISCARD'}"
            return Deferred.fromCoroutine(self._set_aside(message, detail, result.hold))
        return self._commit_received(message.prepend(self._trace(now)))

    def _commit_received(self, spooled: SpooledMessage) -> Deferred[str]:
        """The end of the quick paths: C{spooled} (trace on top) to the store and queue, logged."""
        try:
            routes = self._routes(spooled)
            stored = self._store(routes, log_sieve=False)  # its events logged below, in the same callback
        except Exception:
            self._remove_files()
            return fail()
        if stored is None:
            stored = succeed(None)

        def failed(failure: Failure) -> Failure:
            self._remove_files()
            if failure.check(MailError):
                self._log_failure(failure.value)
            return failure

        def done(_: object) -> str:
            self._remove_files()
            self._log_delivered(routes)
            return f"2.0.0 Ok: queued as {self.envelope.queue_id}"

        def stored_ok(_: object) -> Deferred | str:
            self._log_sieve_events(None, routes.plan)
            if routes.has_tail():
                return Deferred.fromCoroutine(self._tail(routes)).addCallbacks(done, failed)
            return done(None)

        def store_failed(failure: Failure) -> Failure:
            self._log_sieve_events(None, routes.plan)
            return failed(failure)

        return stored.addCallbacks(stored_ok, store_failed)

    def commit_each(self) -> Deferred[list[tuple[Recipient, str | MailError]]]:
        """
        LMTP: deliver once to every recipient the message fits, and fire with
        each recipient's outcome in RCPT order: the 250 text or a L{MailError}.
        """
        return Deferred.fromCoroutine(self._commit_each())

    async def _quota_refusals(self) -> dict[int, MailError]:
        if self.error is not None or not quota_gate.limited(self.core.quota, self.envelope.recipients):
            return {}
        try:
            refusals, self._quota_seen = await quota_gate.refused(self.core.quota, self.envelope.recipients, self.size)
        except OSError as error:  # an unreadable Maildir: try again later, nothing half done
            log.error("{queue_id}: quota lookup failed: {error}", queue_id=self.envelope.queue_id, error=error)
            self.abort()
            raise MailError(451, "4.3.0", "Error: quota lookup failed, try again later") from None
        for index, error in refusals.items():
            log.info(
                "{queue_id}: to=<{rcpt}>, status=bounced ({reply})", queue_id=self.envelope.queue_id,
                rcpt=str(self.envelope.recipients[index].original), reply=error.reply(),
            )
        return refusals

    async def _commit_all(self) -> str:
        recipients = self.envelope.recipients
        refusals = await self._quota_refusals()
        if refusals:
            self.abort()
            if len(refusals) < len(recipients):
                raise MailError(452, "4.2.2", "Mailbox full: some recipients are over quota, try again later")
            raise next(iter(refusals.values())) if len(refusals) == 1 else MailError(552, "5.2.2", "Mailbox full")
        reply = await self._commit()
        if self._quota_seen:  # a limited mailbox was read: it may have crossed its warning level
            Deferred.fromCoroutine(quota_gate.warn(self.core.quota, self._quota_seen, recipients, self.size))
        return reply

    async def _commit_each(self) -> list[tuple[Recipient, str | MailError]]:
        recipients = list(self.envelope.recipients)
        refusals = await self._quota_refusals()
        accepted = [r for index, r in enumerate(recipients) if index not in refusals]
        outcome: str | MailError = MailError(552, "5.2.2", "Mailbox full")
        if accepted:
            self.envelope.recipients = accepted
            try:
                outcome = await self._commit()
            except MailError as error:
                outcome = error
            else:
                if self._quota_seen:
                    Deferred.fromCoroutine(quota_gate.warn(self.core.quota, self._quota_seen, accepted, self.size))
        else:
            self.abort()
        return [(r, refusals.get(index, outcome)) for index, r in enumerate(recipients)]

    def commit_checked(self) -> Deferred[str]:
        """Deliver a message whose content checks already ran (released from hold)."""
        return Deferred.fromCoroutine(self._commit(run_checks=False))

    async def _commit(self, run_checks: bool = True) -> str:
        try:
            return await self._commit_message(run_checks)
        finally:
            self._remove_files()

    def _in_thread(self, function: Callable, *args: object) -> Deferred:
        reactor = self.core.reactor
        return threads.deferToThreadPool(reactor, reactor.getThreadPool(), function, *args)

    def _take_chunks(self) -> bytes:
        data = b"".join(self._chunks)
        self._chunks = []
        return data

    async def _message(self) -> SpooledMessage:
        """The message as received: from the spool writer, or joined from memory."""
        if self._writer is None:
            return SpooledMessage(self._take_chunks())
        message = await self._writer.finish()
        if message.path is not None:
            self._files.append(message.path)
        return message

    async def _commit_message(self, run_checks: bool) -> str:
        envelope = self.envelope
        if self.error is None and self._writer is not None and self._writer.failed:
            self.error = MailError(451, "4.3.0", "Error: queue file write error")
        if self.error is not None:
            self._log("reject", self.error.reply())
            raise self.error
        core = self.core
        now = core.reactor.seconds()
        message = await self._message()
        small = message.in_memory()
        if small is not None:
            message = SpooledMessage(self._with_headers(small, now))
        else:
            message = await self._in_thread(
                spool_edits.add_headers, message, core.hostname, envelope.queue_id, now, self._submitter()
            )
        for step in core.filters if run_checks else ():
            if skips(step, envelope.client):
                continue
            result = await step.filter(envelope, message)
            message = result.message
            if result.error is not None:
                self._log("reject", f"{step.name}: {result.error.reply()}")
                raise result.error
            if result.quarantine is not None:
                self._quarantine = result.quarantine
            if result.discard or result.hold is not None:
                return await self._set_aside(message, f"{step.name}: {result.hold or 'DISCARD'}", result.hold)
        for check in core.checks if run_checks else ():
            verdict, message = await self._inspect(check, message)
            for event in verdict.events:
                log.info("{queue_id}: {check}: {event}", queue_id=envelope.queue_id, check=check.name, event=event)
            if verdict.error is not None:
                self._log("reject", verdict.error.reply())
                raise verdict.error
            if verdict.discard:
                return await self._set_aside(message, "content check DISCARD", None)
            if verdict.redirect is not None:
                envelope.recipients = [await self.resolve(verdict.redirect)]
            for address in verdict.bcc:
                envelope.recipients.append(await self.resolve(address))
            if verdict.hold:
                return await self._set_aside(message, verdict.hold_reason or "content check HOLD", verdict.hold_reason or "HOLD")
        await self._deliver(message.prepend(self._trace(now)))
        return f"2.0.0 Ok: queued as {envelope.queue_id}"

    def _trace(self, now: float) -> bytes:
        """The C{Received:} header for this message."""
        core, envelope = self.core, self.envelope
        client = envelope.client
        single = envelope.recipients[0].original if len(envelope.recipients) == 1 else None
        return received_header(
            client.helo, client.ip, core.hostname, client.protocol, envelope.queue_id,
            str(single) if single else None, now,
        )

    def _received(self, data: bytes) -> SpooledMessage:
        """The plain path's C{data} as L{_commit_message} makes it: missing headers added, the trace on top."""
        now = self.core.reactor.seconds()
        return SpooledMessage(self._trace(now) + self._with_headers(data, now))

    def _submitter(self) -> str | None:
        """The envelope sender of mail from a SASL user (for a missing From:), else None."""
        envelope = self.envelope
        submitted = envelope.client.sasl_user is not None and envelope.sender is not None
        return str(envelope.sender) if submitted else None

    def _with_headers(self, data: bytes, now: float) -> bytes:
        """C{data} with the headers a message must have (Date:, Message-ID:, From: when submitted) added."""
        core = self.core
        return add_missing_headers(data, core.hostname, self.envelope.queue_id, now, sender=self._submitter())

    async def _set_aside(self, message: SpooledMessage, detail: str, hold: str | None) -> str:
        """Accept without delivering: into the hold area with reason C{hold}, or dropped (None)."""
        envelope = self.envelope
        if hold is not None:
            if self.core.committer.hold is None:
                raise MailError(451, "4.3.0", "Error: hold area not available")
            await self.core.committer.hold(envelope, _payload(message), hold)
        self._log("hold" if hold is not None else "discarded", detail)
        return f"2.0.0 Ok: queued as {envelope.queue_id}"

    async def _inspect(self, check: Any, message: SpooledMessage) -> tuple[Any, SpooledMessage]:
        """One content check in a thread: over the bytes, or over a view of the spool file."""
        small = message.in_memory()
        if small is not None:
            verdict = await self._in_thread(check.inspect, self.envelope, small)
            return verdict, SpooledMessage(verdict.message)
        spool = self.core.spool
        assert spool is not None
        path = spool.new_path()
        self._files.append(path)  # removed at the end if the check made it
        verdict, message, _ = await self._in_thread(spool_edits.inspect, check, self.envelope, message, lambda: path)
        return verdict, message

    async def resolve(self, text: str) -> Recipient:
        """An address from a check table (REDIRECT, BCC) or the hold area, routed like a RCPT."""
        address = parse_mailbox(text.strip().strip("<>"))
        probe = Envelope(client=self.envelope.client, sender=self.envelope.sender, queue_id=self.envelope.queue_id)
        try:
            return await route(self.core.stages, probe, address)
        except MailError as error:
            raise MailError(451, "4.3.0", f"Error: delivery target <{address}>: {error.text}") from None

    async def _deliver(self, spooled: SpooledMessage) -> None:
        """
        Local copies to the store, remote ones to the queue (one queue entry
        per envelope sender: a list with an C{owner-NAME} alias gets its
        bounces there, as in Postfix), alias files and commands last.
        """
        routes = self._routes(spooled)
        try:
            stored = self._store(routes)
            if stored is not None:
                await stored
            if routes.has_tail():
                await self._tail(routes)
        except MailError as error:
            self._log_failure(error)
            raise
        self._log_delivered(routes)

    def _routes(self, spooled: SpooledMessage) -> _Routes:
        """Where each copy of C{spooled} goes, by kind of destination (no I/O)."""
        envelope = self.envelope
        routes = _Routes(spooled, _payload(spooled), str(envelope.sender) if envelope.sender else "")
        copies, mailboxes, remote = routes.copies, routes.mailboxes, routes.remote
        for recipient in envelope.recipients:
            copy_sender = str(recipient.owner) if recipient.owner is not None else routes.sender
            for destination in recipient.destinations:
                if isinstance(destination, LocalMailbox):
                    maildir = destination.maildir
                    if self._quarantine is not None:
                        maildir = os.path.join(maildir, self.core.junk_directory)
                    if maildir not in copies:
                        copies[maildir] = delivery_prefix(
                            copy_sender, str(recipient.original), destination.user
                        )
                        mailboxes[maildir] = (destination, str(recipient.original))
                        routes.delivered.append(destination.user)
                elif isinstance(destination, RemoteAddress):
                    addresses = remote.setdefault(copy_sender, [])
                    if str(destination.address) not in addresses:
                        addresses.append(str(destination.address))
                elif isinstance(destination, (FileTarget, CommandTarget)):
                    routes.targets.append((destination, recipient))
        return routes

    def _store(self, routes: _Routes, log_sieve: bool = True) -> Deferred | None:
        """
        The local copies into the store (Sieve first, in its writer thread);
        None when there are none.  Sieve's events are logged when it is done
        (C{log_sieve}), else by the caller.
        """
        store = self.core.committer.store
        routes.plan = plan = self._sieve_plan(routes.spooled, routes.mailboxes, routes.copies)
        if plan is not None:
            stored = store.deliver(routes.message, plan)
            return stored.addBoth(self._log_sieve_events, plan) if log_sieve else stored
        if routes.copies:
            return store.deliver(routes.message, list(routes.copies.items()))
        return None

    def _log_sieve_events(self, result: object, plan: SievePlan | None) -> object:
        for user, event in plan.events if plan is not None else ():
            log.info("{queue_id}: sieve: {user}: {event}", queue_id=self.envelope.queue_id, user=user, event=event)
        return result

    async def _tail(self, routes: _Routes) -> None:
        """After the store: Sieve's messages and vacation memory, the queue, alias files and commands."""
        envelope = self.envelope
        committer = self.core.committer
        message, sender, delivered = routes.message, routes.sender, routes.delivered
        plan = routes.plan
        outgoing, memory = (plan.outgoing, plan.memory) if plan is not None else ([], [])
        for copy_sender, addresses, data in outgoing:
            assert committer.queue is not None
            # Made here (vacation, reject notice, redirect): signed when its From: is ours.
            await committer.queue.enqueue(copy_sender, addresses, _payload(data), client=_OURSELVES)
        if memory:
            try:
                await self._in_thread(write_memory, memory)
            except OSError as error:  # the mail is safe; at worst a second vacation reply
                log.error("{queue_id}: sieve: vacation memory not written: {error}",
                          queue_id=envelope.queue_id, error=error)
        for copy_sender, addresses in routes.remote.items():
            if committer.queue is None:
                raise MailError(451, "4.3.0", "Outbound queue not available")
            await committer.queue.enqueue(copy_sender, addresses, message, client=envelope.client)
            delivered += addresses
        whole = routes.spooled.in_memory()
        if routes.targets and whole is None:
            whole = await self._in_thread(routes.spooled.read)  # alias file and command targets take bytes
        for target, recipient in routes.targets:
            assert whole is not None
            copy = delivery_prefix(sender, str(recipient.original), str(recipient.original)) + whole
            if isinstance(target, FileTarget) and committer.to_file is not None:
                await committer.to_file(target, sender, copy)
                delivered.append(target.path)
            elif isinstance(target, CommandTarget) and committer.to_command is not None:
                await committer.to_command(target, sender, str(recipient.original), copy)
                delivered.append("|" + target.command)
            else:
                raise MailError(550, "5.7.1", "Delivery to files and commands is not enabled")

    def _log_failure(self, error: MailError) -> None:
        self._log("deferred" if error.temporary else "bounced", error.reply())

    def _log_delivered(self, routes: _Routes) -> None:
        where = f" (quarantined: {self._quarantine})" if self._quarantine is not None and routes.copies else ""
        # Postfix's words: delivered here, or queued for the outbound queue (then sent by it).
        status = "queued" if routes.remote else "delivered"
        self._log(status, f"delivered to {', '.join(routes.delivered) or 'nobody'}{where}", size=len(routes.message))

    def _sieve_plan(
        self, spooled: SpooledMessage, mailboxes: dict[str, tuple[LocalMailbox, str]], copies: dict[str, bytes]
    ) -> SievePlan | None:
        """
        Sieve for each local mailbox, as the store's plan: run in its writer
        thread before anything is written, it decides the store copies
        (folder, flags), the messages to queue (redirect, reject notice,
        vacation reply) and the vacation memory to write once they are
        queued.  None when Sieve is not configured.
        """
        sieve = self.core.committer.sieve
        if sieve is None or not mailboxes or self._quarantine is not None:
            return None  # quarantined mail goes to the junk folder, no vacation replies to it
        envelope = self.envelope
        return SievePlan(
            sieve, [(mailbox, original, copies[maildir]) for maildir, (mailbox, original) in mailboxes.items()],
            str(envelope.sender) if envelope.sender else "", spooled, self.core.committer.queue is not None,
            self.core.reactor.seconds(),
        )

    def _log(self, status: str, detail: str, size: int | None = None) -> None:
        """Postfix's one line per message; formatted here once (Twisted's formatter is slow)."""
        envelope = self.envelope
        sender = str(envelope.sender) if envelope.sender else ""
        to = ">,<".join([str(r.original) for r in envelope.recipients])
        size = self.size if size is None else size
        log.emit(  # Logger.info's event (QuickLogger: without emit's costly level check)
            LogLevel.info, "{delivery_line}",
            delivery_line=(
                f"{envelope.queue_id}: from=<{sender}>, to=<{to}>, client=[{envelope.client.ip}], "
                f"size={size}, status={status} ({detail})"
            ),
            queue_id=envelope.queue_id,
            status=status,
            detail=detail,
            # Seconds from MAIL FROM to this outcome (the delivery latency metric).
            delay=self.core.reactor.seconds() - envelope.started if envelope.started else None,
        )


@dataclass
class _Routes:
    """One message's destinations, sorted by kind (L{Transaction._routes})."""

    spooled: SpooledMessage
    message: bytes | SpooledMessage  # what the store and queue are given
    sender: str
    copies: dict[str, bytes] = field(default_factory=dict)  # Maildir -> delivery prefix
    mailboxes: dict[str, tuple[LocalMailbox, str]] = field(default_factory=dict)  # Maildir -> (mailbox, RCPT)
    remote: dict[str, list[str]] = field(default_factory=dict)  # envelope sender -> addresses
    targets: list[tuple[FileTarget | CommandTarget, Recipient]] = field(default_factory=list)
    delivered: list[str] = field(default_factory=list)
    plan: SievePlan | None = None

    def has_tail(self) -> bool:
        """True if anything waits after the store (L{Transaction._tail})."""
        plan = self.plan
        return bool(self.remote or self.targets or (plan is not None and (plan.outgoing or plan.memory)))


def _payload(message: bytes | SpooledMessage) -> bytes | SpooledMessage:
    """What the store, queue and hold area are given: bytes for a message in memory."""
    if isinstance(message, bytes):
        return message
    small = message.in_memory()
    return message if small is None else small
