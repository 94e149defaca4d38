"""The import rules of the design card, enforced by walking every module's imports.

Each ``mailserver`` module belongs to one layer (longest matching prefix in
``LAYERS``).  A module may import the layers its layer lists (and its own
package); a *pure* module imports the standard library and other pure modules
only.  Function-level and ``TYPE_CHECKING`` imports count like any other.

Known violations are listed in ``ALLOWED`` with a reason each; the test fails on
any violation not listed there and on any entry that is no longer needed, so the
list only shrinks.  The same table is in ``docs/architecture.rst``.
"""

from __future__ import annotations

import ast
import os
import sys
from typing import Iterator

from twisted.trial.unittest import SynchronousTestCase

import mailserver

ROOT = os.path.dirname(mailserver.__file__)

# Layer of each module: longest matching dotted prefix wins.
LAYERS: dict[str, str] = {
    "mailserver.errors": "pure",
    "mailserver.address": "pure",
    "mailserver.header_block": "pure",
    "mailserver.envelope": "pure",  # the values the protocols hand the delivery pipeline
    "mailserver.config": "pure",
    "mailserver.tables": "pure",
    "mailserver.tables.loader": "support",
    "mailserver.tables.aliasdb": "support",
    "mailserver.milter.settings": "pure",
    "mailserver.milter.codec": "pure",
    "mailserver.milter.macros": "pure",
    "mailserver.milter.actions": "pure",
    "mailserver.milter.verdicts": "pure",  # verdict actions, reply texts, address family
    "mailserver.policy.dnsbl_sites": "pure",
    "mailserver.policy.logline": "pure",
    "mailserver.policy.rates": "pure",
    "mailserver.queue.schedule": "pure",
    "mailserver.queue.bounce": "pure",
    "mailserver.queue.envelope": "pure",
    "mailserver.queue.nexthop": "pure",
    "mailserver.queue.submission": "pure",
    "mailserver.mailauth.spf_record": "pure",
    "mailserver.mailauth.authresults": "pure",
    "mailserver.mailauth.headers": "pure",
    "mailserver.mailauth.memo": "pure",
    "mailserver.store.location": "pure",
    "mailserver.store.flags": "pure",  # Maildir info letters <-> IMAP flags, keyword table text
    "mailserver.store.folder_names": "pure",  # IMAP mailbox names <-> Maildir++ directory names
    "mailserver.store.records": "pure",  # the values a folder's read side hands out (IFolderReader)
    "mailserver.store.shared_refresh": "support",  # reactor-side sharing of thread trips; no disk access
    "mailserver.quota_rule": "pure",  # where a user's Maildir is: a path from config, no I/O
    "mailserver.interfaces": "interfaces",
    "mailserver.durable": "support",
    "mailserver.spooled": "support",
    "mailserver.netwrite": "support",
    "mailserver.ratelog": "support",
    "mailserver.periodic": "support",
    "mailserver.limits": "support",
    "mailserver.tls": "support",
    "mailserver.locate": "support",
    "mailserver.logformat": "support",
    "mailserver.stale_socket": "support",
    "mailserver.store": "store",
    "mailserver.queue": "outbound",
    "mailserver.queue.spool": "store",
    "mailserver.auth": "auth",
    "mailserver.mailauth": "library",
    "mailserver.milter": "library",
    "mailserver.policy": "library",
    "mailserver.sieve": "library",
    "mailserver.metrics": "library",
    "mailserver.delivery": "delivery",
    "mailserver.smtp": "protocol",
    "mailserver.imap": "protocol",
    "mailserver.pop3": "protocol",
    "mailserver.managesieve": "protocol",
    "mailserver.service": "root",
    "mailserver.tap": "root",
    "mailserver.install": "root",
    "mailserver.cli": "root",
    "mailserver.spam_defence": "root",  # composes the spam stages for service.py
    "mailserver": "root",  # the package itself only: a new module must be given a layer here
}

# What each layer may import (besides its own package); "pure" is stdlib-only.
MAY_IMPORT: dict[str, set[str]] = {
    "pure": {"pure"},
    "interfaces": {"pure"},
    "support": {"pure", "interfaces", "support"},
    "store": {"pure", "interfaces", "support"},
    "auth": {"pure", "interfaces", "support"},
    "library": {"pure", "interfaces", "support"},
    "outbound": {"pure", "interfaces", "support", "store"},
    "delivery": {"pure", "interfaces", "support", "library"},
    "protocol": {"pure", "interfaces", "support", "auth"},
    "root": {"pure", "interfaces", "support", "store", "outbound", "auth", "library", "delivery", "protocol", "root"},
}

# twisted.mail is for protocols, delivery (IMessageDelivery/IMessage), the outbound
# SMTP client and auth (its SASL credentials live in twisted.mail) only.
TWISTED_MAIL_LAYERS = {"protocol", "delivery", "outbound", "auth", "root", "interfaces"}


