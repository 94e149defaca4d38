"""Tests for mailserver.tables.aliases: aliases(5), virtual(5) and :include: parsing."""

from __future__ import annotations

import operator
import os
import random

from twisted.trial.unittest import SynchronousTestCase

from mailserver.config.values import TableRef
from mailserver.tables.aliases import (
    AliasTable,
    AliasTarget,
    TargetKind,
    chain,
    parse_aliases,
    parse_include,
    parse_virtual,
    source_path,
    table_type,
)

L, A, I, F, C = TargetKind.LOCAL, TargetKind.ADDRESS, TargetKind.INCLUDE, TargetKind.FILE, TargetKind.COMMAND


def kinds(table: AliasTable, name: str) -> list[tuple[TargetKind, str]]:
    entry = table.get(name)
    assert entry is not None, f"{name} not in table"
    return [(t.kind, t.value) for t in entry.targets]


class ParseAliasesTests(SynchronousTestCase):
    def parse(self, text: str) -> tuple[AliasTable, list]:
        return parse_aliases(text, "aliases")

    def assertClean(self, text: str) -> AliasTable:
        table, problems = self.parse(text)
        self.assertEqual(problems, [])
        return table

    def test_every_target_kind(self) -> None:
        table = self.assertClean(
            "list: harry, sally@example.org, :include:/etc/mail/list, /var/mail/archive, |/usr/bin/logger\n"
        )
        self.assertEqual(
            kinds(table, "list"),
            [
                (L, "harry"),
                (A, "sally@example.org"),
                (I, "/etc/mail/list"),
                (F, "/var/mail/archive"),
                (C, "/usr/bin/logger"),
            ],
        )

    def test_seed(self) -> None:
        table = self.assertClean("postmaster: root\nMAILER-DAEMON: postmaster\nadmin: harry\n")
        self.assertEqual(kinds(table, "admin"), [(L, "harry")])
        self.assertEqual(kinds(table, "mailer-daemon"), [(L, "postmaster")])
        self.assertEqual(len(table), 3)

    def test_names_are_lower_cased(self) -> None:
        table = self.assertClean("Admin: Harry\n")
        self.assertEqual(list(table), ["admin"])
        self.assertIsNotNone(table.get("ADMIN"))
        self.assertIn("aDmIn", table)
        # The target keeps its case; lookups fold it later.
        self.assertEqual(kinds(table, "admin"), [(L, "Harry")])

    def test_continuation_lines(self) -> None:
        table = self.assertClean("staff: harry,\n  sally,\n\tbob@example.org\nnext: x\n")
        self.assertEqual(kinds(table, "staff"), [(L, "harry"), (L, "sally"), (A, "bob@example.org")])
        self.assertEqual(kinds(table, "next"), [(L, "x")])

    def test_continuation_line_numbers(self) -> None:
        """A bad target on a continuation line is reported at that line."""
        _, problems = self.parse("staff: harry,\n  sally,\n  bad@@x\n")
        self.assertEqual([(p.line, p.severity) for p in problems], [(3, "error")])

    def test_comments_and_blank_lines_inside_continuations(self) -> None:
        table = self.assertClean("staff: harry,\n# a comment\n\n   # indented comment\n  sally\n")
        self.assertEqual(kinds(table, "staff"), [(L, "harry"), (L, "sally")])

    def test_hash_inside_a_line_is_text(self) -> None:
        table = self.assertClean('run: "|/bin/echo #1"\n')
        self.assertEqual(kinds(table, "run"), [(C, "/bin/echo #1")])

    def test_continuation_without_entry(self) -> None:
        table, problems = self.parse("  harry\nadmin: harry\n")
        self.assertEqual([(p.line, p.severity) for p in problems], [(1, "error")])
        self.assertIn("continuation", problems[0].message)
        self.assertIn("admin", table)

    def test_crlf(self) -> None:
        table = self.assertClean("admin: harry,\r\n  sally\r\n")
        self.assertEqual(kinds(table, "admin"), [(L, "harry"), (L, "sally")])

    def test_quoted_name(self) -> None:
        table = self.assertClean('"john doe": john\n"a:b" : c\n')
        self.assertEqual(kinds(table, "john doe"), [(L, "john")])
        self.assertEqual(kinds(table, "a:b"), [(L, "c")])

    def test_quoted_targets(self) -> None:
        table = self.assertClean(
            'x: "|/usr/bin/archive --list x, y", "/var/mail/with space", "john doe", "sally@example.org"\n'
        )
        self.assertEqual(
            kinds(table, "x"),
            [
                (C, "/usr/bin/archive --list x, y"),
                (F, "/var/mail/with space"),
                (L, "john doe"),
                (A, "sally@example.org"),
            ],
        )

    def test_quoted_local_part_address(self) -> None:
        table = self.assertClean('x: "john doe"@example.org\n')
        self.assertEqual(kinds(table, "x"), [(A, '"john doe"@example.org')])

    def test_unquoted_command_with_arguments(self) -> None:
        table = self.assertClean("x: |/usr/bin/procmail -a list, harry\n")
        self.assertEqual(kinds(table, "x"), [(C, "/usr/bin/procmail -a list"), (L, "harry")])

    def test_include_keyword_any_case(self) -> None:
        table = self.assertClean("x: :INCLUDE: /etc/mail/x.list\n")
        self.assertEqual(kinds(table, "x"), [(I, "/etc/mail/x.list")])

    def test_address_domain_lower_cased(self) -> None:
        table = self.assertClean("x: Sally@EXAMPLE.org, <bob@example.org>\n")
        self.assertEqual(kinds(table, "x"), [(A, "Sally@example.org"), (A, "bob@example.org")])

    def test_duplicate_first_wins(self) -> None:
        table, problems = self.parse("admin: harry\nother: x\nADMIN: sally\n")
        self.assertEqual(kinds(table, "admin"), [(L, "harry")])
        self.assertEqual(len(problems), 1)
        problem = problems[0]
        self.assertEqual((problem.file, problem.line, problem.severity), ("aliases", 3, "warning"))
        self.assertIn("first defined at line 1", problem.message)
        self.assertEqual(str(problem)[:10], "aliases:3:")

    def test_duplicate_targets_once(self) -> None:
        table = self.assertClean("x: harry, Harry, sally, harry\n")
        self.assertEqual(kinds(table, "x"), [(L, "harry"), (L, "sally")])

    def test_trailing_comma(self) -> None:
        table = self.assertClean("x: harry,\n")
        self.assertEqual(kinds(table, "x"), [(L, "harry")])

    def test_errors(self) -> None:
        cases = {
            "no colon here\n": "missing ':'",
            ": harry\n": "empty alias name",
            "two words: harry\n": "white space",
            "x:\n": "no targets",
            "x: ,\n": "no targets",
            "x: harry sally\n": "missing comma",
            "x: bad@@address\n": "bad address",
            "x: :include:relative/path\n": "absolute path",
            "x: /var/mail/\n": "directory",
            "x: |\n": "empty command",
            'x: "unbalanced\n': "unbalanced",
            "x: /var/mail/a b\n": "quote",
        }
        for text, expected in cases.items():
            table, problems = self.parse(text)
            self.assertEqual(len(problems), 1, (text, problems))
            self.assertEqual((problems[0].line, problems[0].severity), (1, "error"))
            self.assertIn(expected, problems[0].message, text)
            self.assertEqual(len(table), 0, text)

    def test_entry_with_error_left_out(self) -> None:
        """A list with one bad member is refused as a whole, not half delivered."""
        table, problems = self.parse("bad: harry, x@@y\ngood: sally\n")
        self.assertNotIn("bad", table)
        self.assertIn("good", table)
        self.assertEqual([p.line for p in problems], [1])

    def test_name_with_at_sign_warns(self) -> None:
        table, problems = self.parse("user@example.org: harry\n")
        self.assertEqual([p.severity for p in problems], ["warning"])
        self.assertIn("virtual_alias_maps", problems[0].message)

    def test_entry_location(self) -> None:
        table = self.assertClean("\n\nadmin: harry\n")
        entry = table.get("admin")
        self.assertEqual((entry.file, entry.line, entry.owner_uid), ("aliases", 3, None))

    def test_lookup_interface(self) -> None:
        table = self.assertClean("admin: harry\n")
        self.assertEqual(table.lookup("Admin"), [AliasTarget(L, "harry", 1)])
        self.assertIsNone(table.lookup("nobody"))

    def test_with_owner(self) -> None:
        table = self.assertClean("admin: harry\n").with_owner(1000)
        self.assertEqual(table.get("admin").owner_uid, 1000)

    def test_table_is_read_only(self) -> None:
        table = self.assertClean("admin: harry\n")
        self.assertRaises(TypeError, operator.setitem, table.entries, "x", None)

    def test_fuzz_never_raises(self) -> None:
        """Random text gives problems, never an exception."""
        alphabet = ['a', 'b', '@', ':', ',', '"', '\\', '|', '/', ' ', '\t', '\n', '#', '.', '<', '>', '\x00', 'é']
        rng = random.Random(3)
        for _ in range(2000):
            text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
            for parse in (parse_aliases, parse_virtual):
                table, problems = parse(text, "fuzz")
                self.assertIsInstance(table, AliasTable)
            parse_include(text, "fuzz")


