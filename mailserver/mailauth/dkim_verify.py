"""
DKIM (RFC 6376) and ARC (RFC 8617) verification without blocking DNS.

1. Pure: read the DKIM-Signature / ARC-Message-Signature / ARC-Seal fields
   to learn the key names (C{s=}, C{d=}) they need.
2. Async: fetch those TXT records through the injected resolver.
3. Thread: run dkimpy's verifiers with a C{dnsfunc} answering from the
   fetched records only.

Every failure becomes a result (permerror, temperror, fail), never a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import islice
from typing import Any, Callable

import dkim
from dkim.util import InvalidTagValueList
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.threads import deferToThreadPool

from mailserver.mailauth.dkim_fast import FastVerifier, crlf, parse_like_dkimpy, parse_tags
from mailserver.mailauth.dns import DNSLookup, DNSTempError, Fetch, NotCached, fetcher
from mailserver.mailauth.headers import Fields, split_headers

#: Signatures looked at per message (the rest are ignored): bounded work.
MAX_SIGNATURES = 8
#: ARC sets verified at most (RFC 8617 5.1.1.2: more than 50 is a fail).
MAX_ARC_SETS = 50

_SIGNATURE_FIELDS = ("dkim-signature", "arc-message-signature", "arc-seal")


@dataclass(frozen=True)
class DKIMResult:
    """One signature's outcome, for Authentication-Results and DMARC."""

    result: str  # pass, fail, neutral, temperror, permerror
    domain: str = ""
    selector: str = ""
    algorithm: str = ""
    header_b: str = ""  # the first characters of b=, to tell signatures apart (RFC 6008)
    reason: str = ""


@dataclass(frozen=True)
class ARCResult:
    result: str  # pass, fail, none
    instances: int = 0
    reason: str = ""


@dataclass
class VerificationResults:
    dkim: list[DKIMResult] = field(default_factory=list)
    arc: ARCResult = field(default_factory=lambda: ARCResult("none"))


Tags = dict[bytes, bytes]


def _tags(raw: bytes) -> Tags | None:
    """
    The tags of a raw signature field, its line ends made CRLF first as in
    dkimpy's parse (so they equal the tags dkimpy and the fast path see).
    """
    try:
        return parse_tags(crlf(raw.split(b":", 1)[1]))
    except (InvalidTagValueList, IndexError, ValueError):
        return None


def signatures(fields: Fields) -> list[tuple[bytes, Tags | None]]:
    """The first L{MAX_SIGNATURES} DKIM-Signature fields and their tags (None: unparsable), parsed once."""
    raws = (raw for name, raw in fields if name.lower() == "dkim-signature")
    return [(raw, _tags(raw)) for raw in islice(raws, MAX_SIGNATURES)]


def key_names(message: bytes, fields: Fields | None = None,
              signed: list[tuple[bytes, Tags | None]] | None = None) -> list[str]:
    """
    Pure: the C{SELECTOR._domainkey.DOMAIN} names the signatures of
    C{message} need, in order.  C{fields}: its header fields, when the
    caller has already split them (L{split_headers}); C{signed}: their
    L{signatures}, when already parsed.
    """
    if fields is None:
        fields, _ = split_headers(message)
    dkim_tags = iter([tags for _, tags in (signatures(fields) if signed is None else signed)])
    names: list[str] = []
    counts = {name: 0 for name in _SIGNATURE_FIELDS}
    for name, raw in fields:
        lowered = name.lower()
        if lowered not in counts:
            continue
        counts[lowered] += 1
        if counts[lowered] > (MAX_SIGNATURES if lowered == "dkim-signature" else MAX_ARC_SETS):
            continue
        tags = next(dkim_tags) if lowered == "dkim-signature" else _tags(raw)
        if not tags or b"s" not in tags or b"d" not in tags:
            continue
        key = b"%s._domainkey.%s" % (tags[b"s"].strip(), tags[b"d"].strip())
        text = key.decode("ascii", "replace").lower().rstrip(".")
        if text not in names:
            names.append(text)
    return names


