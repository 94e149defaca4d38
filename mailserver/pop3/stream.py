"""
Send one message (RETR) or its top (TOP) to a POP3 client.

Chunks are read in a thread, encoded (CRLF, dot-stuffing) and written to
the transport, which may pause us: the reactor never waits on the disk and
a slow client never makes us hold a whole message in memory.
"""

from __future__ import annotations

import io
from typing import IO, Callable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IConsumer, IPushProducer
from zope.interface import implementer

from mailserver.pop3.wire import BodyEncoder, TopFilter

CHUNK_SIZE = 65536


class TransferStopped(Exception):
    """The transport went away before the message was sent."""


@implementer(IPushProducer)
class MessageStreamer:
    """
    Stream C{fp} to C{consumer} as a POP3 multi-line response body,
    including the final ``.``.

    @param run_in_thread: C{run(f, *args) -> Deferred}, for the reads.
    @param top: keeps only the top of the message (TOP), or L{None} (RETR).
    @param progress: called after each chunk written (resets idle timers).
    """

    def __init__(
        self,
        fp: IO[bytes],
        consumer: IConsumer,
        run_in_thread: Callable[..., Deferred],
        top: TopFilter | None = None,
        progress: Callable[[], None] = lambda: None,
        chunk_size: int = CHUNK_SIZE,
    ) -> None:
        self._fp = fp
        self._consumer = consumer
        self._run = run_in_thread
        self._top = top
        self._progress = progress
        self._chunk_size = chunk_size
        self._paused = False
        self._stopped = False
        self._resumed: Deferred | None = None
        self.sent = 0

    def start(self) -> Deferred:
        """Begin; the Deferred fires with the number of bytes written."""
        return Deferred.fromCoroutine(self._pump())

    async def _pump(self) -> int:
        encoder = BodyEncoder()
        self._consumer.registerProducer(self, True)
        try:
            while True:
                while self._paused and not self._stopped:
                    self._resumed = Deferred()
                    await self._resumed
                if self._stopped:
                    raise TransferStopped()
                if isinstance(self._fp, io.BytesIO):  # already in memory: no thread trip
                    chunk = self._fp.read(self._chunk_size)
                else:
                    chunk = await self._run(self._fp.read, self._chunk_size)
                if self._stopped:
                    raise TransferStopped()
                if not chunk:
                    break
                at_end = len(chunk) < self._chunk_size  # a short read of a file is its end
                if self._top is not None:
                    chunk = self._top.feed(chunk)
                self._write(encoder.encode(chunk))
                self._progress()
                if self._top is not None and self._top.done:
                    break
                if at_end:
                    break  # no trip to the thread pool to read b""
            self._write(encoder.finish())
            return self.sent
        finally:
            self._fp.close()
            if not self._stopped:
                self._consumer.unregisterProducer()

    def _write(self, data: bytes) -> None:
        if data:
            self._consumer.write(data)
            self.sent += len(data)

    # IPushProducer

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._wake()

    def stopProducing(self) -> None:
        self._stopped = True
        self._wake()

    def _wake(self) -> None:
        waiting, self._resumed = self._resumed, None
        if waiting is not None:
            waiting.callback(None)
