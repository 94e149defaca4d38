"""
Mail authentication in worker processes (main.cf
C{mail_authentication_verify_processes}), outside the server's GIL: DKIM
and ARC verification (L{VerifyProcesses.verify}) or a message's whole
DKIM, ARC and DMARC check and verdict (L{VerifyProcesses.authenticate}).
The reactor writes a request to a worker's stdin and reads the answer from
its stdout, with no thread involved.  Each way, a message goes at once: the
request is written as soon as it is made (the worker starts on it, or
finds it when done with the one in hand, while the reactor goes on with
its turn), and the worker writes each answer as soon as it is ready
(L{mailserver.mailauth.verify_worker.serve}): a message never waits for
the end of a reactor turn nor for the verification of others.

A request that cannot be served there (no live worker, every worker has
L{MAX_PENDING} requests queued, the worker died, or it spent more than
C{timeout} on one request) is served by its fallback instead (the thread
path for a verification, the reactor's own checks for an authentication):
a message is never lost nor left waiting.  A worker that dies is
replaced.  Workers exit at end of their input, so they never outlive the
server; at L{VerifyProcesses.stop} they first answer what they were sent.
"""

from __future__ import annotations

import os
import pickle
import sys
from typing import Any, Callable

from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.error import ProcessDone
from twisted.internet.interfaces import IWriteDescriptor
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from zope.interface import implementer

from mailserver.mailauth.verify_worker import AUTHENTICATE, HEADER, decode_results, frame

log = Logger(namespace="mailserver.mailauth")

#: The package's parent directory: the worker imports the same code as the server.
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
#: Seconds a stopping worker gets to exit before it is killed.
STOP_GRACE = 5.0
#: Seconds before a worker that died within that time of its start is replaced.
RESPAWN_DELAY = 1.0
#: Requests queued on one worker before more go to the fallback (a worker serves them in order).
MAX_PENDING = 64
#: The worker's command: the package's own directory first on sys.path, never the
#: current directory (python -m or -c would put the directory twistd was started from there).
_BOOT = ("import sys; sys.path[0] = {root!r}; "
         "from mailserver.mailauth.verify_worker import main; main()")


class _Request:
    """A request a worker holds: how to read its answer, and how to serve it elsewhere if the worker cannot."""

    __slots__ = ("fallback", "decode", "deferred")

    def __init__(self, fallback: Callable[[], Deferred], decode: Callable[[Any], Any], deferred: Deferred) -> None:
        self.fallback = fallback
        self.decode = decode
        self.deferred = deferred


def _same(value: Any) -> Any:
    return value


@implementer(IWriteDescriptor)
class _RequestPipe:
    """
    The write end of a worker's stdin: each request written at once, as
    much as the pipe has room for (no reactor registration per request,
    unlike a process transport's stdin), the rest when the reactor says
    it is writable.
    """

    def __init__(self, reactor: Any, fd: int) -> None:
        self.reactor = reactor
        self.fd = fd
        self.pending = b""
        self.closing = False  # close once everything written (L{close_when_written})

    def write(self, data: bytes) -> None:
        if self.fd < 0:
            return  # closed: the worker's end (processEnded) retries its requests
        if self.pending:
            self.pending += data
            return
        try:
            written = os.write(self.fd, data)
        except BlockingIOError:
            written = 0
        except OSError:  # the worker is gone: processEnded retries its requests
            return
        if written < len(data):
            self.pending = data[written:]
            self.reactor.addWriter(self)

    def doWrite(self) -> None:
        try:
            written = os.write(self.fd, self.pending)
        except BlockingIOError:
            return
        except OSError:
            written = len(self.pending)
        self.pending = self.pending[written:]
        if not self.pending:
            self.reactor.removeWriter(self)
            if self.closing:
                self.close()

    def close_when_written(self) -> None:
        """End of input once what was sent has reached the worker (it answers it, then exits)."""
        if self.pending:
            self.closing = True
        else:
            self.close()

    def close(self) -> None:
        """End of input for the worker (it exits); what was not written yet is dropped."""
        if self.fd >= 0:
            self.reactor.removeWriter(self)
            os.close(self.fd)
            self.fd = -1
            self.pending = b""

    def fileno(self) -> int:
        return self.fd

    def connectionLost(self, reason: Any) -> None:
        self.close()

    def logPrefix(self) -> str:
        return "verify-worker"


