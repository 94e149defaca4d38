"""
The queue runner: when to try which message, and what to do with the results.

L{QueueManager} is a C{Service}.  On start it returns messages a crash left
in C{active/} to the queue, then tries everything that is due, again every
C{queue_run_delay} seconds, and at once after each C{enqueue}.  Each
attempt moves the message to C{active/}, hands the pending recipients to
the relay, and records per-recipient results: delivered, bounced (a 5xx),
or deferred with Postfix's backoff.  A message still deferred after its
lifetime expires is bounced.  Bounces are RFC 3464 DSNs
(L{mailserver.queue.bounce}) handed to C{inject_bounce} from the null
sender; none is ever sent to the null sender: when a null-sender message
(usually a bounce itself) fails, or the sender's bounce cannot be
delivered, the DSN goes to C{postmaster} instead, unless the failed
recipient is postmaster itself (no loops).

C{queue flush} (or C{postqueue -f} habits) works through a trigger file
in the spool directory that the manager checks every few seconds.
"""

from __future__ import annotations

import re

from typing import Callable

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, DeferredSemaphore
from twisted.logger import Logger

from mailserver.errors import MailError
from mailserver.periodic import PeriodicTask
from mailserver.queue.bounce import FAILED, RecipientReport, build_dsn
from mailserver.queue.envelope import BOUNCED, DELIVERED, EnvelopeError, QueueEnvelope, RecipientState
from mailserver.queue.relay import RecipientResult
from mailserver.queue.schedule import expired, next_attempt, queue_lifetime
from mailserver.queue.spool import NotDue, QueueEntryGone

InjectBounce = Callable[[str, list, bytes], Deferred]
"""C{inject_bounce(sender, recipients, message) -> Deferred}: deliver a DSN (sender is C{""})."""