class _Answers:
    """dkimpy's C{dnsfunc}, answering from records fetched beforehand."""

    def __init__(self, records: dict[str, bytes | None], failed: set[str]) -> None:
        self.records = records
        self.failed = failed

    def __call__(self, name: bytes | str, timeout: Any = 5) -> bytes | None:
        text = (name.decode("ascii", "replace") if isinstance(name, bytes) else name).lower().rstrip(".")
        if text in self.failed:
            raise dkim.DnsTimeoutError(f"{text}: temporary DNS failure")
        return self.records.get(text)


def verify_blocking(message: bytes, answers: _Answers, fields: Fields | None = None,
                    signed: list[tuple[bytes, Tags | None]] | None = None) -> VerificationResults:
    """
    dkimpy's DKIM and ARC verification (CPU only: every DNS answer is in
    C{answers}).  C{fields}: the header fields of C{message}, already
    split; C{signed}: their L{signatures}, already parsed.
    """
    results = VerificationResults()
    if fields is None:
        fields, _ = split_headers(message)
    if signed is None:
        signed = signatures(fields)
    verifier: Any = None  # dkimpy's parse of the message, made only when the fast path cannot decide
    fast: FastVerifier | None = None
    sig_headers: list[tuple[bytes, bytes]] = []

    def dkimpy() -> Any:
        nonlocal verifier
        if verifier is None:
            verifier = dkim.DKIM(message, minkey=1024)
        return verifier
    for index, (_raw, parsed) in enumerate(signed):
        tags = parsed or {}
        domain = tags.get(b"d", b"").decode("ascii", "replace").strip().lower()
        selector = tags.get(b"s", b"").decode("ascii", "replace").strip()
        algorithm = tags.get(b"a", b"").decode("ascii", "replace").strip()
        header_b = "".join(tags.get(b"b", b"").decode("ascii", "replace").split())[:8]

        def result(outcome: str, reason: str = "") -> DKIMResult:
            return DKIMResult(outcome, domain, selector, algorithm, header_b, reason)

        if not tags:
            results.dkim.append(result("permerror", "unparsable signature"))
            continue
        if algorithm.lower() == "rsa-sha1":
            results.dkim.append(result("permerror", "rsa-sha1 is not accepted (RFC 8301)"))
            continue
        # dkimpy reports a missing key and a DNS failure as a plain "False": tell them apart first.
        key_name = f"{selector}._domainkey.{domain}".lower().rstrip(".")
        if key_name in answers.failed:
            results.dkim.append(result("temperror", f"{key_name}: temporary DNS failure"))
            continue
        if answers.records.get(key_name) is None:
            results.dkim.append(result("permerror", f"no key at {key_name}"))
            continue
        try:
            if fast is None:  # one parse of the message for all its signatures, from the fields already split
                fast = FastVerifier(parse_like_dkimpy(message, fields) or dkimpy())
                sig_headers = [item for item in fast.parsed.headers if item[0].lower() == b"dkim-signature"]
            # The common case is checked quickly; dkimpy decides the rest and gives failures their reason.
            ok = (index < len(sig_headers) and fast.verify(sig_headers[index], answers.records[key_name] or b"", tags)) \
                or dkimpy().verify(idx=index, dnsfunc=answers)
        except dkim.DnsTimeoutError as error:
            results.dkim.append(result("temperror", str(error)))
        except dkim.DKIMException as error:
            results.dkim.append(result("permerror" if "body hash" not in str(error) else "fail", str(error)))
        except Exception as error:  # dkimpy on hostile input: a result, never a traceback
            results.dkim.append(result("permerror", f"{type(error).__name__}: {error}"))
        else:
            results.dkim.append(result("pass") if ok else result("fail", "signature did not verify"))
    if any(name.lower() == "arc-seal" for name, _ in fields):
        try:
            cv, data, reason = dkim.ARC(message, minkey=1024).verify(dnsfunc=answers)
        except dkim.DnsTimeoutError as error:
            results.arc = ARCResult("temperror", 0, str(error))
        except Exception as error:  # same: malformed ARC sets fail, they do not crash
            results.arc = ARCResult("fail", 0, f"{type(error).__name__}: {error}")
        else:
            outcome = (cv or b"fail").decode("ascii", "replace").lower()
            results.arc = ARCResult(outcome if outcome in ("pass", "fail", "none") else "fail", len(data), reason)
    return results


