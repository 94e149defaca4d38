"""
Inbound mail authentication as one asynchronous step: SPF, DKIM, ARC and
DMARC for a received message, the Authentication-Results field to prepend
and what to do with the message (accept, quarantine into Junk, reject).

    results = await authenticator.authenticate(client_ip, helo, mail_from, message)
    if results.error: raise results.error          # 550 5.7.1 at end of DATA
    message = results.apply(message)               # forged A-R removed, ours prepended
    if results.disposition == "quarantine": ...    # deliver into the user's Junk folder

Mail from SASL users and C{mynetworks} is not meant to come here (the
caller skips it).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Callable

from twisted.internet.defer import Deferred, DeferredList, maybeDeferred, succeed
from twisted.logger import Logger

from mailserver.errors import MailError
from mailserver.mailauth import authresults, memo
from mailserver.mailauth.dkim_verify import (
    ARCResult, DKIMResult, DKIMVerifier, VerificationResults, key_answers, key_names, signatures, verify_blocking,
)
from mailserver.mailauth.dmarc import DMARCEvaluator, DMARCResult, find_record_with, organizational_domain
from mailserver.mailauth.dns import AnswerCache, DNSLookup, DNSTempError, Fetch, NotCached
from mailserver.mailauth.headers import Fields, from_domains, split_headers
from mailserver.mailauth.spf import SPFChecker, SPFResult

log = Logger(namespace="mailserver.mailauth")

ACTIONS = ("reject", "quarantine", "header")
#: Times a verification worker may ask for DNS answers for one message before the reactor decides instead.
MAX_ANSWER_ROUNDS = 8


@dataclass(frozen=True)
class InboundPolicy:
    """What to do on each failure (main.cf: dmarc_reject_action, ...)."""

    authserv_id: str
    dmarc_reject_action: str = "reject"  # p=reject failures
    dmarc_quarantine_action: str = "quarantine"  # p=quarantine failures
    spf_fail_action: str = "header"  # SPF "fail" (-all)
    own_domains: frozenset[str] = frozenset()  # our domains: a From: here that fails DMARC...
    own_domain_fail_action: str = "reject"  # ...gets this, whatever the domain publishes


@dataclass
class AuthenticationResults:
    spf: SPFResult
    dkim: list[DKIMResult]
    arc: ARCResult
    dmarc: DMARCResult
    header: bytes
    authserv_id: str
    disposition: str = "accept"  # accept, quarantine, reject
    error: MailError | None = None
    reasons: list[str] = field(default_factory=list)
    #: The message checked and its header fields, split once for every check and for L{apply}.
    checked: tuple[bytes, Fields] | None = field(default=None, repr=False, compare=False)

    def apply(self, message: bytes) -> bytes:
        """C{message} with forged Authentication-Results (our authserv-id) removed and ours prepended."""
        checked = self.checked
        fields = checked[1] if checked is not None and checked[0] is message else None
        cleaned, _ = authresults.remove_forged(message, self.authserv_id, fields)
        return self.header + cleaned


def _spf(result: str, reason: str, scope: str, identity: str) -> str:
    if scope == "mailfrom":
        return authresults.method_result("spf", result, reason, smtp_mailfrom=identity)
    return authresults.method_result("spf", result, reason, smtp_helo=identity)


def _dkim(result: str, reason: str, domain: str, selector: str, algorithm: str) -> str:
    return authresults.method_result("dkim", result, reason, header_d=domain, header_s=selector, header_a=algorithm)


def _arc(result: str, reason: str) -> str:
    return authresults.method_result("arc", result, reason)


def _dmarc(result: str, comment: str, from_domain: str) -> str:
    return authresults.method_result("dmarc", result, comment, header_from=from_domain)


#: The Authentication-Results clauses, kept per inputs: a sender's messages give the same ones.
_spf_clause = memo.by_texts(_spf)
_dkim_clause = memo.by_texts(_dkim)
_arc_clause = memo.by_texts(_arc)
_dmarc_clause = memo.by_texts(_dmarc)


class Authenticator:
    """Runs the checks concurrently over one injected twisted.names resolver."""

    def __init__(self, resolver: Any, reactor: Any, policy: InboundPolicy, pool: Any = None,
                 sample: Callable[[], float] | None = None, timeout: tuple[int, ...] | None = None) -> None:
        # One answer cache for SPF, DKIM keys and DMARC: a sender domain's records are fetched once per TTL.
        cache = AnswerCache(reactor.seconds)

        def lookup() -> DNSLookup:
            return DNSLookup(resolver, timeout, cache) if timeout else DNSLookup(resolver, cache=cache)

        self.policy = policy
        self.clock = reactor.seconds
        self.spf = SPFChecker(lookup())
        self.dkim = DKIMVerifier(lookup(), reactor, pool)
        self.dmarc = DMARCEvaluator(lookup(), **({"sample": sample} if sample else {}))

    def check_spf(self, client_ip: str, helo: str, mail_from: str) -> Deferred:
        """SPF alone, for a caller that checks at MAIL FROM (pass the result to L{authenticate})."""
        known = self.spf.check_cached(client_ip, helo, mail_from)  # every answer cached: no coroutine
        if known is not None:
            return succeed(known)
        return Deferred.fromCoroutine(self.spf.check(client_ip, helo, mail_from))

    def authenticate(self, client_ip: str, helo: str, mail_from: str, message: bytes,
                     spf: SPFResult | None = None, load: Callable[[], bytes] | None = None) -> Deferred:
        """
        Fire with L{AuthenticationResults} (never fails: errors are
        temperror/permerror results).  C{spf}: a result from L{check_spf}
        at MAIL FROM, so SPF is not evaluated twice.  C{load}: for a large
        message, C{message} is its header block only and C{load()} (called
        in the verification thread) reads the whole message.
        """
        return Deferred.fromCoroutine(self.results(client_ip, helo, mail_from, message, spf, load))

    async def results(self, client_ip: str, helo: str, mail_from: str, message: bytes,
                      known_spf: SPFResult | None = None, load: Callable[[], bytes] | None = None,
                      ) -> AuthenticationResults:
        """L{authenticate} as a coroutine, for a caller that awaits it (no Deferred of its own)."""
        outcome = self.results_now(client_ip, helo, mail_from, message, known_spf, load)
        return await outcome if isinstance(outcome, Deferred) else outcome

    def results_now(self, client_ip: str, helo: str, mail_from: str, message: bytes,
                    known_spf: SPFResult | None = None, load: Callable[[], bytes] | None = None,
                    ) -> AuthenticationResults | Deferred[AuthenticationResults]:
        """
        L{results} in callback style: the results at once when nothing is
        awaited (every answer cached, no signature to verify), else a
        Deferred of them -- the verification's own when only that is
        awaited, so a message costs no coroutine.
        """
        # One split of the header block for DKIM, ARC, DMARC and apply().
        fields, _ = split_headers(message)
        spf = known_spf if known_spf is not None else self.spf.check_cached(client_ip, helo, mail_from)
        if spf is None:  # SPF and DKIM concurrently
            return Deferred.fromCoroutine(self._concurrently(client_ip, helo, mail_from, message, load, fields))
        verified = self.dkim.verify_now(message, load, fields)
        if isinstance(verified, Deferred):
            return verified.addCallback(self._verified, spf, message, fields, mail_from, helo)
        return self._verified(verified, spf, message, fields, mail_from, helo)

    def verdict_now(self, client_ip: str, helo: str, mail_from: str, message: bytes,
                    known_spf: SPFResult | None = None, load: Callable[[], bytes] | None = None,
                    ) -> Any:
        """
        What end of DATA needs: L{in_worker}'s verdict when a worker can
        decide (the whole message at hand, SPF known), else L{results_now}'s
        results -- both give C{disposition}, C{reasons}, C{error} and
        C{apply}; at once or as a Deferred.
        """
        if load is None and known_spf is not None:
            verdict = self.in_worker(client_ip, helo, mail_from, message, known_spf)
            if verdict is not None:
                return verdict
        return self.results_now(client_ip, helo, mail_from, message, known_spf, load)

    def in_worker(self, client_ip: str, helo: str, mail_from: str, message: bytes,
                  spf: SPFResult) -> Deferred | None:
        """
        L{results_now}'s verdict (a L{Verdict}) computed in a verification
        worker (L{authenticate_blocking}): the reactor only fetches the DNS
        answers the worker asks for and has not kept.  None without workers
        (or with a DMARC C{pct=} sample of its own, which a worker cannot
        draw); the reactor path's results when no worker can take the
        message or the worker fails on it.
        """
        processes = self.dkim.processes
        if processes is None or self.dmarc.sample is not random.random:
            return None
        return self._ask(processes, (client_ip, helo, mail_from, message, spf), [], 0)

    def _here(self, request: tuple) -> Deferred:
        """L{in_worker}'s C{request} checked by the reactor's own path (L{results_now})."""
        return maybeDeferred(self.results_now, *request)

    def _ask(self, processes: Any, request: tuple, answers: list[tuple], rounds: int) -> Deferred:
        client_ip, helo, mail_from, message, spf = request

        def failed(failure: Any) -> Deferred:  # never expected: the worker's code raised
            log.failure("mail authentication in a worker failed; checked here instead", failure)
            return self._here(request)

        fields = (spf.result, spf.domain, spf.scope, spf.reason, spf.explanation)
        sent = processes.authenticate(self.policy, self.clock(), answers, message, fields, mail_from, helo,
                                      lambda: self._here(request))
        if sent is None:
            return self._here(request)
        return sent.addCallbacks(self._answered, failed, callbackArgs=(processes, request, answers, rounds))

    def _answered(self, answer: Any, processes: Any, request: tuple, answers: list[tuple],
                  rounds: int) -> Any:
        """A worker's answer: its verdict, or the DNS answers it needs fetched (then asked again)."""
        if not isinstance(answer, tuple):  # the reactor path's results: the worker failed
            return answer
        kind, value = answer
        if kind == "done":
            return Verdict(*value)
        if rounds >= MAX_ANSWER_ROUNDS:  # never expected: a worker that keeps asking
            log.warn("a mail authentication worker still asked for DNS answers after {rounds} rounds ({names}); "
                     "checked here instead", rounds=rounds, names=", ".join(name for _, name in value))
            return self._here(request)
        lookup = self.dmarc.lookup
        # Every answer fetched for this message goes with each round: another worker may take the next one.
        carried = list(answers)

        def fetched(_: object) -> Deferred:
            return self._ask(processes, request, carried, rounds + 1)

        fetches = [self._fetch(lookup, kind_, name).addCallback(carried.append) for kind_, name in value]
        return DeferredList(fetches).addCallback(fetched)

    def _fetch(self, lookup: DNSLookup, kind: str, name: str) -> Deferred:
        """C{(kind, name, value, expires)}: the answer and its cache expiry (None: not cached), or the failure."""
        def answered(records: Any) -> tuple:
            return kind, name, records, lookup.expires(kind, name)

        def failed(failure: Any) -> tuple:
            error = failure.value if failure.check(DNSTempError) else DNSTempError(f"{name}: {failure.value!r}")
            return kind, name, error, None

        return Deferred.fromCoroutine(getattr(lookup, kind)(name)).addCallbacks(answered, failed)

    async def _concurrently(self, client_ip: str, helo: str, mail_from: str, message: bytes,
                            load: Callable[[], bytes] | None, fields: Fields) -> AuthenticationResults:
        """L{results_now} when SPF needs answers not in the cache: SPF and DKIM at the same time."""
        spf_d = Deferred.fromCoroutine(self.spf.check(client_ip, helo, mail_from))
        dkim_d = Deferred.fromCoroutine(self.dkim.verify(message, load, fields))
        spf = await spf_d
        outcome = self._verified(await dkim_d, spf, message, fields, mail_from, helo)
        return await outcome if isinstance(outcome, Deferred) else outcome

    def _verified(self, verification: VerificationResults, spf: SPFResult, message: bytes, fields: Fields,
                  mail_from: str, helo: str) -> AuthenticationResults | Deferred[AuthenticationResults]:
        """DMARC over the SPF and DKIM results (at once when its answers are cached), then the results."""
        domains = from_domains(fields)
        # The SPF identity DMARC aligns: MAIL FROM's domain, or HELO's for the null sender.
        aligned = (spf.result, spf.domain)
        signers = [(r.result, r.domain) for r in verification.dkim]
        dmarc = self.dmarc.evaluate_cached(domains, aligned, signers)
        if dmarc is None:
            evaluated = Deferred.fromCoroutine(self.dmarc.evaluate(domains, aligned, signers))
            return evaluated.addCallback(self._evaluated, spf, verification, message, fields, mail_from, helo)
        return self._evaluated(dmarc, spf, verification, message, fields, mail_from, helo)

    def _evaluated(self, dmarc: DMARCResult, spf: SPFResult, verification: VerificationResults, message: bytes,
                   fields: Fields, mail_from: str, helo: str) -> AuthenticationResults:
        results = AuthenticationResults(
            spf=spf, dkim=verification.dkim, arc=verification.arc, dmarc=dmarc,
            header=authentication_header(self.policy, spf, verification.dkim, verification.arc, dmarc, mail_from, helo),
            authserv_id=self.policy.authserv_id, checked=(message, fields),
        )
        decide(self.policy, results)
        return results