class QueueManager(Service):
    """
    Run the outbound queue.

    @param spool: a L{mailserver.queue.spool.Spool}.
    @param relay: has C{deliver(sender, recipients, message) -> Deferred[list[RecipientResult]]}
        (L{mailserver.queue.relay.Relay}).
    @param clock: C{IReactorTime} for scheduling.
    @param inject_bounce: delivers DSNs (the lead wires it to the local pipeline).
    @param myhostname: for C{Reporting-MTA} and C{MAILER-DAEMON@myhostname}.
    @param postmaster: who gets bounces that cannot be returned; None to
        discard them (only logged).
    @param max_parallel: messages being delivered at once, over all destinations.
    """

    log = Logger()
    name = "queue"

    def __init__(
        self,
        spool,
        relay,
        clock,
        *,
        inject_bounce: InjectBounce,
        myhostname: str,
        minimal_backoff_time: float = 300,
        maximal_backoff_time: float = 4000,
        maximal_queue_lifetime: float = 5 * 86400,
        bounce_queue_lifetime: float = 5 * 86400,
        queue_run_delay: float = 300,
        flush_check_interval: float = 5,
        cleanup_interval: float = 3600,
        postmaster: str | None = "postmaster",
        max_parallel: int = 50,
    ) -> None:
        self.spool = spool
        self.relay = relay
        self._clock = clock
        self._inject_bounce = inject_bounce
        self.myhostname = myhostname
        self.minimal_backoff_time = minimal_backoff_time
        self.maximal_backoff_time = maximal_backoff_time
        self.maximal_queue_lifetime = maximal_queue_lifetime
        self.bounce_queue_lifetime = bounce_queue_lifetime
        self.queue_run_delay = queue_run_delay
        self.flush_check_interval = flush_check_interval
        self.cleanup_interval = cleanup_interval
        self.postmaster = postmaster
        self._limit = DeferredSemaphore(max(1, max_parallel))
        self._active: dict[str, Deferred] = {}
        #: Envelopes whose rewrite failed (a full disk): their progress and
        #: next attempt, kept here until the disk takes them.
        self._unsaved: dict[str, QueueEnvelope] = {}
        self._listing = False
        self._loops: list[PeriodicTask] = []
        self.ready: Deferred | None = None

    # -- service -------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self.spool.add_listener(self._enqueued)
        d = self.spool.recover()

        def recovered(ids: list[str]) -> None:
            if ids:
                self.log.warn(
                    "returned {count} message(s) left in active/ to the queue: {ids}",
                    count=len(ids),
                    ids=" ".join(ids),
                )

        def failed(failure) -> None:
            self.log.failure("queue recovery failed", failure)

        d.addCallbacks(recovered, failed)
        d.addCallback(lambda _: self._start_loops())
        self.ready = d  # fires once recovery is done and the first queue scan has begun

    def _start_loops(self) -> None:
        if not self.running:
            return
        for name, function, interval in (
            ("queue run", self._tick, self.queue_run_delay),
            ("queue flush check", self.check_flush_request, self.flush_check_interval),
            ("queue cleanup", self.clean, self.cleanup_interval),
        ):
            loop = PeriodicTask(name, function, interval, self._clock)
            loop.start(now=function != self.check_flush_request)
            self._loops.append(loop)

    def stopService(self):
        """Stop scheduling; attempts in flight finish or are retried after a restart."""
        self.spool.remove_listener(self._enqueued)
        for loop in self._loops:
            loop.stop()
        self._loops = []
        return super().stopService()

    # -- scheduling ----------------------------------------------------------

    def _enqueued(self, queue_id: str) -> None:
        if self.running:
            self._start(queue_id)

    def _tick(self) -> Deferred | None:
        if not self._listing:  # a slow listing is not started twice
            return self._scan(False)
        return None

    def clean(self) -> Deferred:
        """Remove crash leftovers (stale tmp/ files, data without an envelope), logging each."""

        def cleaned(removed: list[tuple[str, float]]) -> None:
            for path, age in removed:
                self.log.warn(
                    "removed crash leftover {path} from the queue ({hours:.1f} hours old, no envelope)",
                    path=path,
                    hours=age / 3600,
                )

        return self.spool.clean().addCallback(cleaned)

    def check_flush_request(self) -> Deferred:
        """
        Flush if C{queue flush} left its trigger file; fire once the flush
        has started.  The manager calls this every C{flush_check_interval}.
        """

        def checked(requested: bool):
            if requested:
                self.log.info("flush requested")
                return self._scan(True)
            return None

        return self.spool.take_flush_request().addCallbacks(
            checked, lambda f: self.log.failure("cannot check the flush trigger", f)
        )

    def _scan(self, flush: bool) -> Deferred:
        """List what is due and start it; fires when the listing is done."""

        async def scan() -> None:
            self._listing = True
            now = self._clock.seconds()
            try:
                ids = await self.spool.due(now, flush, list(self._active))
            except Exception:
                self.log.failure("cannot list the queue")
                return
            finally:
                self._listing = False
            for queue_id in ids:
                self._start(queue_id, None if flush else now)

        return Deferred.fromCoroutine(scan())

    def run(self) -> Deferred:
        """Try every message that is due; fire when those attempts are done."""
        return self._scan(False).addCallback(lambda _: self.idle())

    def flush(self) -> Deferred:
        """Try every deferred message now (C{postqueue -f}); fire when done."""
        return self._scan(True).addCallback(lambda _: self.idle())

    def idle(self) -> Deferred:
        """Fire once no attempt is in flight."""

        async def wait() -> None:
            while self._active:
                await DeferredList(list(self._active.values()))

        return Deferred.fromCoroutine(wait())

    def _start(self, queue_id: str, due_by: float | None = None) -> None:
        if queue_id in self._active:
            return
        unsaved = self._unsaved.get(queue_id)
        if unsaved is not None and due_by is not None and unsaved.next_attempt > due_by:
            return  # backing off in memory: the envelope on disk could not be rewritten
        d = Deferred.fromCoroutine(self._attempt(queue_id, due_by))
        if not d.called:
            self._active[queue_id] = d
            d.addBoth(self._forget, queue_id)

    def _forget(self, result, queue_id: str) -> None:
        self._active.pop(queue_id, None)

    # -- one attempt ---------------------------------------------------------

    async def _attempt(self, queue_id: str, due_by: float | None) -> None:
        await self._limit.acquire()
        try:
            await self._deliver(queue_id, due_by)
        except Exception:  # never let one message stop the queue; it stays queued
            self.log.failure("{queue_id}: delivery attempt failed", queue_id=queue_id)
        finally:
            self._limit.release()

    async def _deliver(self, queue_id: str, due_by: float | None) -> None:
        try:
            envelope, message = await self.spool.activate(queue_id, due_by)
        except QueueEntryGone:
            self._unsaved.pop(queue_id, None)
            return  # delivered or deleted meanwhile
        except NotDue:
            return  # retried by another scan
        except EnvelopeError as e:
            self.log.error(
                "{queue_id}: unreadable queue file moved to corrupt/: {error}",
                queue_id=queue_id,
                error=str(e),
            )
            return
        # The progress of an attempt whose envelope could not be written.
        envelope = self._unsaved.get(queue_id, envelope)
        pending = envelope.pending
        if pending:
            started = self._clock.seconds()
            try:
                results = await self.relay.deliver(envelope.sender, [r.address for r in pending], message)
            except Exception:
                self.log.failure("{queue_id}: relay failed", queue_id=queue_id)
                results = []
            self._record(envelope, pending, results, started)
        now = self._clock.seconds()
        lifetime = queue_lifetime(envelope.sender, self.maximal_queue_lifetime, self.bounce_queue_lifetime)
        if envelope.pending and expired(envelope.arrival, now, lifetime):
            self._expire(envelope, now)
        await self._send_bounces(envelope, message, now)
        if envelope.finished or not envelope.pending:
            envelope.next_attempt = now + self.minimal_backoff_time  # only a bounce or the removal left
        else:
            attempts = max(envelope.attempts, 1)
            envelope.next_attempt = next_attempt(attempts, now, self.minimal_backoff_time, self.maximal_backoff_time)
        try:
            if envelope.finished:
                await self.spool.remove(queue_id)
                self.log.info("{queue_id}: removed", queue_id=queue_id)
            else:
                await self.spool.defer(envelope)
        except QueueEntryGone:
            self.log.info("{queue_id}: deleted while being delivered", queue_id=queue_id)
        except OSError as error:
            # A full disk: keep the backoff (and the recipients' progress) in
            # memory, so the message waits its turn instead of being tried
            # again at every queue scan from active/.
            self._unsaved[queue_id] = envelope
            self.log.error(
                "{queue_id}: cannot write the queue file ({error}); next attempt in {delay:.0f}s, "
                "state kept in memory",
                queue_id=queue_id,
                error=error.strerror or str(error),
                delay=envelope.next_attempt - now,
            )
            return
        self._unsaved.pop(queue_id, None)

    def _record(
        self,
        envelope: QueueEnvelope,
        pending: list[RecipientState],
        results: list[RecipientResult],
        started: float,
    ) -> None:
        by_recipient = {result.recipient: result for result in results}
        envelope.attempts += 1
        envelope.last_attempt = started
        delay = self._clock.seconds() - envelope.arrival
        for state in pending:
            result = by_recipient.get(state.address) or RecipientResult(
                state.address, "deferred", "4.3.0", "no result from the relay"
            )
            state.attempts += 1
            state.enhanced = result.enhanced
            state.remote_mta = result.remote_mta
            state.diagnostic = result.diagnostic
            if result.status == "delivered":
                state.status = DELIVERED
                state.last_error = ""
                state.notified = True
                status = "sent"
            elif result.status == "bounced":
                state.status = BOUNCED
                state.last_error = result.text
                status = "bounced"
            else:
                state.last_error = result.text
                status = "deferred"
            self.log.info(
                "{queue_id}: to=<{to}>, relay={relay}, delay={delay:.0f}, tries={tries}, "
                "dsn={dsn}, status={status} ({text})",
                queue_id=envelope.queue_id,
                to=state.address,
                relay=result.relay,
                delay=delay,
                tries=state.attempts,
                dsn=result.enhanced,
                status=status,
                relay_status=status,
                text=result.text,
            )

    def _expire(self, envelope: QueueEnvelope, now: float) -> None:
        days = (now - envelope.arrival) / 86400
        for state in envelope.pending:
            state.status = BOUNCED
            if not state.enhanced.startswith(("4.", "5.")):
                state.enhanced = "4.4.7"
            reason = state.last_error or "delivery temporarily suspended"
            state.last_error = f"message expired after {days:.1f} days in queue: {reason}"
            self.log.info(
                "{queue_id}: to=<{to}>, status=expired, returned to sender ({text})",
                queue_id=envelope.queue_id,
                to=state.address,
                text=reason,
                relay_status="expired",
            )

    # -- bounces ---------------------------------------------------------------

    async def _send_bounces(self, envelope: QueueEnvelope, message: bytes, now: float) -> None:
        bounced = envelope.unnotified_bounces
        if not bounced:
            return
        postmaster = self.postmaster
        to_postmaster_only = postmaster is not None and all(
            r.address.lower() == postmaster.lower() for r in bounced
        )
        if envelope.sender == "":
            # A report of ours that failed (postmaster aliased to a host that
            # refuses it, say) is dropped, never reported again: no bounce loop.
            if postmaster is None or to_postmaster_only or self._is_own_report(message):
                self.log.info(
                    "{queue_id}: null sender: bounce discarded for {to}",
                    queue_id=envelope.queue_id,
                    to=", ".join(r.address for r in bounced),
                )
                self._mark_notified(bounced)
                return
            done = await self._inject(envelope, message, bounced, postmaster, now, postmaster_copy=True)
            if done is False:
                done = True  # postmaster refuses it for good: logged, give up
        else:
            done = await self._inject(envelope, message, bounced, envelope.sender, now)
            if done is False and postmaster is not None and envelope.sender.lower() != postmaster.lower():
                done = await self._inject(envelope, message, bounced, postmaster, now, postmaster_copy=True)
            if done is False:
                done = True  # undeliverable even to postmaster: logged, give up
        if done:
            self._mark_notified(bounced)

    def _is_own_report(self, message: bytes) -> bool:
        """Is C{message} a delivery status notification this host wrote (L{bounce})?"""
        head = message.split(b"\n\n", 1)[0]
        sender = rb"(?im)^From:[ \t]*MAILER-DAEMON@" + re.escape(self.myhostname.encode("ascii", "replace"))
        return bool(re.search(rb"(?im)^Auto-Submitted:[ \t]*auto-replied", head) and re.search(sender, head))

    @staticmethod
    def _mark_notified(recipients: list[RecipientState]) -> None:
        for state in recipients:
            state.notified = True

    async def _inject(
        self,
        envelope: QueueEnvelope,
        message: bytes,
        bounced: list[RecipientState],
        to: str,
        now: float,
        postmaster_copy: bool = False,
    ) -> bool | None:
        """
        Hand over one DSN.  True when done, False when refused for good
        (a 5xx: try postmaster), None when it should be tried again later.
        """
        reports = [
            RecipientReport(
                recipient=r.address,
                action=FAILED,
                status=r.enhanced if r.enhanced[:2] in ("4.", "5.") else "5.0.0",
                text=r.last_error,
                remote_mta=r.remote_mta,
                diagnostic=r.diagnostic,
                last_attempt=envelope.last_attempt,
            )
            for r in bounced
        ]
        dsn = build_dsn(
            reporting_mta=self.myhostname,
            queue_id=envelope.queue_id,
            sender=envelope.sender,
            to=to,
            arrival=envelope.arrival,
            now=now,
            reports=reports,
            original=message,
            postmaster_copy=postmaster_copy,
        )
        try:
            await self._inject_bounce("", [to], dsn)
        except MailError as e:
            self.log.warn(
                "{queue_id}: bounce to <{to}> refused: {error}",
                queue_id=envelope.queue_id,
                to=to,
                error=str(e),
            )
            return None if e.temporary else False
        except Exception:
            self.log.failure(
                "{queue_id}: cannot hand over bounce to <{to}>", queue_id=envelope.queue_id, to=to
            )
            return None
        self.log.info(
            "{queue_id}: sender non-delivery notification to <{to}> for {recipients}",
            queue_id=envelope.queue_id,
            to=to,
            recipients=", ".join(r.address for r in bounced),
        )
        return True
