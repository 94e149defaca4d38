"""
A milter daemon run by the tests as a child process: its own root directory,
a free loopback port, readiness by polling the port (bounded), and a stop
that ends its whole process group (it may fork workers) and removes the root.
Subclasses give the command line (L{Daemon.argv}) and the log file name.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from typing import Any

from twisted.internet import defer, task
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import ConnectError
from twisted.internet.protocol import Factory, Protocol

START_TIMEOUT = 90.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Daemon:
    name = "daemon"
    log_file = "stdout.log"

    def __init__(self, root: str | None = None) -> None:
        self.root = root or tempfile.mkdtemp(prefix=f"{self.name}-test-")
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """The milter address (smtpd_milters syntax)."""
        return f"inet:127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
        raise NotImplementedError

    def spawn(self) -> None:
        with open(os.path.join(self.root, "stdout.log"), "wb") as out:
            self.process = subprocess.Popen(
                self.argv(), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip

    def log(self) -> str:
        try:
            with open(os.path.join(self.root, self.log_file), errors="replace") as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    def _exited(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log()}")

    async def ready(self, reactor: Any, timeout: float = START_TIMEOUT) -> "Daemon":
        """Spawn and wait until the milter port accepts connections (polling, bounded)."""
        self.spawn()
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.port, timeout=1)
        for _ in range(int(timeout / 0.2)):
            self._exited()
            try:
                protocol = await endpoint.connect(Factory.forProtocol(Protocol))
            except ConnectError:
                await task.deferLater(reactor, 0.2, lambda: None)
                continue
            protocol.transport.abortConnection()
            await task.deferLater(reactor, 0, lambda: None)
            return self
        self.stop()
        raise RuntimeError(f"{self.name} did not listen on {self.port} within {timeout}s:\n{self.log()}")

    def wait_ready(self, timeout: float = START_TIMEOUT) -> "Daemon":
        """Blocking variant of L{ready} for scripts (bench/)."""
        self.spawn()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._exited()
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{self.name} did not listen within {timeout}s:\n{self.log()}")

    def stop(self) -> None:
        """Stop the daemon's process group (the main process and its workers); remove root."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.root, ignore_errors=True)


class Shared:
    """One daemon per test process, started on first use and stopped at exit."""

    def __init__(self, make: Any) -> None:
        self.make = make
        self.instance: Daemon | None = None
        self._starting = False
        self._waiters: list[Any] = []

    def get(self, reactor: Any) -> Any:
        """A Deferred firing with the running daemon (or failing if it cannot start)."""
        instance = self.instance
        if instance is not None and instance.process is not None and instance.process.poll() is None:
            return defer.succeed(instance)
        waiting: Any = defer.Deferred()
        self._waiters.append(waiting)
        if not self._starting:
            self._starting = True
            fresh = self.make()
            atexit.register(fresh.stop)

            def done(result: Any) -> None:
                self._starting = False
                if isinstance(result, Daemon):
                    self.instance = result
                waiters, self._waiters = self._waiters, []
                for waiter in waiters:
                    waiter.callback(result)  # a Failure errbacks each waiter

            defer.Deferred.fromCoroutine(fresh.ready(reactor)).addBoth(done)
        return waiting
