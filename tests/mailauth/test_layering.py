"""mailauth's parsers are pure (stdlib and our pure modules only); nothing in it imports a protocol or the composition root."""

from __future__ import annotations

import os
import sys

from twisted.trial.unittest import SynchronousTestCase

import mailserver.mailauth
from tests.queue.test_layering import imports

PACKAGE = os.path.dirname(mailserver.mailauth.__file__)
PURE = ("spf_record.py", "authresults.py", "headers.py")
PURE_OURS = {"mailserver.mailauth.headers"}


def module_imports(filename: str) -> list[str]:
    return imports(filename, PACKAGE)


class LayeringTests(SynchronousTestCase):
    def test_pure_modules(self) -> None:
        for filename in PURE:
            for module in module_imports(filename):
                top = module.split(".")[0]
                ok = (top in sys.stdlib_module_names and top != "twisted") or module in PURE_OURS
                self.assertTrue(ok, f"{filename} imports {module}")

    def test_no_protocol_or_composition_root(self) -> None:
        for filename in sorted(os.listdir(PACKAGE)):
            if filename.endswith(".py"):
                for module in module_imports(filename):
                    self.assertFalse(
                        module.startswith(("mailserver.service", "mailserver.tap", "mailserver.smtp",
                                           "mailserver.delivery", "mailserver.imap", "mailserver.pop3",
                                           "mailserver.queue", "twisted.mail", "dns.", "dns")),
                        f"{filename} imports {module}",
                    )
