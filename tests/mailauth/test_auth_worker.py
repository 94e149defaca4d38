"""
Mail authentication in the verification workers (issue 10): DKIM, ARC and
DMARC and the verdict computed off the reactor's interpreter
(L{Authenticator.in_worker}, L{verify_worker.authenticate}), the reactor
fetching only the DNS answers a worker asks for.  The loopback DNS server
serves the records; real worker processes do the work.
"""

from __future__ import annotations

import pickle
import sys

from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred, fail, inlineCallbacks, succeed
from twisted.trial.unittest import SynchronousTestCase, TestCase

from mailserver.mailauth import verify_process, verify_worker
from mailserver.mailauth.dkim_sign import sign_with
from mailserver.mailauth.dns import DNSTempError, NotCached
from mailserver.mailauth.inbound import MAX_ANSWER_ROUNDS, Authenticator, InboundPolicy, Verdict
from mailserver.mailauth.spf import SPFResult
from mailserver.mailauth.verify_process import VerifyProcesses
from tests.dns import DNSTestServer
from tests.mailauth.support import MESSAGE, keys, sender_zones
from tests.mailauth.test_verify_process import until

SENDER_IP = "192.0.2.10"
HELO = "client.example.com"


def _from(address: bytes, message: bytes = MESSAGE) -> bytes:
    return message.replace(b"alice@example.com", address)


def _outcome(results: object, message: bytes) -> tuple:
    """What end of DATA uses of the results, whichever path gave them."""
    error = results.error  # type: ignore[attr-defined]
    return (results.disposition, list(results.reasons),  # type: ignore[attr-defined]
            error.reply() if error is not None else None, results.apply(message))  # type: ignore[attr-defined]


