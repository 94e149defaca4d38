"""DKIM/ARC verification in worker processes (mailserver.mailauth.verify_process)."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks, succeed
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase

from mailserver.mailauth.dkim_sign import sign_with
from mailserver.mailauth.dkim_verify import ARCResult, DKIMResult, VerificationResults, _Answers, verify_blocking
from mailserver.mailauth.headers import split_headers
from mailserver.mailauth import verify_process
from mailserver.mailauth.verify_process import VerifyProcesses
from mailserver.mailauth import verify_worker
from mailserver.mailauth.verify_worker import HEADER, batches, decode_results, encode_results, frame, serve
from tests.harness import RunningServer
from tests.mailauth.support import MESSAGE, keys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def signed_request() -> tuple:
    """verify_blocking's arguments for a message with a good RSA and Ed25519 signature."""
    rsa, ed = keys()
    message = sign_with(MESSAGE, [rsa, ed]) + MESSAGE
    answers = _Answers({rsa.dns_name: rsa.txt_value.encode(), ed.dns_name: ed.txt_value.encode()}, set())
    return message, answers, split_headers(message)[0], None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as handle:  # a zombie is gone too
        return handle.read().rsplit(")", 1)[1].split()[0] != "Z"


@inlineCallbacks
def until(condition, seconds: float = 10.0):
    """Wait (on the reactor) until C{condition()} is true; fail after C{seconds}."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        yield deferLater(reactor, 0.02, lambda: None)


class EncodingTests(SynchronousTestCase):
    def test_results_round_trip(self) -> None:
        results = VerificationResults([DKIMResult("pass", "example.com", "mail", "rsa-sha256", "abc", ""),
                                       DKIMResult("fail", reason="signature did not verify")],
                                      ARCResult("fail", 2, "broken"))
        self.assertEqual(decode_results(encode_results(results)), results)


def request_frame(number: int, request: tuple) -> bytes:
    message, answers, fields, signed = request
    return frame((number, (message, (answers.records, answers.failed), fields, signed)))


class _Chunks:
    """A raw stream giving at most C{size} bytes per read, recording its reads."""

    def __init__(self, data: bytes, size: int) -> None:
        self.data, self.size, self.reads = data, size, 0

    def read(self, wanted: int) -> bytes:
        self.reads += 1
        chunk, self.data = self.data[:min(wanted, self.size)], self.data[min(wanted, self.size):]
        return chunk


class _Writes:
    """An answer stream recording each write."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data) -> int:
        self.writes.append(bytes(data))
        return len(data)


def answers_of(data: bytes) -> list[tuple]:
    """The (number, ok, value) of each answer frame in C{data}."""
    found, offset = [], 0
    while offset < len(data):
        end = offset + HEADER.size + HEADER.unpack_from(data, offset)[0]
        found.append(pickle.loads(data[offset + HEADER.size:end]))
        offset = end
    return found