# (importing module, imported module): reason.  Shrink this list; never grow it lightly.
# Empty since issue 14: every seam goes through interfaces.py, wired by service.py.
ALLOWED: dict[tuple[str, str], str] = {}


def module_name(path: str) -> str:
    rel = os.path.relpath(path, os.path.dirname(ROOT))[:-3].replace(os.sep, ".")
    return rel[: -len(".__init__")] if rel.endswith(".__init__") else rel


def modules() -> Iterator[tuple[str, str]]:
    for directory, _dirs, files in sorted(os.walk(ROOT)):
        for filename in sorted(files):
            if filename.endswith(".py"):
                path = os.path.join(directory, filename)
                yield module_name(path), path


def imports(name: str, path: str) -> set[str]:
    """Every module ``path`` imports, at any depth (function-level too), made absolute."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    package = name.split(".") if path.endswith("__init__.py") else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names = {f"{module}.{alias.name}" for alias in node.names}
            # "from mailserver.store import flags" imports mailserver.store.flags, not the package.
            submodules = {n for n in names if n.startswith("mailserver") and _is_module(n)}
            found.update(submodules)
            if submodules != names:
                found.add(module)
    return found


def _is_module(module: str) -> bool:
    path = os.path.join(os.path.dirname(ROOT), *module.split("."))
    return os.path.exists(path + ".py") or os.path.isdir(path)


def layer_of(module: str) -> str:
    parts = module.split(".")
    for n in range(len(parts), 1, -1):
        if ".".join(parts[:n]) in LAYERS:
            return LAYERS[".".join(parts[:n])]
    if module == "mailserver":
        return LAYERS[module]
    raise KeyError(f"{module} has no layer: add it to LAYERS in tests/test_layering.py")


def package_of(module: str) -> str:
    """The unit a module belongs to: ``mailserver.x`` for a subpackage's modules, else itself."""
    parts = module.split(".")
    if len(parts) > 2 or os.path.isdir(os.path.join(ROOT, *parts[1:2])):
        return ".".join(parts[:2])
    return module


def violation(importer: str, imported: str) -> str | None:
    """Why ``importer`` may not import ``imported``, or None."""
    layer = layer_of(importer)
    top = imported.split(".")[0]
    if top == "mailserver":
        if imported == "mailserver" or package_of(imported) == package_of(importer) and layer != "pure":
            return None
        target = layer_of(imported)
        if layer == "pure":
            return None if target == "pure" else f"pure module imports {target} module"
        if target not in MAY_IMPORT[layer]:
            return f"{layer} layer imports {target} layer"
        return None
    if layer == "pure":
        return None if top in sys.stdlib_module_names else "pure module imports a non-stdlib module"
    if imported.startswith("twisted.mail") and layer not in TWISTED_MAIL_LAYERS:
        return f"{layer} layer imports twisted.mail"
    return None


def violations() -> dict[tuple[str, str], str]:
    found = {}
    for name, path in modules():
        for imported in sorted(imports(name, path)):
            why = violation(name, imported)
            if why is not None:
                found[(name, imported)] = why
    return found


class LayeringTests(SynchronousTestCase):
    def test_every_module_has_a_layer(self) -> None:
        unplaced = []
        for name, _path in modules():
            try:
                self.assertIn(layer_of(name), MAY_IMPORT, name)
            except KeyError:
                unplaced.append(name)
        self.assertEqual(unplaced, [], "modules without a layer: add them to LAYERS")

    def test_no_new_violation(self) -> None:
        new = {edge: why for edge, why in violations().items() if edge not in ALLOWED}
        self.assertEqual(
            new, {}, "imports that break the layering of docs/architecture.rst (fix them, do not allowlist lightly)"
        )

    def test_allowlist_is_current(self) -> None:
        found = violations()
        stale = sorted(edge for edge in ALLOWED if edge not in found)
        self.assertEqual(stale, [], "ALLOWED entries no longer needed: remove them")

    def test_dns_only_through_twisted_names(self) -> None:
        """No blocking resolver library (dnspython): DNS goes through twisted.names."""
        for name, path in modules():
            for imported in imports(name, path):
                self.assertNotEqual(imported.split(".")[0], "dns", f"{name} imports {imported}")

    def test_regression_function_level_imports_are_seen(self) -> None:
        """Imports inside functions and TYPE_CHECKING blocks count, relative ones made absolute."""
        path = os.path.join(self.mktemp() + ".py")
        with open(path, "w", encoding="utf-8") as f:
            f.write(
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n    from mailserver.imap.server import IMAPServer\n"
                "def later():\n    from mailserver.smtp import server\n    from . import wire\n"
            )
        seen = imports("mailserver.pop3.example", path)
        self.assertTrue({"mailserver.imap.server", "mailserver.smtp.server", "mailserver.pop3.wire"} <= seen, seen)
        self.assertNotIn("mailserver.smtp", seen)  # "from package import submodule" names the submodule
        why = violation("mailserver.pop3.example", "mailserver.imap.server")
        self.assertEqual(why, "protocol layer imports protocol layer")
