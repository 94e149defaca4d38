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

import os
import shutil
import tempfile
from typing import Any

from twisted.internet import defer

from tests.milter.daemon import Daemon, Shared

RSPAMD = shutil.which("rspamd")
GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
ADD_HEADER_MARK = "mailserver-test-add-header-marker"

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
    """Compiled hyperscan databases, kept between runs (shared by the test processes)."""
    path = os.path.join(tempfile.gettempdir(), f"mailserver-rspamd-hs-{os.getuid()}")
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


class Rspamd(Daemon):
    """One rspamd process with its configuration under C{root}."""

    name = "rspamd"
    log_file = "rspamd.log"

    def __init__(self, root: str | None = None, workers: int = 1, dns_port: int = 1) -> None:
        super().__init__(root)
        for name, text in _LOCAL.items():
            path = os.path.join(self.root, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write(text)
        with open(os.path.join(self.root, "rspamd.conf"), "w") as f:
            f.write(_CONFIG.format(root=self.root, port=self.port, count=workers, cache=_cache_dir(),
                                 dns_port=dns_port))

    def argv(self) -> list[str]:
        assert RSPAMD is not None
        variables = []
        for name in ("LOCAL_CONFDIR", "DBDIR", "RUNDIR", "LOGDIR"):
            variables += ["--var", f"{name}={self.root}"]
        return [RSPAMD, "-f", "-i", "-c", os.path.join(self.root, "rspamd.conf"), *variables]


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


_shared = Shared(Rspamd)


def shared(reactor: Any) -> defer.Deferred[Rspamd]:
    """The process-wide rspamd, started on first use and stopped at exit."""
    return _shared.get(reactor)