class InWorkerTests(TestCase):
    """Real workers over the loopback DNS server: the verdict the reactor's own checks give."""

    def setUp(self) -> Deferred:
        self.rsa, self.ed = keys()
        self.dns = DNSTestServer(sender_zones(self.rsa, self.ed))
        self.dns.servfail.add("_dmarc.broken.example.net")
        return self.dns.start(self)

    def authenticator(self, count: int = 1, **options: object) -> Authenticator:
        authenticator = Authenticator(self.dns.resolver, reactor, InboundPolicy(
            "mx.mydomain.test", own_domains=frozenset({"mydomain.test"})))
        pool = VerifyProcesses(reactor, count, authenticator.dkim.in_thread, **options)
        pool.start()
        self.addCleanup(pool.stop)
        authenticator.dkim.processes = pool
        return authenticator

    def cases(self) -> list[tuple[str, bytes, str]]:
        signed = sign_with(MESSAGE, [self.rsa, self.ed]) + MESSAGE
        return [
            ("pass", signed, "bounce@example.com"),
            ("signature broken", signed.replace(b"Body line one.", b"Body line 1."), "bounce@example.com"),
            ("forged Authentication-Results", b"Authentication-Results: mx.mydomain.test; dmarc=pass\n" + signed,
             "bounce@example.com"),
            ("DMARC reject", _from(b"ceo@example.com"), "x@example.net"),
            ("DMARC quarantine", _from(b"ceo@example.org"), "x@example.net"),
            ("own domain", _from(b"boss@mydomain.test"), "x@example.net"),
            ("no From", b"Subject: none\n\nbody\n", "x@example.net"),
            ("two From domains", _from(b"a@example.com, b@example.org"), "x@example.net"),
            ("organizational domain's policy", _from(b"ceo@sub.example.com"), "x@example.net"),
            ("DMARC record SERVFAIL", _from(b"a@broken.example.net"), "x@example.net"),
            ("signature without s= or d=", b"DKIM-Signature: v=1; a=rsa-sha256; b=abc\n" + MESSAGE,
             "bounce@example.com"),
            ("unparsable signature", b"DKIM-Signature: this is; not=; a tag list\n" + signed, "bounce@example.com"),
        ]

    def test_same_verdict_as_the_reactor(self) -> Deferred:
        """
        Each case through a worker, cold (every answer fetched at its asking)
        and then warm (answers kept in the worker), against the reactor
        path's outcome with its own cold cache: the same, bytes included.
        """
        return ensureDeferred(self._same_verdict())

    async def _same_verdict(self) -> None:
        for name, message, mail_from in self.cases():
            in_worker, here = self.authenticator(), Authenticator(self.dns.resolver, reactor, InboundPolicy(
                "mx.mydomain.test", own_domains=frozenset({"mydomain.test"})))
            spf = await here.check_spf(SENDER_IP, HELO, mail_from)
            expected = _outcome(await here.results(SENDER_IP, HELO, mail_from, message, spf), message)
            for _ in range(2):
                verdict = await in_worker.in_worker(SENDER_IP, HELO, mail_from, message, spf)
                self.assertIsInstance(verdict, Verdict, name)  # from the worker, not the reactor path
                self.assertEqual(_outcome(verdict, message), expected, name)

    def test_requests_per_message(self) -> Deferred:
        """A sender's first message: two requests (the keys and DMARC record asked at once); the next: one."""
        return ensureDeferred(self._requests_per_message())

    async def _requests_per_message(self) -> None:
        authenticator = self.authenticator()
        sent: list[list[tuple]] = []
        real = verify_process._RequestPipe.write

        def write(pipe, data: bytes) -> None:
            request = pickle.loads(data[verify_worker.HEADER.size:])
            if len(request) == 3:
                sent.append(request[2][2])  # the answers sent with it
            real(pipe, data)

        self.patch(verify_process._RequestPipe, "write", write)
        name, message, mail_from = self.cases()[0]
        spf = await authenticator.check_spf(SENDER_IP, HELO, mail_from)
        await authenticator.in_worker(SENDER_IP, HELO, mail_from, message, spf)
        self.assertEqual(len(sent), 2)
        self.assertEqual(sorted(name for _, name, _, _ in sent[1]), [
            "_dmarc.example.com", "mail-ed25519._domainkey.example.com", "mail._domainkey.example.com"])
        now = reactor.seconds()
        for _kind, _name, _value, expires in sent[1]:  # the cache's expiry: the records' TTL from now
            self.assertTrue(now < expires <= now + 3600, expires)
        await authenticator.in_worker(SENDER_IP, HELO, mail_from, message, spf)
        self.assertEqual(sent[2:], [[]])

    def test_outcomes(self) -> Deferred:
        """What the comparison above compares: a pass, a refusal, a quarantine, a forged field removed."""
        return ensureDeferred(self._outcomes())

    async def _outcomes(self) -> None:
        authenticator = self.authenticator()
        found = {}
        for name, message, mail_from in self.cases():
            spf = await authenticator.check_spf(SENDER_IP, HELO, mail_from)
            found[name] = _outcome(await authenticator.in_worker(SENDER_IP, HELO, mail_from, message, spf), message)
        self.assertEqual(found["pass"][:3], ("accept", [], None))
        self.assertIn(b"dkim=pass header.d=example.com header.s=mail header.a=rsa-sha256", found["pass"][3])
        self.assertIn(b"dmarc=pass", found["pass"][3])
        self.assertIn(b"dkim=fail", found["signature broken"][3])
        self.assertEqual(found["forged Authentication-Results"][3].count(b"Authentication-Results: mx.mydomain.test"), 1)
        self.assertEqual(found["DMARC reject"][:3], (
            "reject", ["DMARC policy of example.com is reject"],
            "5.7.1 Message rejected: DMARC policy of example.com is reject"))
        self.assertEqual(found["DMARC quarantine"][0], "quarantine")
        self.assertEqual(found["own domain"][0], "reject")
        self.assertIn(b"dmarc=permerror", found["no From"][3])
        self.assertIn(b"dmarc=permerror", found["two From domains"][3])
        self.assertEqual(found["organizational domain's policy"][0], "reject")
        self.assertIn(b"dmarc=temperror", found["DMARC record SERVFAIL"][3])
        self.assertIn(b"dkim=none", found["signature without s= or d="][3])
        self.assertIn(b"dkim=permerror", found["unparsable signature"][3])
        self.assertIn(b"dkim=pass", found["unparsable signature"][3])

    @inlineCallbacks
    def test_policy_sent_once_per_worker(self):
        """The policy goes with a worker's first request only, and again to the worker that replaces a dead one."""
        authenticator = self.authenticator()
        pool = authenticator.dkim.processes
        sent: list[object] = []
        real = verify_process._RequestPipe.write

        def write(pipe, data: bytes) -> None:
            request = pickle.loads(data[verify_worker.HEADER.size:])
            if len(request) == 3:
                sent.append(request[2][0])
            real(pipe, data)

        self.patch(verify_process._RequestPipe, "write", write)
        message, mail_from = self.cases()[0][1:]
        spf = yield authenticator.check_spf(SENDER_IP, HELO, mail_from)
        for _ in range(2):
            yield authenticator.in_worker(SENDER_IP, HELO, mail_from, message, spf)
        self.assertIsInstance(sent[0], InboundPolicy)
        self.assertEqual(sent[1:], [None] * (len(sent) - 1))
        first = pool.workers[0]
        first.transport.signalProcess("KILL")
        yield until(lambda: pool.workers and pool.workers[0] is not first and pool.workers[0].alive)
        del sent[:]
        verdict = yield authenticator.in_worker(SENDER_IP, HELO, mail_from, message, spf)
        self.assertIsInstance(verdict, Verdict)
        self.assertIsInstance(sent[0], InboundPolicy)
        self.flushLoggedErrors()

    @inlineCallbacks
    def test_regression_dead_worker_message_checked_on_the_reactor(self):
        """A worker that dies holding a message: the reactor's checks give its verdict, the same one."""
        authenticator = self.authenticator(argv=[sys.executable, "-c", "import sys; sys.stdin.buffer.read(1); sys.exit(3)"])
        name, message, mail_from = self.cases()[3]  # DMARC reject
        spf = yield authenticator.check_spf(SENDER_IP, HELO, mail_from)
        results = yield authenticator.in_worker(SENDER_IP, HELO, mail_from, message, spf)
        self.assertNotIsInstance(results, Verdict)
        yield until(lambda: authenticator.dkim.processes.replaced >= 1)  # it was asked, and died of it
        self.assertEqual(results.error.reply(), "5.7.1 Message rejected: DMARC policy of example.com is reject")
        self.flushLoggedErrors()