def authentication_header(policy: InboundPolicy, spf: SPFResult, dkim: list[DKIMResult], arc: ARCResult,
                          dmarc: DMARCResult, mail_from: str, helo: str) -> bytes:
    """The Authentication-Results field of these results (RFC 8601)."""
    clauses = [_spf_clause(spf.result, spf.reason, spf.scope, mail_from if spf.scope == "mailfrom" else helo)]
    # A signature's clause but its header.b (the only part that changes with each message) is kept.
    clauses += [_dkim_clause(r.result, r.reason, r.domain, r.selector, r.algorithm)
                + authresults.properties(header_b=r.header_b) for r in dkim] or ["dkim=none"]
    clauses.append(_arc_clause(arc.result, arc.reason if arc.result != "pass" else ""))
    comment = f"p={dmarc.policy} dis={dmarc.disposition}" if dmarc.record else dmarc.reason
    clauses.append(_dmarc_clause(dmarc.result, comment, dmarc.from_domain))
    return authresults.header(policy.authserv_id, clauses)


def decide(policy: InboundPolicy, results: AuthenticationResults) -> None:
    """The disposition: the strictest of what DMARC, SPF and the own-domain rule ask."""
    dmarc = results.dmarc
    wanted: list[tuple[str, str]] = []
    if dmarc.result == "fail" and dmarc.disposition == "reject":
        wanted.append((policy.dmarc_reject_action, f"DMARC policy of {dmarc.from_domain} is reject"))
    elif dmarc.result == "fail" and dmarc.disposition == "quarantine":
        wanted.append((policy.dmarc_quarantine_action, f"DMARC policy of {dmarc.from_domain} is quarantine"))
    if results.spf.result == "fail":
        wanted.append((policy.spf_fail_action, f"SPF of {results.spf.domain} does not allow this host"))
    if dmarc.result in ("fail", "none") and not dmarc.aligned_with and _is_own(policy, dmarc.from_domain):
        # Our own domains never reach the inbox unauthenticated, whatever (if anything) they publish.
        wanted.append((policy.own_domain_fail_action, f"{dmarc.from_domain} is ours and the message is not authenticated"))
    for action in ("reject", "quarantine"):
        for wanted_action, reason in wanted:
            if wanted_action == action:
                results.disposition = action
                results.reasons.append(reason)
        if results.disposition != "accept":
            break
    if results.disposition == "reject":
        results.error = _refusal(results.reasons[0])


