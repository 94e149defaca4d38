"""The pure milter and policy modules import the standard library and pure modules of ours only."""

from __future__ import annotations

import os
import sys

from twisted.trial.unittest import SynchronousTestCase

import mailserver
from tests.queue.test_layering import imports

ROOT = os.path.dirname(mailserver.__file__)
PURE = {
    "milter/codec.py": set(),
    "milter/settings.py": set(),
    "milter/macros.py": set(),
    "milter/actions.py": {"mailserver.milter", "mailserver.milter.codec"},
    "policy/dnsbl_sites.py": set(),
    "policy/logline.py": {"mailserver.errors"},
    "policy/rates.py": {"mailserver.errors"},
    "config/policy_values.py": {"mailserver.config.values", "mailserver.milter.settings",
                                "mailserver.policy.dnsbl_sites"},
}  # fmt: skip


class PurityTests(SynchronousTestCase):
    def test_pure_modules(self) -> None:
        for filename, ours in PURE.items():
            # imports() joins onto the queue package; an absolute path replaces that.
            for module in imports(os.path.join(ROOT, filename)):
                top = module.split(".")[0]
                ok = (top in sys.stdlib_module_names and top != "twisted") or module in ours
                self.assertTrue(ok, f"{filename} imports {module}")
