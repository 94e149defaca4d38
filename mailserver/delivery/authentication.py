"""
SPF at MAIL FROM (L{SenderSPF}), and inbound mail authentication at end of DATA (SPF, DKIM, ARC, DMARC) as an
L{IMessageFilter}: the Authentication-Results header is prepended (forged
ones for our authserv-id removed), and DMARC/SPF failures are refused or
quarantined as the policy says.  Mail we trust (SASL users, C{mynetworks},
sendmail, bounces) is not checked.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet import threads
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from mailserver.envelope import Client, Envelope
from mailserver.delivery.filters import FilterResult
from mailserver.delivery.spool_edits import read_header
from mailserver.errors import MailError
from mailserver.interfaces import IImmediateFilter, ISenderCheck
from mailserver.spooled import SpooledMessage

log = Logger(namespace="mailserver.mailauth")


@implementer(IImmediateFilter)
class InboundAuthentication:
    """
    Runs L{mailserver.mailauth.inbound.Authenticator} over a message.  Only
    the header block is held while DNS answers are awaited; a spooled
    message is read whole only inside the DKIM verification thread.
    """

    name = "mailauth"
    untrusted_only = True  # the pipeline skips this filter for trusted clients (filters.skips)

    def __init__(self, authenticator: Any, is_trusted: Callable[[Client], bool], reactor: Any) -> None:
        self.authenticator = authenticator
        self.is_trusted = is_trusted
        self.reactor = reactor

    def filter(self, envelope: Envelope, message: SpooledMessage) -> Deferred:
        return Deferred.fromCoroutine(self._filter(envelope, message))

    async def _filter(self, envelope: Envelope, message: SpooledMessage) -> FilterResult:
        small = message.in_memory()
        if small is not None:
            outcome = self.filter_now(envelope, small)
        else:
            pool = self.reactor.getThreadPool()
            header = await threads.deferToThreadPool(self.reactor, pool, read_header, message)
            if header is None:  # a header block over 1 MiB: nothing we could check
                return FilterResult(message)
            outcome = self._check(envelope, message, header, message.read)
        return await outcome if isinstance(outcome, Deferred) else outcome

    def filter_now(self, envelope: Envelope, message: bytes) -> FilterResult | Deferred[FilterResult]:
        """
        L{filter} of a message in memory (C{message}: its bytes) in callback
        style, for the transaction's quick path: the result at once when
        nothing is awaited, else a Deferred of it -- the SPF check's from
        C{MAIL FROM} or the verification's, no coroutine of its own.
        """
        return self._check(envelope, SpooledMessage(message), message, None)

    def _check(self, envelope: Envelope, message: SpooledMessage, header: bytes,
               load: Callable[[], bytes] | None) -> FilterResult | Deferred[FilterResult]:
        """
        The checks over C{header} (the whole message when C{load} is None,
        else its header block, C{load} reading the rest in the verification
        thread), once the SPF check started at C{MAIL FROM} is done.
        """
        spf = envelope.spf
        if spf is None and envelope.spf_pending is not None:  # started at MAIL FROM, still running
            pending, envelope.spf_pending = envelope.spf_pending, None
            return pending.addCallback(self._spf_known, envelope, message, header, load)
        return self._spf_known(spf, envelope, message, header, load)

    def _spf_known(self, spf: Any, envelope: Envelope, message: SpooledMessage, header: bytes,
                   load: Callable[[], bytes] | None) -> FilterResult | Deferred[FilterResult]:
        """L{_check} once the result of SPF at C{MAIL FROM} is known (None: evaluate it here)."""
        envelope.spf = spf
        client = envelope.client  # untrusted: the pipeline skips this filter for trusted ones
        mail_from = str(envelope.sender) if envelope.sender else ""
        results = self.authenticator.verdict_now(client.ip, client.helo, mail_from, header, spf, load)
        if isinstance(results, Deferred):
            return results.addCallback(self._verdict, envelope, message, header, load is None)
        return self._verdict(results, envelope, message, header, load is None)

    @staticmethod
    def _verdict(results: Any, envelope: Envelope, message: SpooledMessage, header: bytes,
                 whole: bool) -> FilterResult:
        """
        The filter's result from the checks': reasons logged, a refusal, or
        C{message} with the Authentication-Results edit (C{header}: the
        message itself when C{whole}, else its header block) and, if the
        policy says so, quarantined.
        """
        for reason in results.reasons:
            log.info("{queue_id}: mailauth: {disposition}: {reason}",
                     queue_id=envelope.queue_id, disposition=results.disposition, reason=reason)
        if results.error is not None:
            return FilterResult(message, error=results.error)
        if whole:
            message = SpooledMessage(results.apply(header))
        else:
            message = message.replace_start(len(header), results.apply(header))
        quarantine = "; ".join(results.reasons) if results.disposition == "quarantine" else None
        return FilterResult(message, quarantine=quarantine)


@implementer(ISenderCheck)
class SenderSPF:
    """
    SPF (RFC 7208) at MAIL FROM for untrusted clients: the result is kept
    on the envelope (L{InboundAuthentication} reuses it at end of DATA) and,
    with C{spf_fail_action = reject}, a C{fail} is refused at once with RFC
    7208 8.4's C{550 5.7.23}, logged like Postfix with policyd-spf.
    Without that, MAIL FROM does not wait: the evaluation runs while the
    envelope and the content arrive, and end of DATA takes its result.
    """

    name = "spf"
    untrusted_only = True  # the pipeline skips this check for trusted clients (filters.skips)

    def __init__(self, authenticator: Any, is_trusted: Callable[[Client], bool], reject_fail: bool) -> None:
        self.authenticator = authenticator
        self.is_trusted = is_trusted
        self.reject_fail = reject_fail

    async def check(self, envelope: Envelope) -> None:
        client = envelope.client  # untrusted: the pipeline skips this check for trusted ones
        mail_from = str(envelope.sender) if envelope.sender else ""
        if not self.reject_fail:
            started = self.authenticator.check_spf(client.ip, client.helo, mail_from)
            started.addErrback(self._failed, envelope)  # None: evaluated again at end of DATA
            if started.called:  # answered from the DNS cache
                envelope.spf = started.result
            else:
                envelope.spf_pending = started
            return
        try:
            spf = await self.authenticator.check_spf(client.ip, client.helo, mail_from)
        except Exception:  # never expected (errors are temperror results): evaluate again at end of DATA
            log.failure("{queue_id}: SPF at MAIL FROM failed", queue_id=envelope.queue_id)
            return
        envelope.spf = spf
        if spf.result != "fail":
            return
        identity = "mailfrom" if spf.scope == "mailfrom" else "helo"
        text = (f"Message rejected due to: SPF fail - not authorized: {spf.domain} does not designate "
                f"{client.ip} as permitted sender")
        # policyd-spf's line; the session logs the NOQUEUE reject line for the refusal itself.
        log.info(
            "{queue_id}: spf: Received-SPF: Fail ({identity}) identity={identity}; client-ip={ip}; "
            "helo={helo}; envelope-from={sender}",
            queue_id=envelope.queue_id, ip=client.ip, sender=mail_from, helo=client.helo, identity=identity,
        )
        raise MailError(550, "5.7.23", text)

    @staticmethod
    def _failed(failure: Any, envelope: Envelope) -> None:
        log.failure("{queue_id}: SPF at MAIL FROM failed", failure, queue_id=envelope.queue_id)
        return None