def _refusal(reason: str) -> MailError:
    return MailError(550, "5.7.1", f"Message rejected: {reason}")


def _is_own(policy: InboundPolicy, domain: str) -> bool:
    if not domain:
        return False
    own = policy.own_domains
    return domain in own or organizational_domain(domain) in own


@dataclass(frozen=True)
class Verdict:
    """
    What end of DATA needs of the results, as a verification worker
    computes them (L{authenticate_blocking}): the same C{header},
    C{disposition}, C{reasons}, C{error} and L{apply} as
    L{AuthenticationResults}.
    """

    header: bytes
    authserv_id: str
    disposition: str
    reasons: tuple[str, ...]
    forged: int  # Authentication-Results fields of our authserv-id in the message, removed by apply()

    @property
    def error(self) -> MailError | None:
        return _refusal(self.reasons[0]) if self.disposition == "reject" else None

    def apply(self, message: bytes) -> bytes:
        """C{message} with forged Authentication-Results (our authserv-id) removed and ours prepended."""
        if self.forged:
            message, _ = authresults.remove_forged(message, self.authserv_id)
        return self.header + message


class NeedAnswers(Exception):
    """L{authenticate_blocking} needs these C{(kind, name)} DNS answers first."""

    def __init__(self, keys: list[tuple[str, str]]) -> None:
        super().__init__(keys)
        self.keys = keys