class BatchTests(SynchronousTestCase):
    """The worker reads the requests available together and writes each answer as soon as it is ready."""

    def test_requests_read_together_answered_one_by_one(self) -> None:
        request = signed_request()
        tampered = (request[0] + b"a line added\r\n",) + request[1:]
        data = b"".join(request_frame(n, r) for n, r in ((1, request), (2, tampered), (3, request)))
        out = _Writes()
        stream = _Chunks(data, len(data))
        serve(stream, out)
        self.assertEqual(stream.reads, 2)  # the three requests, then the end of input
        # An answer is never held back for the work of the others.
        self.assertEqual([[number for number, _, _ in answers_of(w)] for w in out.writes], [[1], [2], [3]])
        answers = [answers_of(w)[0] for w in out.writes]
        self.assertEqual([ok for _, ok, _ in answers], [True, True, True])
        self.assertEqual([decode_results(value) for _, _, value in answers],
                         [verify_blocking(*request), verify_blocking(*tampered), verify_blocking(*request)])
        self.assertEqual([[r.result for r in decode_results(value).dkim] for _, _, value in answers],
                         [["pass", "pass"], ["fail", "fail"], ["pass", "pass"]])

    def test_requests_apart_answered_apart(self) -> None:
        frames = [request_frame(n, signed_request()) for n in (1, 2)]
        out = _Writes()
        stream = _Chunks(b"".join(frames), len(frames[0]))  # one request per read
        serve(stream, out)
        self.assertEqual([[number for number, _, _ in answers_of(w)] for w in out.writes], [[1], [2]])

    def test_frames_cut_anywhere_are_put_together(self) -> None:
        frames = [frame((n, b"x" * n * 50)) for n in range(1, 6)]
        data = b"".join(frames)
        expected = [f[HEADER.size:] for f in frames]
        for size in (1, 3, 7, 64, len(data)):
            got = [body for batch in batches(_Chunks(data, size)) for body in batch]
            self.assertEqual(got, expected, size)
        # A partial frame at end of input is dropped.
        self.assertEqual([body for batch in batches(_Chunks(data[:-1], 64)) for body in batch], expected[:-1])

    def test_frame_bigger_than_a_read_is_read_whole(self) -> None:
        self.patch(verify_worker, "READ_SIZE", 16)
        big = frame((1, b"y" * 10_000))
        stream = _Chunks(big + frame((2, b"z")), 10_000)
        got = list(batches(stream))
        self.assertEqual(got, [[big[HEADER.size:]], [frame((2, b"z"))[HEADER.size:]]])
        self.assertLess(stream.reads, 10)  # not 10 KB in reads of 16 bytes


class AnswerReadingTests(SynchronousTestCase):
    def test_batched_answer_fires_each_request_in_order(self) -> None:
        """Several answers in one read (and one cut between reads) each fire their own request."""
        clock = Clock()
        worker = verify_process._Worker(VerifyProcesses(clock, 1, None, timeout=5.0), requests=None)
        worker.alive = True
        fired: list[tuple[int, object]] = []
        for number in (1, 2, 3):
            deferred: Deferred = Deferred()
            deferred.addCallback(lambda result, number=number: fired.append((number, result)))
            worker.pending[number] = verify_process._Request(None, decode_results, deferred)
        worker.watch()
        results = [VerificationResults(arc=ARCResult("none", 0, str(number))) for number in (1, 2, 3)]
        data = b"".join(frame((number, True, encode_results(r))) for number, r in zip((1, 2, 3), results))
        worker.outReceived(data[:-5])
        self.assertEqual([number for number, _ in fired], [1, 2])
        self.assertEqual([call.getTime() for call in clock.getDelayedCalls()], [5.0])  # request 3 is timed
        worker.outReceived(data[-5:])
        self.assertEqual(fired, list(zip((1, 2, 3), results)))
        self.assertEqual(clock.getDelayedCalls(), [])


class _Reactor(Clock):
    """A clock that can watch file descriptors (never writable: the pipe has room in these tests)."""

    def addWriter(self, writer: object) -> None:
        raise AssertionError("the pipe should have room")

    def removeWriter(self, writer: object) -> None:
        pass


