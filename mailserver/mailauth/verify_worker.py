"""
A DKIM/ARC verification worker process: reads framed requests on stdin,
answers on stdout, exits at end of input (so it never outlives the server,
whatever the way the server ended).

Frame: a 4-byte big-endian length, then a pickle of plain values (cheap
to load on the reactor).  Request: C{(number, (message, (records, failed),
fields, signed))}, the arguments of
L{mailserver.mailauth.dkim_verify.verify_blocking}, its C{answers} as their
two collections.  Answer: C{(number, True, encode_results(...))} or
C{(number, False, exception)}.

    python -m mailserver.mailauth.verify_worker
"""

from __future__ import annotations

import os
import pickle
import struct
import sys
from typing import Any, BinaryIO

HEADER = struct.Struct(">I")


def frame(value: object) -> bytes:
    data = pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(data)) + data


def encode_results(results: Any) -> tuple:
    """L{VerificationResults} as tuples of strings and ints."""
    arc = results.arc
    return ([(r.result, r.domain, r.selector, r.algorithm, r.header_b, r.reason) for r in results.dkim],
            (arc.result, arc.instances, arc.reason))


def decode_results(encoded: tuple) -> Any:
    """The L{VerificationResults} of L{encode_results}."""
    from mailserver.mailauth.dkim_verify import ARCResult, DKIMResult, VerificationResults

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


def serve(requests: BinaryIO, answers: BinaryIO) -> None:
    """Answer requests until end of input."""
    from mailserver.mailauth.dkim_verify import _Answers, verify_blocking

    while True:
        head = _read_exactly(requests, HEADER.size)
        if head is None:
            return
        body = _read_exactly(requests, HEADER.unpack(head)[0])
        if body is None:
            return
        number, (message, (records, failed), fields, signed) = pickle.loads(body)
        try:
            results = verify_blocking(message, _Answers(records, failed), fields, signed)
            answer = frame((number, True, encode_results(results)))
        except Exception as error:  # never expected: verify_blocking turns failures into results
            try:
                answer = frame((number, False, error))
            except Exception:
                answer = frame((number, False, RuntimeError(repr(error))))
        answers.write(answer)
        answers.flush()


def main() -> None:
    # stdout is the answer channel: anything else printed would corrupt it.
    answers = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    serve(sys.stdin.buffer, answers)


if __name__ == "__main__":
    main()