class SampleTests(SynchronousTestCase):
    def test_sample_aliases(self) -> None:
        """etc/aliases parses cleanly; root and the system names reach postmaster's own mailbox."""
        repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        path = os.path.join(repo, "etc", "aliases")
        with open(path, encoding="utf-8") as handle:
            table, problems = parse_aliases(handle.read(), path)
        self.assertEqual(problems, [])
        self.assertNotIn("postmaster", table)  # its built-in mailbox, until the admin names a person
        self.assertEqual(kinds(table, "mailer-daemon"), [(L, "postmaster")])
        self.assertEqual(kinds(table, "root"), [(L, "postmaster")])


class ParseVirtualTests(SynchronousTestCase):
    def test_keys_and_targets(self) -> None:
        table, problems = parse_virtual(
            "Info@Example.COM   harry@example.com, sally@example.org\n"
            "@example.net       catchall@example.com\n"
            "bare               harry\n"
            "multi@example.com  a@example.com b@example.com\n"
            "  c@example.com\n",
            "virtual",
        )
        self.assertEqual(problems, [])
        self.assertEqual(table.kind, "virtual")
        self.assertEqual(sorted(table), ["@example.net", "bare", "info@example.com", "multi@example.com"])
        self.assertEqual(kinds(table, "info@example.com"), [(A, "harry@example.com"), (A, "sally@example.org")])
        self.assertEqual(kinds(table, "bare"), [(L, "harry")])
        self.assertEqual(
            kinds(table, "multi@example.com"), [(A, "a@example.com"), (A, "b@example.com"), (A, "c@example.com")]
        )
        self.assertEqual(table.domains(), frozenset({"example.com", "example.net"}))

    def test_colon_after_key(self) -> None:
        table, problems = parse_virtual("info@example.com: harry\n", "virtual")
        self.assertEqual(len(table), 0)
        self.assertIn("white space, not ':'", problems[0].message)

    def test_bad_key_and_no_targets(self) -> None:
        _, problems = parse_virtual("@@x harry\ninfo@example.com\n", "virtual")
        self.assertEqual([(p.line, p.severity) for p in problems], [(1, "error"), (2, "error")])
        self.assertIn("bad key", problems[0].message)
        self.assertIn("no targets", problems[1].message)

    def test_duplicates_first_wins(self) -> None:
        table, problems = parse_virtual("a@x.org b@x.org\nA@X.ORG c@x.org\n", "virtual")
        self.assertEqual(kinds(table, "a@x.org"), [(A, "b@x.org")])
        self.assertEqual([(p.line, p.severity) for p in problems], [(2, "warning")])

    def test_files_and_commands_warned(self) -> None:
        table, problems = parse_virtual('a@x.org /tmp/file, "|cmd", :include:/x\n', "virtual")
        self.assertEqual([p.severity for p in problems], ["warning"] * 3)
        self.assertTrue(all("not allowed in virtual_alias_maps" in p.message for p in problems))
        self.assertEqual([k for k, _ in kinds(table, "a@x.org")], [F, C, I])