class RequestWriteTests(SynchronousTestCase):
    """Each request is written to the worker at once, not at the end of the reactor turn."""

    def pool(self) -> tuple[VerifyProcesses, Clock, int]:
        clock = _Reactor()
        pool = VerifyProcesses(clock, 1, lambda *a: succeed("threads"))
        read, write = os.pipe()
        os.set_blocking(read, False)
        self.addCleanup(os.close, read)
        worker = verify_process._Worker(pool, verify_process._RequestPipe(clock, write))
        self.addCleanup(worker.requests.close)
        worker.alive, pool.running = True, True
        pool.workers.append(worker)
        return pool, clock, read

    def frames(self, data: bytes) -> list[bytes]:
        return [body for batch in batches(_Chunks(data, len(data))) for body in batch]

    def test_each_request_written_at_once(self) -> None:
        pool, clock, read = self.pool()
        writes: list[int] = []
        real_write = os.write
        self.patch(verify_process.os, "write", lambda fd, data: writes.append(len(data)) or real_write(fd, data))
        request = signed_request()
        waiting = []
        for number in (1, 2, 3):  # each in the pipe before the next is made (the worker may start on it)
            waiting.append(pool.verify(*request))
            self.assertEqual(self.frames(os.read(read, 1 << 20)), [request_frame(number, request)[HEADER.size:]])
        self.assertEqual(len(writes), 3)
        self.assertEqual([call.func for call in clock.getDelayedCalls()], [pool._timed_out])  # nothing left for later
        self.assertEqual(len(pool.workers[0].pending), 3)
        for deferred in waiting:
            self.assertNoResult(deferred)

    def narrow_pipe(self, room: int) -> tuple[verify_process._RequestPipe, int, list[object]]:
        """A worker's request pipe taking at most C{room} bytes per write, its read end, the writers watched."""
        pool, clock, read = self.pool()
        watched: list[object] = []
        self.patch(clock, "addWriter", watched.append)
        real_write = os.write
        self.patch(verify_process.os, "write", lambda fd, data: real_write(fd, data[:room]))
        return pool.workers[0].requests, read, watched

    def test_full_pipe_keeps_the_order(self) -> None:
        # What the pipe has no room for is written when it is writable, before anything sent later.
        requests, read, watched = self.narrow_pipe(3)
        requests.write(b"first")
        requests.write(b"second")
        self.assertEqual((os.read(read, 1 << 20), watched), (b"fir", [requests]))
        for _ in range(3):  # "sts", "eco", "nd"
            requests.doWrite()
        self.assertEqual(os.read(read, 1 << 20), b"stsecond")
        self.assertEqual(requests.pending, b"")

    def test_stop_writes_what_the_pipe_had_no_room_for_first(self) -> None:
        requests, read, _ = self.narrow_pipe(4)
        requests.write(b"request")
        requests.close_when_written()  # not yet: "est" is still to go
        self.assertEqual(os.read(read, 1 << 20), b"requ")
        requests.doWrite()
        self.assertEqual(os.read(read, 1 << 20), b"est")
        self.assertEqual(os.read(read, 1), b"")  # then end of input

    def test_dead_worker_drops_what_was_not_written(self) -> None:
        requests, read, _ = self.narrow_pipe(4)
        requests.write(b"request")
        requests.close()  # the worker ended: its requests go to the fallback (processEnded)
        self.assertEqual(os.read(read, 1 << 20), b"requ")
        self.assertEqual(os.read(read, 1), b"")
        requests.write(b"more")  # after the end: nothing, no error
        self.assertEqual(requests.pending, b"")


