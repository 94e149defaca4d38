"""C{mailserver check} warns when mail to postmaster or root would be refused."""

from __future__ import annotations

import os

from twisted.trial.unittest import TestCase

from tests.cli.test_main import run
from tests.harness import write_table, write_config, write_users


class PostmasterCheckTests(TestCase):
    def check(self, aliases: str, users: dict[str, str] | None = None) -> tuple[int, str, str]:
        path = write_table(self, aliases)
        config = write_config(self.mktemp(), extra=f"alias_maps = texthash:{path}\n")
        write_users(os.path.dirname(config), users or {})
        status, out, err = run("-c", config, "check")
        return status, "".join(line for line in out.splitlines(True) if "would be refused" in line), err

    def test_regression_postmaster_aliased_to_missing_user_warns(self) -> None:
        """The old sample: postmaster -> root -> harry, and harry did not exist."""
        status, out, _ = self.check("postmaster: root\nroot: harry\n")
        self.assertEqual(status, 0)  # a warning, not an error
        [line] = [line for line in out.splitlines() if "postmaster" in line]
        self.assertIn(":2: warning: postmaster: the alias root leads to <harry@mx.example.com>", line)

    def test_existing_user_is_fine(self) -> None:
        _, out, _ = self.check("postmaster: root\nroot: harry\n", {"harry": "pw"})
        self.assertEqual(out, "")

    def test_postmaster_mailbox_and_remote_targets_are_fine(self) -> None:
        _, out, _ = self.check("root: postmaster\nabuse: ops@elsewhere.example\npostmaster: abuse\n")
        self.assertEqual(out, "")

    def test_alias_loops_end(self) -> None:
        _, out, _ = self.check("postmaster: a\na: b\nb: a, root\nroot: root\n")
        self.assertIn("<root@mx.example.com>", out)
        self.assertEqual(out.count("warning"), 1)

    def test_the_sample_aliases_warn_of_nothing(self) -> None:
        repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        with open(os.path.join(repo, "etc", "aliases")) as handle:
            _, out, _ = self.check(handle.read())
        self.assertEqual(out, "")


class StartupWarningTests(TestCase):
    """C{mailserver check} reports what the daemon warns of at start, at the parameter's file:line."""

    def check(self, extra: str, passwd_mode: int = 0o600) -> tuple[str, str]:
        config = write_config(self.mktemp(), extra=extra)
        write_users(os.path.dirname(config), {"alice": "pw"})
        os.chmod(os.path.join(os.path.dirname(config), "passwd"), passwd_mode)
        status, out, _ = run("-c", config, "check")
        self.assertEqual(status, 0)  # warnings, not errors
        return config, out

    def test_regression_hash_alias_map_without_db_warns(self) -> None:
        """Was 0 warnings while the daemon logged "aliases.db does not exist ... (run newaliases)"."""
        path = write_table(self, "postmaster: alice\n")
        config, out = self.check(f"alias_maps = hash:{path}\n")
        [line] = [line for line in out.splitlines() if ".db" in line]
        self.assertTrue(line.startswith(f"{config}:"), line)
        self.assertIn(f"warning: alias_maps: {path}.db does not exist", line)
        self.assertIn("run newaliases", line)
        self.assertRegex(line, r":\d+: warning")

    def test_compiled_db_and_texthash_are_quiet(self) -> None:
        from mailserver.tables.aliasdb import newaliases

        path = write_table(self, "postmaster: alice\n")
        self.assertEqual(newaliases(path), [])
        _, out = self.check(f"alias_maps = hash:{path}\n")
        self.assertNotIn(".db", out)
        _, out = self.check(f"alias_maps = texthash:{path}\n")
        self.assertNotIn(".db", out)

    def test_regression_world_readable_passwd_warns(self) -> None:
        """Was 0 warnings while the daemon logged "passwd file ... is accessible by all users"."""
        path = write_table(self, "postmaster: alice\n")
        config, out = self.check(f"alias_maps = texthash:{path}\n", passwd_mode=0o644)
        [line] = [line for line in out.splitlines() if "accessible by all users" in line]
        self.assertRegex(line, rf"^{config}:\d+: warning: passwd file .*passwd is accessible by all users;"
                               r" chmod 0600 or 0640$")
        _, out = self.check(f"alias_maps = texthash:{path}\n", passwd_mode=0o640)
        self.assertNotIn("accessible by all users", out)
