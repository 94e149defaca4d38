"""Tests for mailserver.tables.aliasdb: compiling, loading and watching alias tables."""

from __future__ import annotations

import io
import json
import os
import pwd
import stat
from types import SimpleNamespace

from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from mailserver.cli import aliases as cli
from mailserver.config.values import TableRef
from mailserver.errors import ConfigError
from mailserver.interfaces import ILookupTable
from mailserver.tables import aliasdb
from mailserver.tables.aliasdb import (
    FORMAT,
    VERSION,
    AliasMaps,
    compile_aliases,
    compiled_path,
    load_compiled,
    newaliases,
    read_include_file,
    watch_alias_maps,
    watch_aliases,
    watch_virtual_maps,
)
from mailserver.tables.aliases import TargetKind


class Files:
    def __init__(self, case: SynchronousTestCase) -> None:
        self.directory = os.path.abspath(case.mktemp())
        os.makedirs(self.directory)

    def write(self, name: str, text: str, mtime_ns: int | None = None) -> str:
        path = os.path.join(self.directory, name)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
        if mtime_ns is not None:
            os.utime(path, ns=(mtime_ns, mtime_ns))
        return path


def age(path: str, seconds: int) -> None:
    """Move a file's mtime into the past."""
    st = os.stat(path)
    past = st.st_mtime_ns - seconds * 10**9
    os.utime(path, ns=(past, past))


def log_text(events: list[dict]) -> str:
    from twisted.logger import formatEvent

    return "\n".join(formatEvent(e) for e in events)


class CompileTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.files = Files(self)

    def test_round_trip(self) -> None:
        source = self.files.write("aliases", 'admin: harry\nlist: :include:/x, /var/mail/a, "|cmd a", b@example.org\n')
        self.assertEqual(newaliases(source), [])
        with open(compiled_path(source), encoding="utf-8") as handle:
            document = json.load(handle)
        self.assertEqual((document["format"], document["version"]), (FORMAT, VERSION))
        table = load_compiled(source)
        self.assertEqual(sorted(table), ["admin", "list"])
        self.assertEqual(
            [(t.kind, t.value) for t in table.get("list").targets],
            [
                (TargetKind.INCLUDE, "/x"),
                (TargetKind.FILE, "/var/mail/a"),
                (TargetKind.COMMAND, "cmd a"),
                (TargetKind.ADDRESS, "b@example.org"),
            ],
        )
        self.assertEqual(table.get("admin").line, 1)
        self.assertEqual(table.get("admin").owner_uid, os.stat(compiled_path(source)).st_uid)

    def test_errors_write_nothing(self) -> None:
        source = self.files.write("aliases", "admin: harry\n")
        self.assertEqual(newaliases(source), [])
        before = open(compiled_path(source), "rb").read()
        self.files.write("aliases", "admin: sally\nbroken\n")
        problems = newaliases(source)
        self.assertEqual([(p.line, p.severity) for p in problems], [(2, "error")])
        self.assertEqual(open(compiled_path(source), "rb").read(), before)
        self.assertEqual(sorted(os.listdir(self.files.directory)), ["aliases", "aliases.db"])

    def test_warnings_still_compile(self) -> None:
        source = self.files.write("aliases", "admin: harry\nadmin: sally\n")
        problems = newaliases(source)
        self.assertEqual([p.severity for p in problems], ["warning"])
        self.assertTrue(os.path.exists(compiled_path(source)))

    def test_missing_source(self) -> None:
        problems = newaliases(os.path.join(self.files.directory, "nope"))
        self.assertEqual(len(problems), 1)
        self.assertIn("cannot read", problems[0].message)

    def test_atomic_replace(self) -> None:
        """A reader holding the old table keeps a whole old table; the path holds the whole new one."""
        source = self.files.write("aliases", "admin: harry\n")
        newaliases(source)
        old_inode = os.stat(compiled_path(source)).st_ino
        reader = open(compiled_path(source), "rb")
        self.addCleanup(reader.close)
        self.files.write("aliases", "admin: sally\n")
        self.assertEqual(newaliases(source), [])
        self.assertNotEqual(os.stat(compiled_path(source)).st_ino, old_inode)
        self.assertIn(b'"harry"', reader.read())
        self.assertEqual(load_compiled(source).get("admin").targets[0].value, "sally")
        self.assertEqual(sorted(os.listdir(self.files.directory)), ["aliases", "aliases.db"])

    def test_failed_write_leaves_old_table(self) -> None:
        source = self.files.write("aliases", "admin: harry\n")
        newaliases(source)
        before = open(compiled_path(source), "rb").read()
        self.files.write("aliases", "admin: sally\n")

        def broken(fd: int) -> None:
            raise OSError(28, "No space left on device")

        self.patch(aliasdb.os, "fsync", broken)
        table, problems = compile_aliases(source)
        self.assertIsNone(table)
        self.assertIn("No space left", problems[-1].message)
        self.assertEqual(open(compiled_path(source), "rb").read(), before)
        self.assertEqual(sorted(os.listdir(self.files.directory)), ["aliases", "aliases.db"])

    def test_group_writable_warning(self) -> None:
        source = self.files.write("aliases", "admin: harry\n")
        os.chmod(source, 0o664)
        problems = newaliases(source)
        self.assertEqual([p.severity for p in problems], ["warning"])
        self.assertIn("writable by group or others", problems[0].message)
        self.assertEqual(stat.S_IMODE(os.stat(compiled_path(source)).st_mode), 0o644)

    def test_db_owned_like_source(self) -> None:
        """Running as root, the .db gets the source's owner: deliveries run as that user."""
        if os.geteuid() != 0:
            raise self.skipTest("needs root to chown")
        nobody = pwd.getpwnam("nobody")
        source = self.files.write("aliases", "run: /tmp/x\n")
        os.chown(source, nobody.pw_uid, nobody.pw_gid)
        self.assertEqual(newaliases(source), [])
        self.assertEqual(os.stat(compiled_path(source)).st_uid, nobody.pw_uid)
        self.assertEqual(load_compiled(source).get("run").owner_uid, nobody.pw_uid)


class LoadTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.files = Files(self)

    def test_missing_db_parses_source(self) -> None:
        source = self.files.write("aliases", "admin: harry\n")
        with capturedLogs() as events:
            table = load_compiled(source)
        self.assertEqual(table.get("admin").targets[0].value, "harry")
        self.assertEqual(table.get("admin").owner_uid, os.stat(source).st_uid)
        self.assertIn("run newaliases", log_text(events))

    def test_stale_db_parses_source(self) -> None:
        source = self.files.write("aliases", "admin: harry\n")
        newaliases(source)
        age(compiled_path(source), 60)
        self.files.write("aliases", "admin: sally\n")
        with capturedLogs() as events:
            table = load_compiled(source)
        self.assertEqual(table.get("admin").targets[0].value, "sally")
        self.assertIn("older than", log_text(events))

    def test_db_used_when_newer(self) -> None:
        """Like Postfix, an edit takes effect when newaliases has run."""
        source = self.files.write("aliases", "admin: harry\n")
        newaliases(source)
        with open(source, "w") as handle:
            handle.write("admin: sally\n")
        age(source, 60)
        self.assertEqual(load_compiled(source).get("admin").targets[0].value, "harry")

    def test_corrupt_or_foreign_db(self) -> None:
        source = self.files.write("aliases", "admin: harry\n")
        for text in ("{not json", json.dumps({"format": FORMAT, "version": 99, "entries": []}),
                     json.dumps({"format": FORMAT, "version": VERSION, "entries": [{"name": "x"}]}), "[]"):
            self.files.write("aliases.db", text)
            with capturedLogs() as events:
                table = load_compiled(source)
            self.assertEqual(table.get("admin").targets[0].value, "harry", text)
            self.assertTrue(events, text)

    def test_source_without_db_problems_logged(self) -> None:
        source = self.files.write("aliases", "admin: harry\nbroken line\n")
        with capturedLogs() as events:
            table = load_compiled(source)
        self.assertIn("admin", table)
        self.assertIn(f"{source}:2", log_text(events))

    def test_nothing_to_read(self) -> None:
        error = self.assertRaises(ConfigError, load_compiled, os.path.join(self.files.directory, "none"))
        self.assertIn("cannot read aliases", str(error))

    def test_db_without_source(self) -> None:
        source = self.files.write("aliases", "admin: harry\n")
        newaliases(source)
        os.unlink(source)
        self.assertIn("admin", load_compiled(source))

    def test_lookup_table_interface(self) -> None:
        source = self.files.write("aliases", "admin: harry\n")
        table = load_compiled(source)
        self.assertTrue(verifyObject(ILookupTable, table))
        self.assertEqual([t.value for t in table.lookup("ADMIN")], ["harry"])

    def test_read_include_file(self) -> None:
        path = self.files.write("list", "harry\n")
        self.assertEqual(read_include_file(path), "harry\n")
        self.assertRaises(OSError, read_include_file, self.files.directory)
        self.assertRaises(OSError, read_include_file, path + ".missing")
        big = self.files.write("big", "x" * (aliasdb.INCLUDE_LIMIT + 1))
        self.assertRaises(OSError, read_include_file, big)


class WatchTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.files = Files(self)

    def test_new_table_picked_up(self) -> None:
        source = self.files.write("aliases", "admin: harry\n")
        newaliases(source)
        clock = Clock()
        watched = watch_aliases(source, clock, interval=2.0)
        self.assertEqual(watched.path, compiled_path(source))
        self.assertEqual(watched.value.get("admin").targets[0].value, "harry")
        # Editing the source alone changes nothing (Postfix semantics) ...
        with open(source, "w") as handle:
            handle.write("admin: sally\n")
        age(source, 60)
        self.assertFalse(self.successResultOf(watched.reload()))
        # ... newaliases does, through the polling loop.
        self.assertEqual(newaliases(source), [])
        watched.start()
        self.addCleanup(watched.stop)
        clock.advance(2.0)
        self.assertEqual(watched.value.get("admin").targets[0].value, "sally")

    def test_alias_maps_chain(self) -> None:
        one = self.files.write("one", "admin: harry\n")
        two = self.files.write("two", "admin: sally\nroot: bob\n")
        newaliases(one)
        maps = watch_alias_maps([TableRef("hash", one), f"texthash:{two}"], Clock())
        self.assertIsInstance(maps, AliasMaps)
        table = maps()
        self.assertEqual(table.get("admin").targets[0].value, "harry")
        self.assertEqual(table.get("root").targets[0].value, "bob")
        self.assertIs(maps(), table)  # cached while nothing reloads
        self.assertEqual(maps.watched[1].path, two)  # texthash: the source itself
        with open(two, "w") as handle:
            handle.write("root: carol\n")
        self.successResultOf(maps.watched[1].reload(force=True))
        self.assertIsNot(maps(), table)
        self.assertEqual(maps().get("root").targets[0].value, "carol")

    def test_alias_maps_rebuilt_when_a_new_table_reuses_an_old_address(self) -> None:
        """
        CPython gives a freed table's id() to the next one: a reload whose
        table sits where the old one was must still rebuild the chain.
        """
        one = self.files.write("one", "admin: harry\n")
        two = self.files.write("two", "root: bob\n")
        maps = watch_alias_maps([f"texthash:{one}", f"texthash:{two}"], Clock())
        self.assertEqual(maps().get("root").targets[0].value, "bob")
        watched = maps.watched[1]
        same_place = watched.value
        real_parse = watched._parse

        def parse_into_same_object(path: str):
            fresh = real_parse(path)
            object.__setattr__(same_place, "entries", fresh.entries)  # a new table at the old id
            return same_place

        watched._parse = parse_into_same_object
        with open(two, "w") as handle:
            handle.write("root: carol\n")
        self.assertTrue(self.successResultOf(watched.reload(force=True)))
        self.assertEqual(maps().get("root").targets[0].value, "carol")

    def test_empty_maps(self) -> None:
        maps = watch_alias_maps([], Clock())
        self.assertEqual(len(maps()), 0)

    def test_virtual_maps(self) -> None:
        path = self.files.write("virtual", "info@example.org harry@example.com\n")
        maps = watch_virtual_maps([f"hash:{path}"], Clock())
        self.assertEqual(maps().kind, "virtual")
        self.assertIn("info@example.org", maps())


class NewaliasesCommandTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.files = Files(self)

    def run_config(self, *maps: object) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        self.patch(cli.sys, "stdout", out)
        self.patch(cli.sys, "stderr", err)
        args = SimpleNamespace(files=[])
        code = cli.run_newaliases(args, SimpleNamespace(alias_maps=maps))
        return code, out.getvalue(), err.getvalue()

    def test_compiles_alias_maps(self) -> None:
        source = self.files.write("aliases", "admin: harry\nroot: harry\n")
        code, out, err = self.run_config(TableRef("hash", source))
        self.assertEqual((code, err), (0, ""))
        self.assertIn("2 aliases compiled", out)
        self.assertTrue(os.path.exists(compiled_path(source)))

    def test_problems_as_file_line(self) -> None:
        source = self.files.write("aliases", "admin: harry\nbroken\nadmin: x\n")
        code, out, err = self.run_config(f"hash:{source}")
        self.assertEqual(code, 1)
        self.assertIn(f"{source}:2: error: missing ':'", err)
        self.assertIn(f"{source}:3: warning: duplicate alias", err)
        self.assertFalse(os.path.exists(compiled_path(source)))

    def test_warnings_exit_zero(self) -> None:
        source = self.files.write("aliases", "admin: harry\nadmin: x\n")
        code, _, err = self.run_config(f"hash:{source}")
        self.assertEqual(code, 0)
        self.assertIn(":2: warning:", err)

    def test_texthash_validated_not_compiled(self) -> None:
        source = self.files.write("aliases", "admin: harry\n")
        code, out, _ = self.run_config(f"texthash:{source}")
        self.assertEqual(code, 0)
        self.assertIn("texthash", out)
        self.assertFalse(os.path.exists(compiled_path(source)))

    def test_empty_alias_maps(self) -> None:
        code, _, err = self.run_config()
        self.assertEqual(code, 0)
        self.assertIn("nothing to do", err)

    def test_console_script_with_files(self) -> None:
        source = self.files.write("aliases", "admin: harry\n")
        self.patch(cli.sys, "stdout", io.StringIO())
        self.assertEqual(cli.newaliases_main([source]), 0)
        self.assertTrue(os.path.exists(compiled_path(source)))

    def test_console_script_with_config(self) -> None:
        source = self.files.write("aliases", "admin: harry\n")
        config = self.files.write("mailserver.cf", f"alias_maps = hash:{source}\n")
        out, err = io.StringIO(), io.StringIO()
        self.patch(cli.sys, "stdout", out)
        self.patch(cli.sys, "stderr", err)
        self.assertEqual(cli.newaliases_main(["-c", config]), 0, err.getvalue())
        self.assertTrue(os.path.exists(compiled_path(source)))

    def test_console_script_bad_config(self) -> None:
        err = io.StringIO()
        self.patch(cli.sys, "stderr", err)
        self.assertEqual(cli.newaliases_main(["-c", os.path.join(self.files.directory, "missing.cf")]), 1)
        self.assertIn("missing.cf", err.getvalue())

    def test_registered_subcommand(self) -> None:
        import argparse

        parser = argparse.ArgumentParser()
        cli.register(parser.add_subparsers())
        args = parser.parse_args(["newaliases", "/etc/aliases"])
        self.assertIs(args.func, cli.run_newaliases)
        self.assertEqual(args.files, ["/etc/aliases"])