class WorkerPoolTests(TestCase):
    def pool(self, count: int = 1, **options) -> VerifyProcesses:
        calls = self.fallback_calls = []

        def in_thread(*arguments):
            calls.append(arguments)
            return succeed(VerificationResults(arc=ARCResult("none", 0, "fallback")))

        pool = VerifyProcesses(reactor, count, in_thread, **options)
        pool.start()
        self.addCleanup(pool.stop)
        return pool

    @inlineCallbacks
    def test_worker_verifies_a_signed_message(self):
        pool = self.pool(2)
        request = signed_request()
        results = yield pool.verify(*request)
        self.assertEqual([r.result for r in results.dkim], ["pass", "pass"])
        self.assertEqual(results, verify_blocking(*request))
        self.assertEqual(self.fallback_calls, [])
        # Many at once, over both workers, each answered with its own result.
        tampered = request[0] + b"a line added\r\n"
        many = yield gatherResults([pool.verify(request[0] if i % 2 else tampered, *request[1:]) for i in range(20)])
        self.assertEqual([[r.result for r in res.dkim] for res in many],
                         [["pass", "pass"] if i % 2 else ["fail", "fail"] for i in range(20)])

    @inlineCallbacks
    def test_regression_dead_worker_is_replaced_and_its_message_verified_in_a_thread(self):
        # A "worker" that dies on its first request: the request goes to the thread path, a new worker starts.
        argv = [sys.executable, "-c", "import sys; sys.stdin.buffer.read(1); sys.exit(3)"]
        pool = self.pool(1, argv=argv)
        first = pool.workers[0]
        results = yield pool.verify(*signed_request())
        self.assertEqual(results.arc.reason, "fallback")
        self.assertEqual(len(self.fallback_calls), 1)
        yield until(lambda: pool.replaced == 1 and len(pool.workers) == 1 and pool.workers[0] is not first)
        self.flushLoggedErrors()

    @inlineCallbacks
    def test_stuck_worker_times_out_into_the_thread_path_and_is_killed(self):
        argv = [sys.executable, "-c", "import time; time.sleep(60)"]
        pool = self.pool(1, argv=argv, timeout=0.3)
        pid = pool.workers[0].transport.pid
        results = yield pool.verify(*signed_request())
        self.assertEqual(results.arc.reason, "fallback")
        yield until(lambda: not alive(pid))

    @inlineCallbacks
    def test_regression_busy_worker_is_not_killed_for_its_queue(self):
        # The deadline is for the request a worker is on, not for the time a request waited in its queue:
        # a slow but healthy worker given ten requests at once answers all ten.
        code = ("import sys, time; sys.path[0] = %r\n"
                "from mailserver.mailauth import dkim_verify, verify_worker\n"
                "real = dkim_verify.verify_blocking\n"
                "def slow(*a):\n    time.sleep(0.25)\n    return real(*a)\n"
                "dkim_verify.verify_blocking = slow\n"
                "verify_worker.main()\n" % ROOT)
        pool = self.pool(1, argv=[sys.executable, "-c", code], timeout=1.5)
        yield pool.verify(*signed_request())  # started (imports done; they count against the deadline too)
        yield until(lambda: pool.workers and pool.workers[0].alive)
        first, replaced = pool.workers[0], pool.replaced  # a first worker slow to import may have been replaced
        self.fallback_calls.clear()
        many = yield gatherResults([pool.verify(*signed_request()) for _ in range(12)])  # 3 s of work queued
        self.assertEqual([[r.result for r in res.dkim] for res in many], [["pass", "pass"]] * 12)
        self.assertEqual((self.fallback_calls, pool.replaced, first.alive), ([], replaced, True))

    @inlineCallbacks
    def test_regression_queue_full_goes_to_the_thread_path(self):
        pool = self.pool(1)
        self.patch(verify_process, "MAX_PENDING", 2)
        requests = [pool.verify(*signed_request()) for _ in range(3)]
        results = yield gatherResults(requests)
        self.assertEqual([r.arc.reason for r in results][2], "fallback")
        self.assertEqual(len(self.fallback_calls), 1)

    @inlineCallbacks
    def test_regression_requests_sent_before_stop_are_answered(self):
        # A request still partly in the pipe when stop() is called (2 MB: more than a pipe holds) is answered by
        # the worker; one made after stop() goes to the thread path.  Neither is left waiting.
        pool = self.pool(1)
        yield until(lambda: pool.workers[0].alive)
        big, answers, _, _ = signed_request()
        big = big + b"x" * 2_000_000 + b"\r\n"
        sent = pool.verify(big, answers, split_headers(big)[0], None)
        stopped = pool.stop()
        after = pool.verify(*signed_request())
        self.assertEqual((yield after).arc.reason, "fallback")
        results = yield sent
        self.assertNotEqual(results.arc.reason, "fallback")
        self.assertEqual(len(self.fallback_calls), 1)
        yield stopped

    @inlineCallbacks
    def test_regression_worker_does_not_import_from_the_current_directory(self):
        # python -m / -c put the current directory first on sys.path: a dkim.py there must not be imported.
        here = os.path.abspath(self.mktemp())
        os.makedirs(here)
        with open(os.path.join(here, "dkim.py"), "w") as handle:
            handle.write("raise SystemExit('imported from the current directory')\n")
        self.addCleanup(os.chdir, os.getcwd())
        os.chdir(here)
        pool = self.pool(1)
        results = yield pool.verify(*signed_request())
        self.assertEqual([r.result for r in results.dkim], ["pass", "pass"])
        self.assertEqual(self.fallback_calls, [])

    @inlineCallbacks
    def test_no_worker_means_the_thread_path(self):
        pool = VerifyProcesses(reactor, 1, lambda *a: succeed("threads"))  # never started
        self.assertEqual((yield pool.verify(*signed_request())), "threads")

    @inlineCallbacks
    def test_stop_ends_every_worker(self):
        pool = self.pool(2)
        yield until(lambda: all(w.alive for w in pool.workers))
        pids = [w.transport.pid for w in pool.workers]
        yield pool.stop()
        self.assertFalse(any(alive(pid) for pid in pids))
        self.assertEqual(pool.replaced, 0)

    def test_regression_workers_do_not_outlive_a_killed_server(self):
        # The server is killed (no stopService): its workers see the end of their input and exit.
        code = ("import sys; sys.path.insert(0, %r)\n"
                "from twisted.internet import reactor\n"
                "from mailserver.mailauth.verify_process import VerifyProcesses\n"
                "pool = VerifyProcesses(reactor, 2, None)\n"
                "reactor.callWhenRunning(pool.start)\n"
                "reactor.callLater(0.5, lambda: print(*[w.transport.pid for w in pool.workers], flush=True))\n"
                "reactor.run()\n" % ROOT)
        server = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
        try:
            pids = [int(pid) for pid in server.stdout.readline().split()]
            self.assertEqual(len(pids), 2)
            self.assertTrue(all(alive(pid) for pid in pids))
        finally:
            server.send_signal(signal.SIGKILL)
            server.wait()
            server.stdout.close()
        deadline = time.monotonic() + 10
        while any(os.path.exists(f"/proc/{pid}") for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.05)  # orphans are reaped by init once they exit
        self.assertFalse(any(os.path.exists(f"/proc/{pid}") for pid in pids))