def authenticate_blocking(fetch: Fetch, policy: InboundPolicy, spf: SPFResult, message: bytes,
                          mail_from: str, helo: str, sample: Callable[[], float] = random.random) -> Verdict:
    """
    DKIM, ARC and DMARC over C{message} and the verdict, synchronously,
    every DNS answer from C{fetch} (L{mailserver.mailauth.dns.Fetch}):
    what L{Authenticator.results_now} decides, for a verification worker.
    Raises L{NeedAnswers} with the answers C{fetch} lacks -- every DKIM
    key and the From domain's DMARC record at once, then the organizational
    domain's if needed -- before any signature is verified, so the caller
    fetches them and asks again.
    """
    fields, _ = split_headers(message)
    signed = signatures(fields)
    names = key_names(message, fields, signed)
    keys, missing = key_answers(fetch, names)
    domains = from_domains(fields)
    if len(domains) == 1 and domains[0]:  # else DMARC needs no record (permerror)
        try:
            find_record_with(fetch, domains[0])
        except NotCached as record:
            missing.append(record.key)
        except DNSTempError:  # the evaluation below gives the temperror
            pass
    if missing:
        raise NeedAnswers(missing)
    # As DKIMVerifier.verify_now: no signature with a key name, nothing verified (dkim=none, arc=none).
    verification = verify_blocking(message, keys, fields, signed) if names \
        else VerificationResults()
    signers = [(r.result, r.domain) for r in verification.dkim]
    dmarc = DMARCEvaluator(None, sample).evaluate_with(fetch, domains, (spf.result, spf.domain), signers)
    results = AuthenticationResults(
        spf=spf, dkim=verification.dkim, arc=verification.arc, dmarc=dmarc,
        header=authentication_header(policy, spf, verification.dkim, verification.arc, dmarc, mail_from, helo),
        authserv_id=policy.authserv_id,
    )
    decide(policy, results)
    _, forged = authresults.remove_forged(message, policy.authserv_id, fields)
    return Verdict(results.header, policy.authserv_id, results.disposition, tuple(results.reasons), forged)