def key_answers(fetch: Fetch, names: list[str]) -> tuple[_Answers, list[tuple[str, str]]]:
    """
    The key records C{fetch} gives for C{names} (a temporary failure
    noted as such), and the C{(kind, name)} look-ups it does not have.
    """
    records: dict[str, bytes | None] = {}
    failed: set[str] = set()
    missing: list[tuple[str, str]] = []
    for name in names:
        try:
            found = fetch("txt_bytes", name)
        except NotCached:
            missing.append(("txt_bytes", name))
        except DNSTempError:
            failed.add(name)
        else:
            records[name] = found[0] if found else None
    return _Answers(records, failed), missing


class DKIMVerifier:
    """
    Fetch keys asynchronously, then verify in a thread, or in a worker
    process when L{processes} (a L{mailserver.mailauth.verify_process.VerifyProcesses}) is set.
    """

    def __init__(self, lookup: DNSLookup, reactor: Any, pool: Any = None) -> None:
        self.lookup = lookup
        self.reactor = reactor
        self.pool = pool
        self.processes: Any = None

    def in_thread(self, message: bytes, answers: _Answers, fields: Fields | None = None,
                  signed: list[tuple[bytes, Tags | None]] | None = None,
                  load: Callable[[], bytes] | None = None) -> Deferred:
        """L{verify_blocking} in the verification thread pool (C{load()}, if given, reads the message there)."""
        def verify() -> VerificationResults:
            return verify_blocking(load() if load is not None else message, answers, fields, signed)

        return deferToThreadPool(self.reactor, self.pool or self.reactor.getThreadPool(), verify)

    def cached(self, names: list[str]) -> _Answers | None:
        """The answers when every key is in the answer cache (no Deferred, no query), else None."""
        answers, missing = key_answers(fetcher(self.lookup.cached, {}), names)
        return None if missing else answers

    async def fetch(self, names: list[str]) -> _Answers:
        known = self.cached(names)
        if known is not None:
            return known
        records: dict[str, bytes | None] = {}
        failed: set[str] = set()

        async def one(name: str) -> None:
            try:
                found = await self.lookup.txt_bytes(name)
            except DNSTempError:
                failed.add(name)
                return
            records[name] = found[0] if found else None

        await DeferredList([Deferred.fromCoroutine(one(name)) for name in names], consumeErrors=True)
        return _Answers(records, failed)

    async def verify(self, message: bytes, load: Callable[[], bytes] | None = None,
                     fields: Fields | None = None) -> VerificationResults:
        """
        Verify C{message}; with C{load}, C{message} is the header block
        only and C{load()} reads the whole message in the verification
        thread (a large message is not held while DNS answers are awaited).
        C{fields}: the header fields of C{message}, already split.
        """
        outcome = self.verify_now(message, load, fields)
        return await outcome if isinstance(outcome, Deferred) else outcome

    def verify_now(self, message: bytes, load: Callable[[], bytes] | None = None,
                   fields: Fields | None = None) -> VerificationResults | Deferred[VerificationResults]:
        """
        L{verify} in callback style: the results at once for a message
        without signatures, else the verification's Deferred (after the
        key look-ups when a key is not in the answer cache).
        """
        if fields is None:
            fields, _ = split_headers(message)
        signed = signatures(fields)
        names = key_names(message, fields, signed)
        if not names:
            return VerificationResults()
        answers = self.cached(names)
        if answers is None:
            fetched = Deferred.fromCoroutine(self.fetch(names))
            return fetched.addCallback(self._verify, message, fields, signed, load)
        return self._verify(answers, message, fields, signed, load)

    def _verify(self, answers: _Answers, message: bytes, fields: Fields,
                signed: list[tuple[bytes, Tags | None]], load: Callable[[], bytes] | None) -> Deferred:
        """The verification with every key answer at hand: in a worker process, or in the thread pool."""
        if load is None and self.processes is not None:
            return self.processes.verify(message, answers, fields, signed)
        return self.in_thread(message, answers, fields, signed, load)
