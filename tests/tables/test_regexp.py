"""Tests for mailserver.tables.regexp and its literal prefilter."""

from __future__ import annotations

import ast
import os
import random
import re
import sys

from twisted.trial.unittest import SynchronousTestCase

import mailserver.tables.prefilter as prefilter_module
import mailserver.tables.regexp as regexp_module
from mailserver.errors import ConfigError
from mailserver.tables.prefilter import LiteralFilter, fold, required_literals
from mailserver.tables.regexp import (
    ACTIONS,
    RuleTable,
    combine_tables,
    compile_regexp_table,
    empty_alternatives,
    logical_lines,
    parse_regexp_table,
    table_reference,
)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def table(text: str, name: str = "t") -> RuleTable:
    parsed, problems = parse_regexp_table(text, name)
    errors = [p for p in problems if p.severity == "error"]
    assert not errors, errors
    return parsed


def problems_of(text: str) -> list[tuple[int, str, str]]:
    return [(p.line, p.severity, p.message) for p in parse_regexp_table(text, "f")[1]]


class SyntaxTests(SynchronousTestCase):
    def test_rule_fields(self) -> None:
        rules = table("/^Subject:.*lottery/  REJECT No lottery spam\n").rules
        self.assertEqual(len(rules), 1)
        rule = rules[0]
        self.assertEqual(
            (rule.pattern, rule.negate, rule.flags, rule.action, rule.text, rule.file, rule.line),
            ("^Subject:.*lottery", False, "i", "REJECT", "No lottery spam", "t", 1),
        )
        self.assertEqual(rule.source, "/^Subject:.*lottery/  REJECT No lottery spam")

    def test_comments_blank_lines_and_line_numbers(self) -> None:
        rules = table("# a comment\n\n   # indented comment\n/a/ WARN\n\n/b/ WARN\n").rules
        self.assertEqual([r.line for r in rules], [4, 6])

    def test_continuation_lines(self) -> None:
        rules = table("/^Subject:.*(lottery|\n  casino)/ REJECT\n/x/ REJECT some\n\tmore text\n").rules
        self.assertEqual(rules[0].pattern, "^Subject:.*(lottery|  casino)")
        self.assertEqual(rules[1].text, "some\tmore text")
        self.assertEqual(rules[1].line, 3)

    def test_continuation_at_start_is_an_error(self) -> None:
        self.assertEqual(
            problems_of("  /x/ REJECT\n"),
            [(1, "error", "logical line must not start with white space; line ignored")],
        )

    def test_logical_lines(self) -> None:
        self.assertEqual(logical_lines("a\n b\n#c\n d\ne\n"), [(1, "a b d"), (5, "e")])

    def test_other_delimiters_and_escaped_delimiter(self) -> None:
        rules = table("#comment\n|a/b| WARN\n/a\\/b/ WARN\n").rules
        self.assertEqual([r.pattern for r in rules], ["a/b", "a\\/b"])
        self.assertIsNotNone(rules[0].regex.search("xa/by"))
        self.assertIsNotNone(rules[1].regex.search("xa/by"))

    def test_actions_are_case_insensitive(self) -> None:
        self.assertEqual(table("/a/ reject go away\n").rules[0].action, "REJECT")

    def test_every_action_parses(self) -> None:
        lines = []
        for action in sorted(ACTIONS):
            text = {"PREPEND": "X-A: 1", "REPLACE": "X-B: 2", "REDIRECT": "a@example.com", "BCC": "b@example.com"}
            lines.append(f"/{action.lower()}/ {action} {text.get(action, '')}".rstrip())
        parsed = table("\n".join(lines) + "\n")
        self.assertEqual(sorted(r.action for r in parsed.rules), sorted(ACTIONS))

    def test_regression_replacement_index_unicode_digit_is_a_problem(self) -> None:
        # "${²}" passed str.isdigit() and int() raised ValueError out of the
        # parser, instead of a file:line problem (found while fuzzing).
        for action in ("REJECT ${²}", "REJECT $(²)", "WARN ${ ٣ }"):
            table, problems = parse_regexp_table(f"/(a)/ {action}\n", "t")
            self.assertEqual(len(table), 0, action)
            self.assertEqual([(p.line, p.message[:33]) for p in problems],
                             [(1, "non-numeric replacement index in ")], action)

    def test_table_reference(self) -> None:
        self.assertEqual(table_reference("regexp:/etc/mailserver/header_checks"), "/etc/mailserver/header_checks")
        self.assertEqual(table_reference("pcre:/etc/x"), "/etc/x")
        self.assertEqual(table_reference("/etc/x"), "/etc/x")
        self.assertRaises(ValueError, table_reference, "hash:/etc/x")
        self.assertRaises(ValueError, table_reference, "regexp:")


