"""
The quick commit path with mail authentication on (issue 10): a message in
memory whose only end-of-DATA work is the mailauth filter is committed in
callback style (L{InboundAuthentication.filter_now},
L{Transaction._commit_filtered}); it must reply, store, queue and log
exactly what the general path does.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.defer import Deferred, succeed
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import globalLogPublisher
from twisted.names import dns, error
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from mailserver.address import parse_mailbox
from mailserver.delivery.authentication import InboundAuthentication, SenderSPF
from mailserver.delivery.transaction import Transaction
from mailserver.envelope import Client, Envelope
from mailserver.errors import MailError
from mailserver.mailauth.dkim_sign import sign_with
from mailserver.mailauth.dkim_verify import verify_blocking
from mailserver.mailauth import verify_worker
from mailserver.mailauth.inbound import Authenticator, InboundPolicy
from tests.delivery.test_plain_commit import _VARYING, _local, _remote
from tests.fakes import MemoryQueue, MemoryStore, build_core
from tests.mailauth.support import MESSAGE, keys

#: Our mynetworks: trusted clients skip the checks.
TRUSTED = "127."


def _zone() -> dict[str, str]:
    rsa, ed = keys()
    return {
        "example.com": "v=spf1 ip4:192.0.2.0/24 -all",
        "_dmarc.example.com": "v=DMARC1; p=reject",
        rsa.dns_name: rsa.txt_value, ed.dns_name: ed.txt_value,
        "reject.example": "v=spf1 -all", "_dmarc.reject.example": "v=DMARC1; p=reject",
        "quarantine.example": "v=spf1 -all", "_dmarc.quarantine.example": "v=DMARC1; p=quarantine",
        "spffail.example": "v=spf1 -all",
        "spfonly.example": "v=spf1 ip4:192.0.2.0/24 -all", "_dmarc.spfonly.example": "v=DMARC1; p=none",
        "c.example": "v=spf1 ip4:192.0.2.0/24 -all",
    }


class Later:
    """Answers (DNS, verification) given at once, or kept until L{release} when C{holding}."""

    def __init__(self) -> None:
        self.holding = False
        self.waiting: list[tuple[Deferred, Callable[[], Any]]] = []

    def answer(self, compute: Callable[[], Any]) -> Deferred:
        if not self.holding:
            return succeed(compute())
        d: Deferred = Deferred()
        self.waiting.append((d, compute))
        return d

    def release(self) -> None:
        while self.waiting:  # an answer may lead to more questions
            d, compute = self.waiting.pop(0)
            try:
                d.callback(compute())
            except Exception:
                d.errback(Failure())


class ZoneResolver:
    """TXT records from a dict; names in C{failing} fail (SERVFAIL: temperror)."""

    def __init__(self, zone: dict[str, str], later: Later, failing: frozenset[str]) -> None:
        self.zone, self.later, self.failing = zone, later, failing

    def lookupText(self, name: str, timeout: object = None) -> Deferred:
        def compute() -> tuple:
            if name in self.failing:
                raise error.DNSServerError(name)
            text = self.zone.get(name)
            if text is None:
                return [], [], []
            data = text.encode()
            record = dns.Record_TXT(*[data[i:i + 255] for i in range(0, len(data), 255)], ttl=3600)
            return [dns.RRHeader(name, dns.TXT, ttl=3600, payload=record)], [], []

        return self.later.answer(compute)


class VerifyOnly:
    """Verification workers (L{VerifyProcesses.verify}) answering through L{Later}, none free to authenticate."""

    def __init__(self, later: Later) -> None:
        self.later = later

    def verify(self, *arguments: Any) -> Deferred:
        return self.later.answer(lambda: verify_blocking(*arguments))

    def authenticate(self, *arguments: Any) -> None:
        return None  # the reactor path (Authenticator.results_now)


class Worker(VerifyOnly):
    """A verification worker that authenticates too (L{VerifyProcesses.authenticate}: verify_worker's code)."""

    def __init__(self, later: Later) -> None:
        super().__init__(later)
        self.state = verify_worker._AuthState()
        self.asked: list[list[tuple]] = []  # the DNS answers sent with each request

    def authenticate(self, policy: Any, now: float, answers: list[tuple], message: bytes, spf: tuple,
                     mail_from: str, helo: str, fallback: Callable[[], Deferred]) -> Deferred:
        self.asked.append(answers)
        request = verify_worker.pickle.loads(verify_worker.pickle.dumps(
            (policy, now, answers, message, spf, mail_from, helo)))  # what crosses the pipe
        return self.later.answer(lambda: verify_worker.authenticate(request, self.state))


def _from(address: bytes, message: bytes = MESSAGE) -> bytes:
    return message.replace(b"alice@example.com", address)


def _signed(message: bytes = MESSAGE) -> bytes:
    return sign_with(message, list(keys())) + message


#: name: (MAIL FROM, message, recipients, client IP, policy, failing DNS names)
CASES: dict[str, tuple[str, bytes, list, str, dict, frozenset[str]]] = {}


def _cases() -> dict[str, tuple[str, bytes, list, str, dict, frozenset[str]]]:
    if CASES:
        return CASES
    signed = _signed()
    forged = b"Authentication-Results: mx.example.com; dmarc=pass header.from=example.com\n" + signed
    none = frozenset()
    CASES.update({
        "pass": ("bounce@example.com", signed, [_local("alice")], "192.0.2.10", {}, none),
        "pass, several recipients": (
            "bounce@example.com", signed, [_local("alice"), _local("bob"), _remote("x@remote.example")],
            "192.0.2.10", {}, none),
        "pass, forged header removed": ("bounce@example.com", forged, [_local("alice")], "192.0.2.10", {}, none),
        "signature without s= or d=": (
            "bounce@example.com", b"DKIM-Signature: v=1; a=rsa-sha256; b=abc\n" + MESSAGE, [_local("alice")],
            "192.0.2.10", {}, none),
        "unparsable signature": (
            "bounce@example.com", b"DKIM-Signature: this is; not=; a tag list\n" + signed, [_local("alice")],
            "192.0.2.10", {}, none),
        "pass, no Date or Message-ID": (
            "bounce@example.com", _signed(b"From: <alice@example.com>\nSubject: s\n\nbody\n"), [_local("alice")],
            "192.0.2.10", {}, none),
        "unsigned, SPF alone": (
            "x@spfonly.example", _from(b"a@spfonly.example"), [_local("alice")], "192.0.2.10", {}, none),
        "null sender (HELO)": ("", _from(b"a@c.example"), [_local("alice")], "192.0.2.10", {}, none),
        "DMARC reject": ("x@reject.example", _from(b"ceo@reject.example"), [_local("alice")], "192.0.2.10", {}, none),
        "DMARC quarantine": (
            "x@quarantine.example", _from(b"ceo@quarantine.example"), [_local("alice"), _local("bob")],
            "192.0.2.10", {}, none),
        "SPF fail, header": ("x@spffail.example", signed, [_local("alice")], "192.0.2.10", {}, none),
        "SPF fail, quarantine": (
            "x@spffail.example", signed, [_local("alice")], "192.0.2.10", {"spf_fail_action": "quarantine"}, none),
        "own domain spoofed": (
            "x@spffail.example", _from(b"boss@mydomain.test"), [_local("alice")], "192.0.2.10",
            {"own_domains": frozenset({"mydomain.test"})}, none),
        "temperror: DKIM key": (
            "bounce@example.com", signed, [_local("alice")], "192.0.2.10", {}, frozenset(
                key.dns_name for key in keys())),
        "temperror: SPF and DMARC": (
            "bounce@example.com", signed, [_local("alice")], "192.0.2.10", {},
            frozenset({"example.com", "_dmarc.example.com"})),
        "trusted client": ("x@reject.example", _from(b"ceo@reject.example"), [_local("alice")], "127.0.0.1", {},
                           none),
    })
    return CASES


class FilteredCommitTests(SynchronousTestCase):
    def _commit(self, case: str, quick: bool, warm: bool, hold: bool, workers: type = Worker) -> tuple:
        """
        One message of C{case} through SPF at MAIL FROM and the quick (or
        the general) commit path: (outcome, stored, queued, log events).
        C{warm}: the same message checked before (answers cached);
        C{hold}: DNS answers and the verification come later (after
        L{Transaction.commit} returned); C{workers}: L{Worker} (checked in a
        worker) or L{VerifyOnly} (checked on the reactor, verified in a worker).
        """
        sender, message, recipients, ip, policy, failing = _cases()[case]
        clock = MemoryReactorClock()
        clock.advance(1_700_000_000)
        later = Later()
        authenticator = Authenticator(ZoneResolver(_zone(), later, failing), clock,
                                      InboundPolicy("mx.example.com", **policy))
        authenticator.dkim.processes = self.workers = workers(later)
        if warm:
            self.successResultOf(authenticator.authenticate(ip, "c.example", sender, message))
        later.holding = hold

        def trusted(client: Client) -> bool:
            return client.ip.startswith(TRUSTED)

        store, queue = MemoryStore(), MemoryQueue()
        spf_check = SenderSPF(authenticator, trusted, False)
        core = build_core(clock, store=store, queue=queue, sender_checks=[spf_check],
                          filters=[InboundAuthentication(authenticator, trusted, clock)])
        envelope = Envelope(Client(ip=ip, helo="c.example"), parse_mailbox(sender) if sender else None,
                            list(recipients), queue_id="Q1", started=clock.seconds() - 1)
        events: list[dict] = []
        globalLogPublisher.addObserver(events.append)
        try:
            if not trusted(envelope.client):
                self.successResultOf(Deferred.fromCoroutine(spf_check.check(envelope)))
            transaction = Transaction(core, envelope)
            transaction.write(message)
            if quick:  # the quick paths start no coroutine
                self.assertTrue(transaction._quick_eligible())
                self.patch(transaction, "_commit_all", None)
                d = transaction.commit()
            else:
                d = Deferred.fromCoroutine(transaction._commit_all())
            later.release()
            if d.called and isinstance(d.result, Failure):
                outcome: object = self.failureResultOf(d, MailError).value.reply()
            else:
                outcome = self.successResultOf(d)
        finally:
            globalLogPublisher.removeObserver(events.append)
        logged = [
            {k: v for k, v in e.items() if k not in _VARYING}
            for e in events if e.get("log_namespace") in ("mailserver.delivery", "mailserver.mailauth")
        ]
        return outcome, store.delivered, queue.queued, logged

    def test_same_as_general_path(self) -> None:
        """Each case, cold or warm cache, answers at once or later: the same outcome as the general path."""
        for case in _cases():
            for warm in (False, True):
                for hold in (False, True):
                    with self.subTest(case=case, warm=warm, hold=hold):
                        fast = self._commit(case, True, warm, hold)
                        self.assertEqual(fast, self._commit(case, False, warm, hold))
                        self.assertTrue(fast[3])  # the delivery or reject line was logged

    def test_worker_same_as_reactor(self) -> None:
        """
        Each case checked in a verification worker (L{authenticate_blocking})
        gives the reply, the stored bytes and the log lines of the reactor's
        checks, cold or warm, answers at once or later.
        """
        for case in _cases():
            for warm in (False, True):
                for hold in (False, True):
                    with self.subTest(case=case, warm=warm, hold=hold):
                        in_worker = self._commit(case, True, warm, hold, Worker)
                        self.assertEqual(bool(self.workers.asked), case != "trusted client")  # that path taken
                        self.assertEqual(in_worker, self._commit(case, True, warm, hold, VerifyOnly))

    def test_outcomes(self) -> None:
        """What the cases compared above do (so the comparison is not between two wrong results)."""
        ok = "2.0.0 Ok: queued as Q1"
        outcome, stored, queued, logged = self._commit("pass, several recipients", True, True, True)
        self.assertEqual(outcome, ok)
        self.assertEqual([maildir for maildir, _ in stored], ["/mail/alice", "/mail/bob"])
        self.assertEqual(len(queued), 1)
        data = stored[0][1]
        received, results = data.index(b"Received: "), data.index(b"Authentication-Results: mx.example.com;")
        self.assertLess(received, results)
        self.assertIn(b"dkim=pass", data)
        self.assertIn(b"dmarc=pass", data)
        outcome, stored, _, _ = self._commit("pass, forged header removed", True, False, False)
        self.assertEqual(stored[0][1].count(b"Authentication-Results: mx.example.com;"), 1)
        outcome, stored, _, logged = self._commit("DMARC reject", True, True, True)
        self.assertEqual(outcome, "5.7.1 Message rejected: DMARC policy of reject.example is reject")
        self.assertEqual(stored, [])
        self.assertIn("status=reject (mailauth: 5.7.1 Message rejected", logged[-1]["delivery_line"])
        outcome, stored, _, logged = self._commit("DMARC quarantine", True, False, True)
        self.assertEqual(outcome, ok)
        self.assertEqual([maildir for maildir, _ in stored], ["/mail/alice/.Junk", "/mail/bob/.Junk"])
        self.assertIn("(quarantined: DMARC policy of quarantine.example is quarantine)", logged[-1]["delivery_line"])
        outcome, stored, _, _ = self._commit("temperror: DKIM key", True, True, False)
        self.assertIn(b"dkim=temperror", stored[0][1])
        outcome, stored, _, _ = self._commit("trusted client", True, False, False)
        self.assertNotIn(b"Authentication-Results", stored[0][1])

    def test_filter_now_same_as_filter(self) -> None:
        """L{InboundAuthentication.filter_now} gives what the coroutine filter gives, at once when nothing waits."""
        from mailserver.spooled import SpooledMessage

        sender, message, _, ip, _, _ = _cases()["pass"]
        clock = MemoryReactorClock()
        later = Later()
        authenticator = Authenticator(ZoneResolver(_zone(), later, frozenset()), clock, InboundPolicy("mx.example.com"))
        authenticator.dkim.processes = Worker(later)
        mailauth = InboundAuthentication(authenticator, lambda client: False, clock)
        results = []
        for _ in range(2):
            envelope = Envelope(Client(ip=ip, helo="c.example"), parse_mailbox(sender), queue_id="Q1")
            quick = mailauth.filter_now(envelope, message)
            self.assertIsInstance(quick, Deferred)  # the worker's answer is awaited
            general = self.successResultOf(mailauth.filter(envelope, SpooledMessage(message)))
            results.append((self.successResultOf(quick), general))
        for quick, general in results:
            self.assertEqual((quick.message.read(), quick.error, quick.quarantine),
                             (general.message.read(), general.error, general.quarantine))
        unsigned = _cases()["unsigned, SPF alone"]
        envelope = Envelope(Client(ip=ip, helo="c.example"), parse_mailbox(unsigned[0]), queue_id="Q1")
        first = self.successResultOf(mailauth.filter_now(envelope, unsigned[1]))  # cold: DNS answered at once
        again = mailauth.filter_now(envelope, unsigned[1])  # warm, nothing to verify: no Deferred
        self.assertNotIsInstance(again, Deferred)
        self.assertEqual(again.message.read(), first.message.read())
