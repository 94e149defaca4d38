"""
A real OpenDKIM (a libmilter milter, the reference implementation of the
protocol) for tests: signing and verifying for example.com with a key made
by opendkim-genkey, on a free loopback port, configuration in a temporary
directory.  C{OPENDKIM} is None where it is not installed: tests skip then.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from typing import Any

from twisted.internet import defer

from tests.milter.daemon import Daemon, Shared

OPENDKIM = shutil.which("opendkim") or (os.path.exists("/usr/sbin/opendkim") and "/usr/sbin/opendkim") or None
GENKEY = shutil.which("opendkim-genkey") or (
    os.path.exists("/usr/sbin/opendkim-genkey") and "/usr/sbin/opendkim-genkey"
) or None
DOMAIN, SELECTOR = "example.com", "test"

_CONFIG = """\
Mode sv
Domain {domain}
Selector {selector}
KeyFile {root}/{selector}.private
Socket inet:{port}@127.0.0.1
Syslog no
Background no
PidFile {root}/opendkim.pid
Canonicalization relaxed/relaxed
RequireSafeKeys false
InternalHosts 127.0.0.1
"""


class OpenDKIM(Daemon):
    """Signs mail from 127.0.0.1 for example.com; C{public_key} is the DNS TXT value."""

    name = "opendkim"

    def __init__(self, root: str | None = None) -> None:
        super().__init__(root)
        assert GENKEY is not None
        subprocess.run(
            [GENKEY, "-D", self.root, "-d", DOMAIN, "-s", SELECTOR, "-b", "1024"], check=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60,
        )  # fmt: skip
        with open(os.path.join(self.root, f"{SELECTOR}.txt")) as f:
            self.public_key = "".join(re.findall(r'"([^"]*)"', f.read()))
        with open(os.path.join(self.root, "opendkim.conf"), "w") as f:
            f.write(_CONFIG.format(domain=DOMAIN, selector=SELECTOR, root=self.root, port=self.port))

    def argv(self) -> list[str]:
        assert OPENDKIM is not None
        return [OPENDKIM, "-f", "-x", os.path.join(self.root, "opendkim.conf")]


_shared = Shared(OpenDKIM)


def shared(reactor: Any) -> defer.Deferred[OpenDKIM]:
    """The process-wide OpenDKIM, started on first use and stopped at exit."""
    return _shared.get(reactor)
