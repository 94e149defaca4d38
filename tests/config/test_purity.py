"""The config package is pure: it imports the standard library and mailserver only."""

from __future__ import annotations

import ast
import os
import sys

from twisted.trial.unittest import SynchronousTestCase

import mailserver.config

PACKAGE = os.path.dirname(mailserver.config.__file__)


class PurityTests(SynchronousTestCase):
    def test_stdlib_only(self) -> None:
        checked = []
        for filename in sorted(os.listdir(PACKAGE)):
            if not filename.endswith(".py"):
                continue
            with open(os.path.join(PACKAGE, filename), encoding="utf-8") as f:
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
                    allowed = top in sys.stdlib_module_names or top == "mailserver"
                    self.assertTrue(allowed, f"{filename} imports {module}")
                    self.assertNotIn(module, ("mailserver.service", "mailserver.tap"))
            checked.append(filename)
        self.assertIn("parameters.py", checked)
