"""Tests for the main.cf syntax parser."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from mailserver.config.maincf import RawSetting, parse_main_cf


class ParseMainCfTests(SynchronousTestCase):
    def test_settings_with_file_and_line(self) -> None:
        """Each setting keeps its name, stripped value, file and line."""
        settings, problems = parse_main_cf("a = 1\nb=two words  \nc =\n", "main.cf")
        self.assertEqual(problems, [])
        self.assertEqual(
            settings,
            [
                RawSetting("a", "1", "main.cf", 1),
                RawSetting("b", "two words", "main.cf", 2),
                RawSetting("c", "", "main.cf", 3),
            ],
        )

    def test_continuation_lines(self) -> None:
        """Lines starting with white space continue the setting, joined by one space."""
        text = "mydestination = a,\n    b,\n\tc\nnext = x\n"
        settings, problems = parse_main_cf(text, "main.cf")
        self.assertEqual(problems, [])
        self.assertEqual(settings[0], RawSetting("mydestination", "a, b, c", "main.cf", 1))
        self.assertEqual(settings[1], RawSetting("next", "x", "main.cf", 4))

    def test_comments_and_blank_lines(self) -> None:
        """
        Comment and blank lines are skipped, also between continuation lines
        (as Postfix); a '#' later in a line belongs to the value.
        """
        text = (
            "# leading comment\n"
            "\n"
            "   # indented comment\n"
            "a = one\n"
            "# comment inside\n"
            "\n"
            "  two\n"
            "b = x # not a comment\n"
        )
        settings, problems = parse_main_cf(text, "main.cf")
        self.assertEqual(problems, [])
        self.assertEqual(
            settings,
            [
                RawSetting("a", "one two", "main.cf", 4),
                RawSetting("b", "x # not a comment", "main.cf", 8),
            ],
        )

    def test_crlf(self) -> None:
        """CRLF line ends are accepted."""
        settings, problems = parse_main_cf("a = 1\r\n  2\r\nb = 3\r\n", "main.cf")
        self.assertEqual(problems, [])
        self.assertEqual([(s.name, s.value) for s in settings], [("a", "1 2"), ("b", "3")])

    def test_not_a_setting(self) -> None:
        """A line that is not 'name = value' is an error at its line."""
        settings, problems = parse_main_cf("a = 1\njust words\nb = 2\n", "main.cf")
        self.assertEqual([s.name for s in settings], ["a", "b"])
        self.assertEqual(
            [str(p) for p in problems],
            ["main.cf:2: error: expected 'name = value', got 'just words'"],
        )

    def test_missing_name(self) -> None:
        _, problems = parse_main_cf("\n = value\n", "x.cf")
        self.assertEqual(
            [str(p) for p in problems], ["x.cf:2: error: continuation line without a setting before it"]
        )
        _, problems = parse_main_cf("a = 1\n= value\n", "x.cf")
        self.assertEqual(
            [str(p) for p in problems], ["x.cf:2: error: missing parameter name before '='"]
        )

    def test_bad_name(self) -> None:
        _, problems = parse_main_cf("my-param = 1\n", "x.cf")
        self.assertEqual(
            [str(p) for p in problems],
            ["x.cf:1: error: bad parameter name 'my-param': use letters, digits and '_'"],
        )

    def test_leading_continuation(self) -> None:
        """An indented first line has nothing to continue."""
        settings, problems = parse_main_cf("# c\n  a = 1\nb = 2\n", "x.cf")
        self.assertEqual([s.name for s in settings], ["b"])
        self.assertEqual(
            [str(p) for p in problems],
            ["x.cf:2: error: continuation line without a setting before it"],
        )

    def test_duplicate_later_wins(self) -> None:
        """A later setting of the same name wins, with a warning at its line."""
        settings, problems = parse_main_cf("a = 1\nb = 2\na = 3\n", "main.cf")
        self.assertEqual(
            settings,
            [RawSetting("b", "2", "main.cf", 2), RawSetting("a", "3", "main.cf", 3)],
        )
        self.assertEqual(
            [str(p) for p in problems],
            ["main.cf:3: warning: a: overrides the setting at line 1"],
        )
        self.assertEqual(problems[0].severity, "warning")

    def test_empty(self) -> None:
        self.assertEqual(parse_main_cf("", "x"), ([], []))
        self.assertEqual(parse_main_cf("\n\n# only\n", "x"), ([], []))
