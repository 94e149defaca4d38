"""
A mail authentication worker process: reads framed requests on stdin,
answers on stdout, exits at end of input (so it never outlives the server,
whatever the way the server ended).

Frame: a 4-byte big-endian length, then a pickle of plain values (cheap
to load on the reactor).  Two requests:

  - C{(number, (message, (records, failed), fields, signed))}: DKIM/ARC
    verification, the arguments of
    L{mailserver.mailauth.dkim_verify.verify_blocking}, its C{answers} as
    their two collections; answered C{(number, True, encode_results(...))};
  - C{(number, AUTHENTICATE, arguments)}: DKIM, ARC, DMARC and the verdict
    of one message (L{authenticate}); answered C{(number, True, ("done",
    verdict))} or, when DNS answers are missing, C{(number, True, ("need",
    names))}, and the server asks again with them.

An unexpected exception is answered C{(number, False, exception)}.  Each
answer is written as soon as it is ready (the server awaits each message:
an answer never waits for the others' work).

    python -m mailserver.mailauth.verify_worker
"""

from __future__ import annotations

import os
import pickle
import struct
from typing import Any, BinaryIO, Callable, Iterator

from mailserver.mailauth import dkim_verify
from mailserver.mailauth.dkim_verify import ARCResult, DKIMResult, VerificationResults, _Answers
from mailserver.mailauth.dns import AnswerCache, fetcher
from mailserver.mailauth.inbound import NeedAnswers, authenticate_blocking
from mailserver.mailauth.spf import SPFResult

HEADER = struct.Struct(">I")
#: The tag of an authentication request, C{(number, AUTHENTICATE, arguments)} (L{authenticate}).
AUTHENTICATE = "authenticate"
#: DNS answers a worker keeps for authentication requests (the oldest go first).
MAX_ANSWERS = 4096
#: Bytes of one answer's records past which it serves its request only (DKIM keys, DMARC records are far smaller).
MAX_KEPT_ANSWER = 8192
#: Bytes asked for per read of the requests (a pipe holds 64 KiB).
READ_SIZE = 1 << 16


def frame(value: object) -> bytes:
    data = pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(data)) + data


def encode_results(results: Any) -> tuple:
    """L{VerificationResults} as tuples of strings and ints."""
    arc = results.arc
    return ([(r.result, r.domain, r.selector, r.algorithm, r.header_b, r.reason) for r in results.dkim],
            (arc.result, arc.instances, arc.reason))


def decode_results(encoded: tuple) -> VerificationResults:
    """The L{VerificationResults} of L{encode_results}."""
    dkim, arc = encoded
    return VerificationResults([DKIMResult(*r) for r in dkim], ARCResult(*arc))


def _read_exactly(stream: BinaryIO, size: int) -> bytes | None:
    chunks, left = [], size
    while left:
        chunk = stream.read(left)
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def batches(requests: BinaryIO) -> Iterator[list[bytes]]:
    """
    The bodies of the request frames, in batches: those complete after one
    read of C{requests} (unbuffered: each read gives what is there), that
    is every request already sent.  A frame bigger than a read is read
    whole at once.  Ends at end of input (a partial frame is dropped).
    """
    pending = b""
    while True:
        chunk = requests.read(READ_SIZE)
        if not chunk:
            return
        data = pending + chunk if pending else chunk
        bodies, offset = [], 0
        while len(data) - offset >= HEADER.size:
            end = offset + HEADER.size + HEADER.unpack_from(data, offset)[0]
            if end > len(data):
                break
            bodies.append(data[offset + HEADER.size:end])
            offset = end
        pending = data[offset:]
        if not bodies and len(pending) >= HEADER.size:  # one large request: its rest in one go
            rest = _read_exactly(requests, HEADER.size + HEADER.unpack_from(pending)[0] - len(pending))
            if rest is None:
                return
            bodies, pending = [pending[HEADER.size:] + rest], b""
        if bodies:
            yield bodies


class _AuthState:
    """
    What the authentication requests of one server leave in its worker:
    the policy, and the DNS answers it was sent, in an answer cache on the
    server's clock (C{now} comes with each request), each kept until the
    expiry the server's own cache gave it.
    """

    def __init__(self, max_entries: int = MAX_ANSWERS) -> None:
        self.policy: Any = None
        self.now = 0.0
        self.answers = AnswerCache(lambda: self.now, max_entries)

    def keep(self, key: tuple[str, str], value: Any, expires: float) -> None:
        self.answers.put(key, value, expires - self.now)

    def fetch(self, only_now: dict[tuple[str, str], Any]) -> Callable[[str, str], Any]:
        """A C{Fetch}: C{only_now} (answers for this request alone, failures too), then the kept answers."""
        get = self.answers.get
        return fetcher(lambda kind, name, _read: get((kind, name)), only_now)


_state = _AuthState()


def _size(records: list) -> int:
    """Bytes of an answer's records (TXT strings or bytes)."""
    return sum(len(record) if isinstance(record, (str, bytes)) else 64 for record in records)


def authenticate(request: tuple, state: _AuthState = _state) -> tuple:
    """
    One authentication request: C{(policy or None, now, answers, message,
    spf, mail_from, helo)}, C{spf} the fields of an L{SPFResult}, C{answers}
    the C{(kind, name, value, expires)} the server fetched for it (C{expires}
    None: for this request only).  Gives C{("done", fields of the Verdict)}
    or C{("need", [(kind, name), ...])}.
    """
    policy, now, answers, message, spf, mail_from, helo = request
    if policy is not None:
        state.policy = policy
    state.now = now
    only_now = {}
    for kind, name, value, expires in answers:
        if expires is None or expires <= now or isinstance(value, Exception) or _size(value) > MAX_KEPT_ANSWER:
            only_now[(kind, name)] = value
        else:
            state.keep((kind, name), value, expires)
    try:
        verdict = authenticate_blocking(state.fetch(only_now), state.policy, SPFResult(*spf), message,
                                        mail_from, helo)
    except NeedAnswers as need:
        return "need", need.keys
    return "done", (verdict.header, verdict.authserv_id, verdict.disposition, verdict.reasons, verdict.forged)


def answer(body: bytes) -> bytes:
    """The answer frame to one request frame's body."""
    request = pickle.loads(body)
    number = request[0]
    try:
        if len(request) == 3:  # (number, AUTHENTICATE, arguments)
            return frame((number, True, authenticate(request[2])))
        message, (records, failed), fields, signed = request[1]
        results = dkim_verify.verify_blocking(message, _Answers(records, failed), fields, signed)
        return frame((number, True, encode_results(results)))
    except Exception as error:  # never expected: verify_blocking turns failures into results
        try:
            return frame((number, False, error))
        except Exception:
            return frame((number, False, RuntimeError(repr(error))))


def _write(answers: BinaryIO, data: bytes) -> None:
    view = memoryview(data)
    while view:  # a blocking pipe takes it all, but a signal could cut a write short
        view = view[answers.write(view):]


def serve(requests: BinaryIO, answers: BinaryIO) -> None:
    """
    Answer requests until end of input, each answer written as soon as it
    is ready; the requests already sent are read together (L{batches}).
    """
    for bodies in batches(requests):
        for body in bodies:
            _write(answers, answer(body))


def main() -> None:
    # stdout is the answer channel: anything else printed would corrupt it.
    answers = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    serve(os.fdopen(0, "rb", buffering=0, closefd=False), answers)


if __name__ == "__main__":
    main()
