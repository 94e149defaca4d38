"""Maildir info letters <-> IMAP flags, and the dovecot-keywords table."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from mailserver.store import flags as f


class LettersTests(SynchronousTestCase):
    def test_system_letters(self) -> None:
        self.assertEqual(
            f.letters_to_flags("DFRST", []),
            {"\\Draft", "\\Flagged", "\\Answered", "\\Seen", "\\Deleted"},
        )

    def test_keywords_by_letter(self) -> None:
        table = ["$Forwarded", None, "Work"]
        self.assertEqual(f.letters_to_flags("Sac", table), {"\\Seen", "$Forwarded", "Work"})
        # b is an empty slot, z beyond the table: not reported
        self.assertEqual(f.letters_to_flags("bz", table), frozenset())

    def test_round_trip_sorted(self) -> None:
        table = ["$Forwarded", "Work"]
        letters = f.flags_to_letters(["\\Seen", "Work", "\\Answered", "\\seen"], table)
        self.assertEqual(letters, "RSb")
        self.assertEqual(f.make_info("SRb"), "2,RSb")

    def test_keyword_case_insensitive(self) -> None:
        self.assertEqual(f.flags_to_letters(["work"], ["Work"]), "a")

    def test_keep_unknown_uppercase(self) -> None:
        # P (passed) has no IMAP flag but must survive a rewrite.
        self.assertEqual(f.flags_to_letters(["\\Seen"], [], keep="PS"), "PS")
        self.assertEqual(f.flags_to_letters([], [], keep="PSab"), "P")

    def test_recent_never_stored(self) -> None:
        self.assertEqual(f.flags_to_letters(["\\Recent", "\\Seen"], []), "S")

    def test_unknown_keyword_refused(self) -> None:
        self.assertRaises(f.FlagError, f.flags_to_letters, ["Nope"], [])
        self.assertRaises(f.FlagError, f.flags_to_letters, ["\\Bogus"], [])

    def test_info_letters(self) -> None:
        self.assertEqual(f.info_letters("2,FS"), "FS")
        self.assertEqual(f.info_letters(None), "")
        self.assertEqual(f.info_letters("1,xyz"), "")


class KeywordTableTests(SynchronousTestCase):
    def test_parse_format(self) -> None:
        text = "0 $Forwarded\n2 Work\ngarbage\n30 TooFar\n1 bad(kw\n"
        table = f.parse_keywords(text)
        self.assertEqual(table, ["$Forwarded", None, "Work"])
        self.assertEqual(f.format_keywords(table), "0 $Forwarded\n2 Work\n")

    def test_regression_keywords_unicode_digit_line_skipped(self) -> None:
        # Found by reviewing str.isdigit() uses while fuzzing: "²" is a
        # digit to str.isdigit() but not to int(), which raised ValueError.
        self.assertEqual(f.parse_keywords("² Work\n0 Done\n"), ["Done"])

    def test_add_fills_holes_and_keeps_positions(self) -> None:
        table = f.add_keywords(["A", None, "C"], ["B", "a", "\\Seen", "D"])
        self.assertEqual(table, ["A", "B", "C", "D"])

    def test_at_most_26(self) -> None:
        table = [f"k{i}" for i in range(26)]
        self.assertRaises(f.FlagError, f.add_keywords, table, ["one-more"])
        self.assertEqual(f.add_keywords(table, ["k3"]), table)

    def test_invalid_keywords(self) -> None:
        for bad in ["", "a b", "x(", "a\"b", "with%", "x" * 200, "caf\u00e9"]:
            self.assertRaises(f.FlagError, f.add_keywords, [], [bad])


class ApplyStoreTests(SynchronousTestCase):
    def test_modes(self) -> None:
        current = frozenset({"\\Seen", "Work"})
        self.assertEqual(f.apply_store(current, ["\\flagged"], 1), {"\\Seen", "Work", "\\Flagged"})
        self.assertEqual(f.apply_store(current, ["work"], -1), {"\\Seen"})
        self.assertEqual(f.apply_store(current, ["\\Deleted", "\\Recent"], 0), {"\\Deleted"})