class _Asking:
    """Workers that always ask for one more DNS answer (or fail), counting the requests."""

    def __init__(self, answer: object) -> None:
        self.answer = answer
        self.requests = 0

    def authenticate(self, *arguments: object) -> Deferred:
        self.requests += 1
        return fail(self.answer) if isinstance(self.answer, Exception) else succeed(self.answer)


class ReactorSideTests(TestCase):
    """The reactor's side of the exchange, with stand-in workers."""

    def setUp(self) -> Deferred:
        self.dns = DNSTestServer({"example.net": {"example.net": [("TXT", "v=spf1 ~all")]}})
        return self.dns.start(self)

    def authenticator(self, workers: object, **options: object) -> Authenticator:
        authenticator = Authenticator(self.dns.resolver, reactor, InboundPolicy("mx.example.com"), **options)
        authenticator.dkim.processes = workers
        return authenticator

    @inlineCallbacks
    def test_regression_worker_that_keeps_asking_is_bounded(self):
        """A worker that never has enough answers: after MAX_ANSWER_ROUNDS the reactor's checks decide."""
        workers = _Asking(("need", [("txt", "_dmarc.example.net")]))
        authenticator = self.authenticator(workers)
        spf = SPFResult("softfail", "example.net", "mailfrom")
        results = yield authenticator.in_worker(SENDER_IP, HELO, "x@example.net", _from(b"a@example.net"), spf)
        self.assertEqual(workers.requests, MAX_ANSWER_ROUNDS + 1)
        self.assertEqual((results.disposition, results.dmarc.result), ("accept", "none"))

    @inlineCallbacks
    def test_regression_worker_error_is_checked_on_the_reactor(self):
        """An exception from a worker's code: logged, and the reactor's checks decide (no 451, no traceback out)."""
        authenticator = self.authenticator(_Asking(RuntimeError("bug in the worker")))
        spf = SPFResult("softfail", "example.net", "mailfrom")
        results = yield authenticator.in_worker(SENDER_IP, HELO, "x@example.net", _from(b"a@example.net"), spf)
        self.assertEqual(results.disposition, "accept")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_injected_sample_stays_on_the_reactor(self) -> None:
        """DMARC pct= drawn by an injected sample (tests) cannot be drawn in a worker: no worker path."""
        authenticator = self.authenticator(_Asking(("need", [])), sample=lambda: 0.5)
        self.assertIsNone(authenticator.in_worker(SENDER_IP, HELO, "x@example.net", MESSAGE, SPFResult(
            "pass", "example.net", "mailfrom")))


