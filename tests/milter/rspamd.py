"""
A real rspamd for tests and benchmarks: its proxy worker in milter mode with
self_scan on 127.0.0.1 (a free port), its own configuration in a temporary
directory, offline (DNS points at 127.0.0.1:1, a four-line TLD list, no
redis), started as a subprocess and stopped at the end.

Tests share one instance per process (L{shared}); it is stopped at exit.
C{RSPAMD} is None where rspamd is not installed: tests skip then.

Scores: the clean test message scores about 4 (no DNS), below
C{add_header = 6}; a body containing L{ADD_HEADER_MARK} adds the
MAILSERVER_TEST_SPAMMY symbol (score 8), so rspamd answers "add header"
(X-Spam: Yes); GTUBE is rejected with rspamd's text.
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
from twisted.internet.error import ConnectError
from twisted.internet.protocol import Protocol, Factory
from twisted.internet.endpoints import TCP4ClientEndpoint

RSPAMD = shutil.which("rspamd")
GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
ADD_HEADER_MARK = "mailserver-test-add-header-marker"
START_TIMEOUT = 90.0

_CONFIG = """\
.include "$CONFDIR/common.conf"
options {{
    # Before the include: of duplicate keys rspamd uses the first.
    pidfile = "$RUNDIR/rspamd.pid";
    url_tld = "{root}/tld.dat";
    hs_cache_dir = "{cache}";
    dns {{ nameserver = ["127.0.0.1:{dns_port}"]; timeout = 0.1s; retransmits = 1; }}
    .include "$CONFDIR/options.inc"
}}
logging {{ type = "file"; filename = "$LOGDIR/rspamd.log"; level = "warning"; }}
worker "rspamd_proxy" {{
    bind_socket = "127.0.0.1:{port}";
    milter = yes;
    timeout = 120s;
    upstream "local" {{ default = yes; self_scan = yes; }}
    count = {count};
    spam_header = "X-Spam";
}}
"""
_LOCAL = {
    "tld.dat": "com\nnet\norg\nexample\n",
    "local.d/actions.conf": "reject = 15;\nadd_header = 6;\ngreylist = 14;\n",
    "local.d/milter_headers.conf": (
        'use = ["x-spamd-result", "x-rspamd-server", "x-rspamd-queue-id", "authentication-results"];\n'
        "skip_local = false;\nskip_authenticated = false;\n"
    ),
    "rspamd.local.lua": (
        "rspamd_config.MAILSERVER_TEST_SPAMMY = {\n"
        "  callback = function(task)\n"
        "    local content = tostring(task:get_rawbody())\n"
        f"    return content:find('{ADD_HEADER_MARK}', 1, true) ~= nil\n"
        "  end,\n"
        "  score = 8.0,\n"
        "  description = 'mailserver test marker',\n"
        "}\n"
    ),
}


def _cache_dir() -> str:
    """Compiled hyperscan databases, kept between runs (a fresh start compiles for ~20 s)."""
    path = os.path.join(tempfile.gettempdir(), f"mailserver-rspamd-hs-{os.getuid()}")
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Rspamd:
    """One rspamd process with its configuration under C{root}."""

    def __init__(self, root: str | None = None, workers: int = 1, dns_port: int = 1) -> None:
        self.root = root or tempfile.mkdtemp(prefix="rspamd-test-")
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        for name, text in _LOCAL.items():
            path = os.path.join(self.root, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write(text)
        with open(os.path.join(self.root, "rspamd.conf"), "w") as f:
            f.write(_CONFIG.format(root=self.root, port=self.port, count=workers, cache=_cache_dir(),
                                 dns_port=dns_port))

    @property
    def address(self) -> str:
        return f"inet:127.0.0.1:{self.port}"

    def spawn(self) -> None:
        assert RSPAMD is not None
        variables = []
        for name in ("LOCAL_CONFDIR", "DBDIR", "RUNDIR", "LOGDIR"):
            variables += ["--var", f"{name}={self.root}"]
        with open(os.path.join(self.root, "stdout.log"), "wb") as out:
            self.process = subprocess.Popen(
                [RSPAMD, "-f", "-i", "-c", os.path.join(self.root, "rspamd.conf"), *variables],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip

    def log(self) -> str:
        try:
            with open(os.path.join(self.root, "rspamd.log"), errors="replace") as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    def _exited(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"rspamd exited with {self.process.returncode}:\n{self.log()}")

    async def ready(self, reactor: Any, timeout: float = START_TIMEOUT) -> "Rspamd":
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
        raise RuntimeError(f"rspamd did not listen on {self.port} within {timeout}s:\n{self.log()}")

    def wait_ready(self, timeout: float = START_TIMEOUT) -> "Rspamd":
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
        raise RuntimeError(f"rspamd did not listen within {timeout}s:\n{self.log()}")

    def stop(self) -> None:
        """Stop rspamd (its process group: the main process and its workers) and remove root."""
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


def nxdomain_server() -> None:
    """
    Run a loopback DNS server answering NXDOMAIN to everything, print its
    port, serve until killed (bench/milter.py runs it as a child process so
    rspamd's look-ups fail at once instead of timing out).
    """
    from twisted.internet import reactor

    from tests.dns import DNSTestServer

    server = DNSTestServer({"invalid": {}})
    server.start()
    print(server.port, flush=True)
    reactor.run()  # type: ignore[attr-defined]


_shared: Rspamd | None = None
_starting: defer.Deferred[Rspamd] | None = None


def shared(reactor: Any) -> defer.Deferred[Rspamd]:
    """The process-wide rspamd, started on first use and stopped at exit."""
    global _shared, _starting
    if _shared is not None and _shared.process is not None and _shared.process.poll() is None:
        return defer.succeed(_shared)
    if _starting is None:
        instance = Rspamd()
        atexit.register(instance.stop)

        def started(result: Rspamd) -> Rspamd:
            global _shared, _starting
            _shared, _starting = result, None
            return result

        def failed(failure: Any) -> Any:
            global _starting
            _starting = None
            return failure

        _starting = defer.Deferred.fromCoroutine(instance.ready(reactor))
        _starting.addCallbacks(started, failed)
    waiting: defer.Deferred[Rspamd] = defer.Deferred()
    _starting.addBoth(lambda result: (waiting.callback(result), result)[1])
    return waiting