class ParseIncludeTests(SynchronousTestCase):
    def test_lines_and_commas(self) -> None:
        targets, problems = parse_include("# the list\nharry, sally\n\n  bob@example.org\nharry\n", "list")
        self.assertEqual(problems, [])
        self.assertEqual(
            [(t.kind, t.value, t.line) for t in targets],
            [(L, "harry", 2), (L, "sally", 2), (A, "bob@example.org", 4)],
        )

    def test_problems(self) -> None:
        targets, problems = parse_include("harry\nbad@@\n", "list")
        self.assertEqual([t.value for t in targets], ["harry"])
        self.assertEqual([(p.file, p.line) for p in problems], [("list", 2)])


class HelperTests(SynchronousTestCase):
    def test_chain_first_wins(self) -> None:
        first, _ = parse_aliases("admin: harry\n", "one")
        second, _ = parse_aliases("admin: sally\nroot: bob\n", "two")
        merged = chain([first, second])
        self.assertEqual(kinds(merged, "admin"), [(L, "harry")])
        self.assertEqual(kinds(merged, "root"), [(L, "bob")])
        self.assertIs(chain([first]), first)
        self.assertEqual(len(chain([])), 0)

    def test_source_path_and_type(self) -> None:
        self.assertEqual(source_path("hash:/etc/aliases"), "/etc/aliases")
        self.assertEqual(source_path("/etc/aliases"), "/etc/aliases")
        self.assertEqual(source_path(TableRef("hash", "/etc/aliases")), "/etc/aliases")
        self.assertEqual(table_type("texthash:/etc/aliases"), "texthash")
        self.assertEqual(table_type("/etc/aliases"), "hash")
        self.assertEqual(table_type(TableRef("lmdb", "/etc/aliases")), "lmdb")