class WorkerStateTests(SynchronousTestCase):
    """L{verify_worker.authenticate}: what a worker keeps between requests."""

    def request(self, now: float, answers: list[tuple], policy: object = None) -> tuple:
        spf = ("none", "example.net", "mailfrom", "", "")
        return (policy, now, answers, _from(b"a@example.net"), spf, "x@example.net", HELO)

    def test_answers_kept_until_their_expiry(self) -> None:
        state = verify_worker._AuthState()
        policy = InboundPolicy("mx.example.com")
        dmarc = ("txt", "_dmarc.example.net", ["v=DMARC1; p=none"], 100.0)
        self.assertEqual(verify_worker.authenticate(self.request(10.0, [], policy), state),
                         ("need", [("txt", "_dmarc.example.net")]))
        done = verify_worker.authenticate(self.request(10.0, [dmarc]), state)
        self.assertEqual(done[0], "done")
        self.assertIn(b"dmarc=fail (p=none dis=none)", done[1][0])
        self.assertEqual(verify_worker.authenticate(self.request(99.0, []), state)[0], "done")  # kept
        self.assertEqual(verify_worker.authenticate(self.request(100.0, []), state)[0], "need")  # expired

    def test_failures_and_uncached_answers_serve_one_request(self) -> None:
        state = verify_worker._AuthState()
        state.policy = InboundPolicy("mx.example.com")
        failed = ("txt", "_dmarc.example.net", DNSTempError("_dmarc.example.net: timeout"), None)
        done = verify_worker.authenticate(self.request(10.0, [failed]), state)
        self.assertIn(b"dmarc=temperror", done[1][0])
        self.assertEqual(verify_worker.authenticate(self.request(10.0, []), state)[0], "need")  # not kept
        uncached = ("txt", "_dmarc.example.net", [], None)
        self.assertEqual(verify_worker.authenticate(self.request(10.0, [uncached]), state)[0], "done")
        self.assertEqual(verify_worker.authenticate(self.request(10.0, []), state)[0], "need")

    def test_large_answer_serves_one_request(self) -> None:
        state = verify_worker._AuthState()
        state.policy = InboundPolicy("mx.example.com")
        large = ("txt", "_dmarc.example.net", ["v=DMARC1; p=none; " + "x" * verify_worker.MAX_KEPT_ANSWER], 100.0)
        self.assertEqual(verify_worker.authenticate(self.request(10.0, [large]), state)[0], "done")
        self.assertEqual(verify_worker.authenticate(self.request(10.0, []), state)[0], "need")

    def test_bounded(self) -> None:
        state = verify_worker._AuthState(max_entries=2)
        for n in range(3):
            state.keep(("txt", f"n{n}"), [f"r{n}"], 100.0)
        fetch = state.fetch({})
        self.assertRaises(NotCached, fetch, "txt", "n0")  # the oldest went
        self.assertEqual([fetch("txt", "n1"), fetch("txt", "n2")], [["r1"], ["r2"]])


class ExpiryTests(SynchronousTestCase):
    """The expiry the reactor sends with each answer: its answer cache's."""

    def test_answer_cache_expiry(self) -> None:
        from twisted.internet.task import Clock

        from mailserver.mailauth.dns import AnswerCache

        clock = Clock()
        cache = AnswerCache(clock.seconds)
        self.assertIsNone(cache.expires(("lookupText", "a.example")))
        cache.put(("lookupText", "a.example"), ["x"], 60)
        cache.put(("lookupText", "b.example"), ["y"], 7200)  # longer than max_ttl: kept an hour
        clock.advance(10)
        self.assertEqual(cache.expires(("lookupText", "a.example")), 60)
        self.assertEqual(cache.expires(("lookupText", "b.example")), 3600)
        clock.advance(50)
        self.assertIsNone(cache.expires(("lookupText", "a.example")))
