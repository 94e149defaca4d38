"""
COMPRESS=DEFLATE (RFC 4978): raw deflate (RFC 1951) in both directions
from the end of the tagged OK on, on top of TLS when TLS is on.

L{DeflateTransport} wraps the connection's transport: every write is
compressed and flushed with Z_SYNC_FLUSH, so a response is never held
back waiting for more.  It provides what the wrapped transport provides
(ISSLTransport included), so TLS checks still see TLS.  L{Inflater}
decompresses what the client sends in bounded pieces: a small deflate
bomb cannot make one huge buffer, and the line and literal limits apply
to the decompressed bytes as they do without compression.
"""

from __future__ import annotations

import zlib
from typing import Any, Iterable, Iterator

from zope.interface import directlyProvides, providedBy

#: Largest piece of decompressed input handed on at once.
CHUNK = 64 * 1024
_RAW_DEFLATE = -15


class DeflateTransport:
    """A transport proxy that deflates what is written to it."""

    def __init__(self, transport: Any, level: int = 6) -> None:
        self.wrapped = transport
        self._compressor = zlib.compressobj(level, zlib.DEFLATED, _RAW_DEFLATE)
        directlyProvides(self, providedBy(transport))

    def write(self, data: bytes) -> None:
        if data:
            self.wrapped.write(self._compressor.compress(data) + self._compressor.flush(zlib.Z_SYNC_FLUSH))

    def writeSequence(self, data: Iterable[bytes]) -> None:
        self.write(b"".join(data))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.wrapped, name)


class Inflater:
    """Decompresses the client's stream; C{zlib.error} on garbage."""

    def __init__(self, chunk: int = CHUNK) -> None:
        self._decompressor = zlib.decompressobj(_RAW_DEFLATE)
        self._chunk = chunk

    def feed(self, data: bytes) -> Iterator[bytes]:
        """Decompressed pieces of at most C{chunk} bytes; each round consumes input or ends."""
        d = self._decompressor
        out = d.decompress(data, self._chunk)
        if out:
            yield out
        while d.unconsumed_tail:
            out = d.decompress(d.unconsumed_tail, self._chunk)
            if out:
                yield out
