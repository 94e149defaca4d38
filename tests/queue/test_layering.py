"""The queue's pure modules import only the standard library (and our errors)."""

from __future__ import annotations

import ast
import os
import sys

from twisted.trial.unittest import SynchronousTestCase

import mailserver.queue

PACKAGE = os.path.dirname(mailserver.queue.__file__)
PURE = ("schedule.py", "bounce.py", "envelope.py", "nexthop.py", "submission.py")
ALLOWED_OURS = {"mailserver.errors", "mailserver.address", "mailserver.config.lines"}


def imports(filename: str, package: str = PACKAGE) -> list[str]:
    with open(os.path.join(package, filename), encoding="utf-8") as f:
        tree = ast.parse(f.read())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append(node.module)
    return found


class LayeringTests(SynchronousTestCase):
    def test_pure_modules(self) -> None:
        for filename in PURE:
            for module in imports(filename):
                top = module.split(".")[0]
                ok = (top in sys.stdlib_module_names and top != "twisted") or module in ALLOWED_OURS
                self.assertTrue(ok, f"{filename} imports {module}")

    def test_spool_imports_no_protocol_package(self) -> None:
        for module in imports("spool.py"):
            self.assertFalse(module.startswith("twisted.mail"), module)
            if module.startswith("mailserver."):
                self.assertIn(
                    module,
                    {"mailserver.errors", "mailserver.interfaces", "mailserver.address", "mailserver.durable",
                     "mailserver.queue.envelope", "mailserver.spooled"},
                )

    def test_queue_never_imports_the_composition_root_or_servers(self) -> None:
        for filename in sorted(os.listdir(PACKAGE)):
            if filename.endswith(".py"):
                for module in imports(filename):
                    self.assertFalse(
                        module.startswith(("mailserver.service", "mailserver.tap", "mailserver.smtp",
                                           "mailserver.delivery", "mailserver.imap", "mailserver.pop3")),
                        f"{filename} imports {module}",
                    )  # fmt: skip
