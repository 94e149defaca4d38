"""
Unicode white space (U+00A0, U+3000, \\x1c-\\x1f...) in every config parser:
never an exception, always a problem at file:line (issue 17 item 5).
"""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from mailserver.config.lines import split_lines, strip, unicode_space, words
from mailserver.config.maincf import parse_main_cf
from mailserver.tables.aliases import parse_aliases, parse_include, parse_virtual
from mailserver.tables.passwd import parse_passwd
from mailserver.tables.regexp import parse_regexp_table

SPACES = ("\u00a0", "\u3000", "\x1c", "\x1d", "\x1e", "\x1f", "\x85", "\u2028", "\u2003")

# (parser, templates): each template puts {w} where a user might type it.
CASES = {
    "aliases": (
        parse_aliases,
        ("{w}root: bob", "root:{w}bob", "root: bob{w}", "root: bob,{w}alice", "root{w}: bob", "root: :include:{w}/x"),
    ),
    "virtual": (
        parse_virtual,
        ("{w}a@x.test b@y.test", "a@x.test{w}b@y.test", "a@x.test b@y.test{w}", "{w}", "@x.test{w}b@y.test"),
    ),
    "include": (parse_include, ("{w}bob", "bob{w}", "bob,{w}alice")),
    "regexp": (
        parse_regexp_table,
        ("{w}/a/ REJECT x", "/a/{w}REJECT x", "/a/ REJECT{w}x", "if{w}/a/\n/b/ REJECT\nendif", "{w}"),
    ),
    "passwd": (
        parse_passwd,
        ("{w}bob@x.test:{{PLAIN}}a", "bob@x.test{w}:{{PLAIN}}a", "bob@x.test:{{PLAIN}}a::::::{w}userdb_x=y", "{w}"),
    ),
    "main.cf": (parse_main_cf, ("{w}myhostname = a", "myhostname{w}= a", "{w}")),
}


class UnicodeSpaceTests(SynchronousTestCase):
    def test_regression_virtual_unicode_space_is_a_problem_not_an_assertion(self) -> None:
        """The issue's case: a virtual line starting with U+00A0 crashed with AssertionError."""
        for space in SPACES:
            table, problems = parse_virtual(f"a@x.test b@y.test\n{space}c@x.test d@y.test\n", "virtual")
            self.assertEqual([p.line for p in problems], [2], repr(space))
            self.assertIn(f"U+{ord(space):04X}", problems[0].message)
            self.assertIn("a@x.test", table.entries)
            self.assertEqual(len(table.entries), 1)

    def test_regression_unicode_space_in_every_parser_is_reported_at_its_line(self) -> None:
        """Each parser reports the bad line (line 2, after a good line 1) and never raises."""
        good = {
            "aliases": "postmaster: root",
            "virtual": "p@x.test q@y.test",
            "include": "carol",
            "regexp": "/z/ DUNNO",
            "passwd": "carol@x.test:{PLAIN}c",
            "main.cf": "mydomain = x.test",
        }
        for name, (parse, templates) in CASES.items():
            for template in templates:
                for space in SPACES:
                    text = good[name] + "\n" + template.format(w=space) + "\n"
                    _, problems = parse(text, "f")
                    errors = [p for p in problems if p.severity == "error"]
                    self.assertTrue(errors, f"{name}: {text!r} accepted")
                    self.assertEqual({p.line for p in errors}, {2}, f"{name}: {text!r}: {problems}")
                    self.assertTrue(all(p.message for p in errors))

    def test_line_ends_are_lf_only(self) -> None:
        """\\x1c, U+2028 and friends do not end a line (Postfix reads to LF), so line numbers stay true."""
        self.assertEqual(split_lines("a\x1cb\u2028c\r\nd\n"), ["a\x1cb\u2028c", "d"])
        _, problems = parse_aliases("a:\x1c b\nc d\n", "f")
        self.assertEqual([p.line for p in problems], [1, 2])

    def test_ascii_space_still_separates(self) -> None:
        self.assertEqual(words(" a\tb \x0bc\xa0d "), ["a", "b", "c\xa0d"])
        self.assertEqual(strip("\t a \r"), "a")
        self.assertIsNone(unicode_space("a b\tc"))
        self.assertEqual(unicode_space("a\u3000b"), "U+3000")
        table, problems = parse_virtual("a@x.test\tb@y.test,  c@y.test\n", "f")
        self.assertEqual(problems, [])
        self.assertEqual([t.value for t in table.entries["a@x.test"].targets], ["b@y.test", "c@y.test"])

    def test_quoted_unicode_space_is_what_the_author_meant(self) -> None:
        table, problems = parse_aliases('"a\u00a0b": "/var/mail/a\u00a0b"\n', "f")
        self.assertEqual(problems, [])
        self.assertEqual([t.value for t in table.entries["a\u00a0b"].targets], ["/var/mail/a\u00a0b"])

    def test_regexp_pattern_may_match_unicode_space(self) -> None:
        """Inside a pattern U+00A0 is just a character to match."""
        table, problems = parse_regexp_table("/a\u00a0b/ REJECT no\n", "f")
        self.assertEqual(problems, [])
        self.assertIsNotNone(table.match("a\u00a0b"))


class DaemonLogTests(SynchronousTestCase):
    def test_regression_daemon_logs_the_reason_for_a_unicode_space_line(self) -> None:
        """The daemon's virtual table load logs file:line and the character, not an empty reason."""
        from twisted.logger import capturedLogs

        from mailserver.tables.aliasdb import load_virtual

        path = os.path.abspath(self.mktemp())
        with open(path, "w", encoding="utf-8") as handle:
            handle.write("a@x.test b@y.test\n\u00a0c@x.test d@y.test\n")
        with capturedLogs() as events:
            table = load_virtual(path)
        self.assertEqual(list(table.entries), ["a@x.test"])
        [event] = [e for e in events if "problem" in e]
        self.assertIn(f"{path}:2:", event["problem"])
        self.assertIn("U+00A0", event["problem"])
