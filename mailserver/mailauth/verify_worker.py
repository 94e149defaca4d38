"""
A DKIM/ARC verification worker process: reads framed requests on stdin,
answers on stdout, exits at end of input (so it never outlives the server,
whatever the way the server ended).

Frame: a 4-byte big-endian length, then a pickle of plain values (cheap
to load on the reactor).  Request: C{(number, (message, (records, failed),
fields, signed))}, the arguments of
L{mailserver.mailauth.dkim_verify.verify_blocking}, its C{answers} as their
two collections.  Answer: C{(number, True, encode_results(...))} or
C{(number, False, exception)}, written as soon as it is ready (the server
awaits each message: an answer never waits for the others' work).

    python -m mailserver.mailauth.verify_worker
"""

from __future__ import annotations

import os
import pickle
import struct
from typing import Any, BinaryIO, Iterator

from mailserver.mailauth import dkim_verify
from mailserver.mailauth.dkim_verify import ARCResult, DKIMResult, VerificationResults, _Answers

HEADER = struct.Struct(">I")
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


def answer(body: bytes) -> bytes:
    """The answer frame to one request frame's body."""
    number, (message, (records, failed), fields, signed) = pickle.loads(body)
    try:
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