class ServiceTests(TestCase):
    @inlineCallbacks
    def test_started_and_stopped_with_the_server(self):
        server = RunningServer(self, "mail_authentication_verify_processes = 2\n")
        processes = server.service.server.authenticator.dkim.processes
        self.assertIsNotNone(processes)
        yield server.start()
        yield until(lambda: len(processes.workers) == 2 and all(w.alive for w in processes.workers))
        pids = [w.transport.pid for w in processes.workers]
        yield server.stop()
        self.assertFalse(any(alive(pid) for pid in pids))

    def test_regression_mailauth_pool_stops_after_the_workers(self):
        # The workers' fallback is the mailauth pool: requests they hand back at their end must still run.
        from mailserver.service import _PoolService

        events = []
        ended: Deferred = Deferred()

        class Pool:
            def start(self):
                events.append("pool started")

            def stop(self):
                events.append("pool stopped")

        class Processes:
            def start(self):
                events.append("processes started")

            def stop(self):
                events.append("processes stopping")
                return ended

        service = _PoolService(Pool(), workers=Processes())
        service.startService()
        stopping = service.stopService()
        self.assertEqual(events, ["pool started", "processes started", "processes stopping"])
        ended.callback(None)
        self.assertEqual(events[-1], "pool stopped")
        return stopping

    def test_zero_is_threads(self):
        server = RunningServer(self, "mail_authentication_verify_processes = 0\n")
        self.assertIsNone(server.service.server.authenticator.dkim.processes)