class FlagTests(SynchronousTestCase):
    def test_case_insensitive_by_default(self) -> None:
        self.assertIsNotNone(table("/^subject: hello/ WARN\n").match("SUBJECT: HELLO"))

    def test_i_toggles_case_sensitivity_off(self) -> None:
        parsed = table("/^Subject: hello/i WARN\n")
        self.assertEqual(parsed.rules[0].flags, "")
        self.assertIsNone(parsed.match("SUBJECT: HELLO"))
        self.assertIsNotNone(parsed.match("Subject: hello"))

    def test_i_twice_toggles_back_on(self) -> None:
        self.assertIsNotNone(table("/hello/ii WARN\n").match("HELLO"))

    def test_x_is_verbose(self) -> None:
        parsed = table("/^ Subject: \\s+ lot tery  # a comment/x WARN\n")
        self.assertEqual(parsed.rules[0].flags, "ix")
        self.assertIsNotNone(parsed.match("Subject:  lottery"))

    def test_m_is_multiline(self) -> None:
        self.assertIsNone(table("/^b$/ WARN\n").match("a\nb\nc"))
        self.assertIsNotNone(table("/^b$/m WARN\n").match("a\nb\nc"))

    def test_s_lets_dot_match_newline(self) -> None:
        self.assertIsNone(table("/a.b/ WARN\n").match("a\nb"))
        self.assertIsNotNone(table("/a.b/s WARN\n").match("a\nb"))

    def test_unknown_flag_is_an_error(self) -> None:
        self.assertEqual(problems_of("/a/q WARN\n"), [(1, "error", "unknown pattern flag 'q' (use i, m, s or x)")])


class MatchTests(SynchronousTestCase):
    def test_first_matching_rule_wins(self) -> None:
        parsed = table("/lottery/ REJECT first\n/lottery/ WARN second\n")
        found = parsed.match("you won the lottery")
        self.assertEqual((found.action, found.text, found.rule.line), ("REJECT", "first", 1))

    def test_no_match(self) -> None:
        self.assertIsNone(table("/lottery/ REJECT\n").match("nothing to see"))

    def test_negation(self) -> None:
        parsed = table("!/^(From|To|Subject):/ WARN not an address header\n")
        self.assertIsNone(parsed.match("Subject: hi"))
        found = parsed.match("X-Other: hi")
        self.assertEqual(found.text, "not an address header")
        self.assertEqual(found.matched, "X-Other: hi")

    def test_substitution(self) -> None:
        parsed = table("/^Subject: (.*) (viagra)(x)?/ REPLACE Subject: $1 ${2} $(2)$3 cost $$5\n")
        found = parsed.match("Subject: cheap VIAGRA")
        self.assertEqual(found.text, "Subject: cheap VIAGRA VIAGRA cost $5")
        self.assertEqual(found.matched, "Subject: cheap VIAGRA")

    def test_if_endif(self) -> None:
        parsed = table(
            "if /^Received:/\n"
            "/from evil\\.example/ REJECT evil relay\n"
            "endif\n"
            "/evil\\.example/ WARN elsewhere\n"
        )
        self.assertEqual(parsed.match("Received: from evil.example by us").action, "REJECT")
        self.assertEqual(parsed.match("X-Note: from evil.example").action, "WARN")

    def test_nested_if_and_negated_if(self) -> None:
        parsed = table(
            "if /^Subject:/\n"
            "if !/urgent/\n"
            "/money/ HOLD money without urgency\n"
            "endif\n"
            "/money/ WARN urgent money\n"
            "endif\n"
        )
        self.assertEqual(parsed.match("Subject: money").action, "HOLD")
        self.assertEqual(parsed.match("Subject: urgent money").action, "WARN")
        self.assertIsNone(parsed.match("X-Subject: money"))

    def test_if_skips_a_whole_block_on_no_match(self) -> None:
        parsed = table("if /^never/\n/a/ REJECT\nif /b/\n/c/ REJECT\nendif\nendif\n/a/ WARN\n")
        self.assertEqual(parsed.match("abc").action, "WARN")

    def test_combine_tables_keeps_order_and_if_blocks(self) -> None:
        first = table("if /^X-/\n/spam/ REJECT first\nendif\n", "a")
        second = table("/spam/ WARN second\n", "b")
        both = combine_tables([first, second])
        self.assertEqual(both.filename, "a, b")
        self.assertEqual(both.match("X-Flag: spam").text, "first")
        self.assertEqual(both.match("Subject: spam").text, "second")
        self.assertEqual(len(both), 2)


