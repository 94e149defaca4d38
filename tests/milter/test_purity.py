"""The pure milter and policy modules import the standard library and pure modules of ours only."""

from __future__ import annotations

import ast
import os
import sys

from twisted.trial.unittest import SynchronousTestCase

import mailserver

ROOT = os.path.dirname(mailserver.__file__)
PURE = {
    "milter/codec.py": set(),
    "milter/settings.py": set(),
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
            with open(os.path.join(ROOT, filename), encoding="utf-8") as f:
                tree = ast.parse(f.read())
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    modules = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules = [node.module]
                else:
                    continue
                for module in modules:
                    top = module.split(".")[0]
                    ok = (top in sys.stdlib_module_names and top != "twisted") or module in ours
                    self.assertTrue(ok, f"{filename} imports {module}")