class _Worker(ProcessProtocol):
    """One worker process and the requests it has been given."""

    def __init__(self, pool: "VerifyProcesses", requests: _RequestPipe) -> None:
        self.pool = pool
        self.requests = requests
        self.pending: dict[int, _Request] = {}
        self.buffer = b""
        self.ended: Deferred = Deferred()
        self.alive = False
        self.started = pool.reactor.seconds()
        #: Whether this worker has the authentication policy (sent with its first authentication request).
        self.has_policy = False
        #: Times the request the worker is on (the oldest: it serves them in order).
        self.deadline: Any = None

    def watch(self) -> None:
        """(Re)start the deadline for the oldest pending request, if any."""
        armed = self.deadline is not None and self.deadline.active()
        if self.pending and self.alive:
            if armed:
                self.deadline.reset(self.pool.timeout)  # no new DelayedCall per answer
            else:
                self.deadline = self.pool.reactor.callLater(self.pool.timeout, self.pool._timed_out, self)
        elif armed:
            self.deadline.cancel()

    def connectionMade(self) -> None:
        self.alive = True

    def outReceived(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        offset = 0
        answered = []
        while len(buffer) - offset >= HEADER.size:
            size = HEADER.unpack_from(buffer, offset)[0]
            end = offset + HEADER.size + size
            if len(buffer) < end:
                break
            answered.append(pickle.loads(buffer[offset + HEADER.size:end]))
            offset = end
        self.buffer = buffer[offset:]
        requests = [(self.pending.pop(number, None), ok, value) for number, ok, value in answered]
        requests = [answer for answer in requests if answer[0] is not None]  # else timed out already
        if requests:
            self.watch()  # the next request starts now (once for the answers that came together)
        for request, ok, value in requests:
            if ok:
                request.deferred.callback(request.decode(value))
            else:
                request.deferred.errback(value)

    def processEnded(self, reason: Any) -> None:
        self.alive = False
        self.watch()  # cancels the deadline
        self.requests.close()
        pending, self.pending = self.pending, {}
        self.pool._ended(self, reason, list(pending.values()))
        self.ended.callback(None)


class VerifyProcesses:
    """
    C{count} verification worker processes.  L{verify} takes the
    arguments of L{mailserver.mailauth.dkim_verify.verify_blocking} (less a
    C{load}); C{fallback(*arguments)} returns a Deferred verifying them in
    threads.
    """

    def __init__(self, reactor: Any, count: int, fallback: Callable[..., Deferred],
                 timeout: float = 30.0, argv: list[str] | None = None) -> None:
        self.reactor = reactor
        self.count = count
        self.fallback = fallback
        self.timeout = timeout
        self.argv = argv or [sys.executable, "-c", _BOOT.format(root=_ROOT)]
        self.workers: list[_Worker] = []
        self.running = False
        self.replaced = 0  # workers that died and were replaced
        self.fallbacks = 0  # requests verified by the fallback instead
        self._number = 0
        self._respawns: list[Any] = []

    def start(self) -> None:
        self.running = True
        for _ in range(self.count):
            self._spawn()

    def _spawn(self) -> None:
        env = dict(os.environ)
        read, write = os.pipe()
        os.set_blocking(write, False)
        os.set_inheritable(write, False)
        worker = _Worker(self, _RequestPipe(self.reactor, write))
        try:
            self.reactor.spawnProcess(worker, self.argv[0], self.argv, env=env, childFDs={0: read, 1: "r", 2: 2})
        except Exception:
            worker.requests.close()
            raise
        finally:
            os.close(read)
        self.workers.append(worker)

    def _respawn(self) -> None:
        self._respawns = [call for call in self._respawns if call.active()]
        if self.running and len(self.workers) < self.count:
            self._spawn()

    def stop(self) -> Deferred:
        """Close the workers' input (they exit), kill those still there after L{STOP_GRACE}; fire when all ended."""
        self.running = False
        for call in self._respawns:
            if call.active():
                call.cancel()
        self._respawns = []
        waits = []
        for worker in list(self.workers):
            if not worker.alive:
                continue
            worker.requests.close_when_written()  # it answers what it was sent, then exits
            kill = self.reactor.callLater(STOP_GRACE, self._kill, worker)
            worker.ended.addCallback(lambda _, kill=kill: kill.cancel() if kill.active() else None)
            waits.append(worker.ended)
        if not waits:
            return succeed(None)
        return gatherResults(waits).addCallback(lambda _: None)

    @staticmethod
    def _kill(worker: _Worker) -> None:
        try:
            worker.transport.signalProcess("KILL")
        except Exception:  # already gone
            pass

    def verify(self, *arguments: Any) -> Deferred:
        """A Deferred firing with verify_blocking(*arguments)'s result."""
        worker = self._least_busy()
        if worker is None:
            return self._fall_back(arguments)
        message, answers, fields, signed = arguments
        return self._send(worker, lambda number: (number, (message, (answers.records, answers.failed), fields, signed)),
                          lambda: self._fall_back(arguments), decode_results)

    def authenticate(self, policy: Any, now: float, answers: list[tuple], message: bytes, spf: tuple,
                     mail_from: str, helo: str, fallback: Callable[[], Deferred]) -> Deferred | None:
        """
        A Deferred firing with a worker's L{mailserver.mailauth.verify_worker.authenticate}
        answer, C{fallback()}'s result if that worker fails; None when no
        worker can take it now (the caller serves it itself).
        """
        worker = self._least_busy()
        if worker is None:
            return None
        sent = None if worker.has_policy else policy
        worker.has_policy = True
        arguments = (sent, now, answers, message, spf, mail_from, helo)
        return self._send(worker, lambda number: (number, AUTHENTICATE, arguments), fallback, _same)

    def _least_busy(self) -> _Worker | None:
        """The live worker with the fewest pending (the first of them), if it can queue one more."""
        worker = None
        if self.running:
            for candidate in self.workers:
                if candidate.alive and (worker is None or len(candidate.pending) < len(worker.pending)):
                    worker = candidate
        if worker is None or len(worker.pending) >= MAX_PENDING:
            return None
        return worker

    def _send(self, worker: _Worker, request: Callable[[int], tuple], fallback: Callable[[], Deferred],
              decode: Callable[[Any], Any]) -> Deferred:
        self._number += 1
        number = self._number
        data = frame(request(number))  # first: a request that cannot be framed is never left pending
        deferred: Deferred = Deferred()
        worker.pending[number] = _Request(fallback, decode, deferred)
        if len(worker.pending) == 1:
            worker.watch()
        worker.requests.write(data)
        return deferred

    def _fall_back(self, arguments: tuple) -> Deferred:
        self.fallbacks += 1
        return self.fallback(*arguments)

    def _retry(self, request: _Request) -> None:
        request.fallback().chainDeferred(request.deferred)

    def _timed_out(self, worker: _Worker) -> None:
        """The worker spent C{timeout} on its oldest request: stuck, killed."""
        worker.deadline = None
        if not worker.pending:
            return
        number = next(iter(worker.pending))
        request = worker.pending.pop(number)
        log.warn("mail authentication worker {pid} did not answer in {timeout} s: killed, its messages "
                 "checked on the server instead",
                 pid=worker.transport.pid, timeout=self.timeout)
        self._retry(request)
        self._kill(worker)  # its other requests go to the fallback when it has ended

    def _ended(self, worker: _Worker, reason: Any, pending: list[_Request]) -> None:
        if worker in self.workers:
            self.workers.remove(worker)
        if self.running:
            if not reason.check(ProcessDone) or pending:
                log.warn("mail authentication worker ended ({reason}): replaced, {count} message(s) "
                         "checked on the server", reason=reason.getErrorMessage(), count=len(pending))
            self.replaced += 1
            # One that dies at once (a broken installation) is not respawned in a tight loop.
            quick = self.reactor.seconds() - worker.started < RESPAWN_DELAY
            self._respawns.append(self.reactor.callLater(RESPAWN_DELAY if quick else 0, self._respawn))
        for request in pending:
            self._retry(request)