class ProblemTests(SynchronousTestCase):
    """Each problem is reported with its line, and bad lines are left out."""

    def test_malformed_table(self) -> None:
        text = (
            "/^Subject: ok/ REJECT fine\n"  # 1
            "/(unclosed/ REJECT\n"  # 2
            "/a/ FILTER smtp:[127.0.0.1]:10025\n"  # 3
            "/b/ INFO\n"  # 4
            "/c/\n"  # 5
            "/d\n"  # 6
            "plain text\n"  # 7
            "/e/ PREPEND\n"  # 8
            "/f/ REDIRECT not an address@\n"  # 9
            "/g/ REJECT $1\n"  # 10
            "!/(h)/ REJECT $1\n"  # 11
            "/(i)/ REJECT $name\n"  # 12
            "endif\n"  # 13
            "if /j/\n"  # 14
        )
        parsed, problems = parse_regexp_table(text, "/etc/mailserver/header_checks")
        self.assertEqual(
            [(p.line, p.severity) for p in problems],
            [(2, "error"), (3, "error"), (4, "error"), (5, "error"), (6, "error"), (7, "error"),
             (8, "error"), (9, "error"), (10, "error"), (11, "error"), (12, "error"), (13, "error"),
             (14, "warning")],
        )
        self.assertIn("does not compile", problems[0].message)
        self.assertIn("unknown action 'FILTER'", problems[1].message)
        self.assertIn("unknown action 'INFO'", problems[2].message)
        self.assertIn("has no action", problems[3].message)
        self.assertIn("missing closing '/'", problems[4].message)
        self.assertIn("delimiter", problems[5].message)
        self.assertIn("PREPEND needs text", problems[6].message)
        self.assertIn("out of range", problems[8].message)
        self.assertIn("negated", problems[9].message)
        self.assertIn("non-numeric", problems[10].message)
        self.assertIn("endif without a matching if", problems[11].message)
        self.assertEqual(str(problems[0]).split(": ")[0], "/etc/mailserver/header_checks:2")
        # Only the good rule is kept.
        self.assertEqual([r.line for r in parsed.rules], [1])

    def test_empty_alternative_warnings(self) -> None:
        for pattern in ("a||b", "(|x)", "a|", "|a", "", "(?:a|)", "x(?i:|y)"):
            self.assertTrue(empty_alternatives(pattern), pattern)
        for pattern in ("a|b", "[|]", "a\\|\\|b", "(a|b)c", "[||]x", "(?#||)a", "x{1,2}"):
            self.assertFalse(empty_alternatives(pattern), pattern)
        self.assertTrue(empty_alternatives("a |  | b", verbose=True))
        self.assertFalse(empty_alternatives("a | b # c||d", verbose=True))
        self.assertEqual(
            problems_of("/^Subject: (free||cheap)/ REJECT\n"),
            [(1, "warning", "pattern /^Subject: (free||cheap)/ has an empty alternative, so it matches every line")],
        )

    def test_portability_warnings(self) -> None:
        problems = problems_of("/^[[:digit:]]+$/ WARN\n/\\<free\\>/ WARN\n/\\p{Lu}/ WARN\n/a\\\\<b/ WARN\n")
        self.assertEqual([(line, severity) for line, severity, _ in problems], [(1, "warning"), (2, "warning"), (3, "error")])
        self.assertIn("POSIX class '[:digit:]' is not supported", problems[0][2])
        self.assertIn("use \\b for a word boundary", problems[1][2])
        self.assertIn("\\p is PCRE syntax", problems[2][2])

    def test_warnings_keep_the_rule(self) -> None:
        parsed, problems = parse_regexp_table("/a/ DUNNO extra\n/b/ PREPEND no header\nif /c/ REJECT\nendif\n", "f")
        self.assertEqual([(p.line, p.severity) for p in problems], [(1, "warning"), (2, "warning"), (3, "warning")])
        self.assertEqual([r.action for r in parsed.rules], ["DUNNO", "PREPEND"])
        self.assertEqual(parsed.rules[0].text, "")

    def test_broken_if_disables_its_block(self) -> None:
        parsed, problems = parse_regexp_table("if /(/\n/a/ REJECT\nendif\n/a/ WARN\n", "f")
        self.assertEqual([(p.line, p.severity) for p in problems], [(1, "error")])
        self.assertEqual(parsed.match("a").action, "WARN")

    def test_compile_raises_config_error(self) -> None:
        with self.assertRaises(ConfigError) as caught:
            compile_regexp_table("/ok/ WARN\n/bad/ NOPE\n", "f")
        self.assertEqual([(p.file, p.line) for p in caught.exception.problems], [("f", 2)])
        self.assertEqual(len(compile_regexp_table("/ok/ WARN\n/a||b/ WARN\n", "f")), 2)

    def test_sample_tables_are_clean(self) -> None:
        for name in ("header_checks", "body_checks", "mime_header_checks"):
            path = os.path.join(REPO, "etc", name)
            with open(path, encoding="utf-8") as f:
                parsed, problems = parse_regexp_table(f.read(), path)
            self.assertEqual(problems, [])
            self.assertGreaterEqual(len(parsed), 1)


class PrefilterTests(SynchronousTestCase):
    def test_required_literals(self) -> None:
        def words(pattern: str, flags: int = re.IGNORECASE):
            return required_literals(re.compile(pattern, flags))

        self.assertEqual(words(r"^Subject:.*\blottery\b"), (("lottery", "subject:"), True))
        self.assertEqual(words(r"Lottery", 0), (("Lottery",), False))
        self.assertEqual(words(r"(?:abc)+def"), (("abc", "def"), True))
        self.assertEqual(words(r"abcd?e"), (("abc",), True))
        self.assertEqual(words(r"ab(cde)*f"), None)  # only runs shorter than 3
        self.assertIsNone(words(r"abc|def"))  # no literal common to both branches
        self.assertIsNone(words(r"(?-i:ABC)"))  # scoped flags: not used

    def test_fold_agrees_with_re_ignorecase(self) -> None:
        """For every code point, fold() equals the fold re.IGNORECASE uses."""
        try:
            from _sre import unicode_tolower
        except ImportError:
            raise self.skipTest("no _sre.unicode_tolower") from None
        extra = prefilter_module._FOLD_TABLE
        bad = []
        for code in range(0x110000):
            if 0xD800 <= code <= 0xDFFF:
                continue
            expected = chr(extra.get(unicode_tolower(code), unicode_tolower(code)))
            if fold(chr(code)) != expected:
                bad.append(hex(code))
        # Every equivalence re.IGNORECASE adds folds to one character.
        for code, others in prefilter_module._EXTRA_CASES.items():
            for other in others:
                if fold(chr(code)) != fold(chr(other)):
                    bad.append((hex(code), hex(other)))
        self.assertEqual(bad, [])

    def test_tricky_case_insensitive_matches_are_not_hidden(self) -> None:
        """Characters re.IGNORECASE equates still reach the rule (no evasion)."""
        parsed = table("/viagra/ REJECT\n/casino/ REJECT\n/kilo/ REJECT\n/\u03bcg/ REJECT\n")
        for text in ("V\u0130AGRA", "ca\u017fino", "\u212aILO", "5 \u00b5g", "CASINO"):
            self.assertIsNotNone(re.search("viagra|casino|kilo|\u03bcg", text, re.I), text)
            self.assertIsNotNone(parsed.match(text), text)

    def test_filter_reports_possible_patterns(self) -> None:
        literal_filter = LiteralFilter([(("lottery", "subject:"), True), None, (("Casino",), False)])
        self.assertEqual(literal_filter.possible("Subject: win the LOTTERY"), {0})
        self.assertEqual(literal_filter.possible("X-Note: LOTTERY"), frozenset())
        self.assertEqual(literal_filter.possible("casino"), frozenset())
        self.assertEqual(literal_filter.possible("Casino"), {2})
        self.assertTrue(literal_filter.present("a\nCasino\nb"))
        self.assertFalse(literal_filter.present("a\ncasino\nb"))

    def test_may_match(self) -> None:
        covered = table("/lottery/ REJECT\n/casino/ REJECT\n/pharmacy/ REJECT\n")
        self.assertFalse(covered.may_match("nothing\nat all\n"))
        self.assertTrue(covered.may_match("nothing\nat LOTTERY all\n"))
        uncovered = table("/lottery/ REJECT\n/^$/ REJECT\n")
        self.assertTrue(uncovered.may_match("nothing"))

    def test_prefiltered_match_equals_plain_evaluation(self) -> None:
        """Differential test: the prefilter never changes which rule matches."""
        patterns = [
            r"^Subject:.*\blottery\b", r"casino\d+", r"(?:win)+ner", r"ab+c", r"^From:.*@example\.com$",
            r"[a-z]+@spam\.test", r"money|cash", r"\bfree\b.*\boffer\b", r"^$", r"x{2,}yz", r"(?i:MiXeD)",
            r"(?-i:Exact)", r"pr[i1]ze", r"\u0130stanbul", r"stra\u00dfe", r"caf\u00e9", r"(a)\1bc",
        ]
        lines = []
        for flags in ("", "i"):
            for index, pattern in enumerate(patterns):
                negate = "!" if index % 7 == 3 else ""
                lines.append(f"{negate}/{pattern}/{flags} WARN {index}{flags}")
        parsed = table("\n".join(lines) + "\n")
        rng = random.Random(5)
        vocabulary = [
            "Subject:", "lottery", "LOTTERY", "casino12", "winwinner", "abbbc", "From:", "x@example.com",
            "foo@spam.test", "cash", "free", "offer", "", "xxxyz", "mixed", "EXACT", "Exact", "pr1ze",
            "\u0130STANBUL", "istanbul", "STRASSE", "stra\u00dfe", "CAF\u00c9", "aabc", "\u017f", "noise",
        ]
        for _ in range(3000):
            text = " ".join(rng.choice(vocabulary) for _ in range(rng.randint(0, 6)))
            expected = None
            for rule in parsed.rules:
                found = rule.regex.search(text)
                if (found is None) == rule.negate:
                    expected = rule.line
                    break
            got = parsed.match(text)
            self.assertEqual(got.rule.line if got else None, expected, text)


    def test_prefilter_with_if_blocks_equals_unfiltered(self) -> None:
        text = (
            "if /^Subject:/\n/lottery/ REJECT 1\nif !/urgent/\n/prize/ HOLD 2\nendif\n/^.*$/ DUNNO 3\nendif\n"
            "if /casino/\n!/^X-/ WARN 4\nendif\n/(money|cash)/ WARN 5\n/winner/ WARN 6\n"
        )
        filtered = table(text)
        unfiltered = table(text)
        unfiltered._covered = tuple(False for _ in unfiltered._covered)
        unfiltered._all_covered = False
        rng = random.Random(7)
        words = ["Subject:", "X-Test:", "lottery", "prize", "urgent", "casino", "cash", "winner", "other"]
        for _ in range(2000):
            sample = " ".join(rng.choice(words) for _ in range(rng.randint(0, 5)))
            got, expected = filtered.match(sample), unfiltered.match(sample)
            self.assertEqual(got.rule.line if got else None, expected.rule.line if expected else None, sample)


class PurityTests(SynchronousTestCase):
    def test_stdlib_only(self) -> None:
        for module in (regexp_module, prefilter_module):
            with open(module.__file__, encoding="utf-8") as f:
                tree = ast.parse(f.read())
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    self.assertTrue(top in sys.stdlib_module_names or top == "mailserver", name)
                    self.assertFalse(name.startswith(("mailserver.delivery", "mailserver.store", "twisted")), name)
