"""Tests for $name expansion of one value."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from mailserver.config.expand import ExpansionError, expand

VALUES = {"host": "mx.example.org", "empty": "", "ext": "+"}


def lookup(name: str) -> str | None:
    return VALUES.get(name)


class ExpandTests(SynchronousTestCase):
    def test_plain_forms(self) -> None:
        """$name, ${name} and $(name) expand to the value."""
        self.assertEqual(expand("$host ESMTP", lookup), ("mx.example.org ESMTP", []))
        self.assertEqual(expand("a${host}b", lookup), ("amx.example.orgb", []))
        self.assertEqual(expand("a$(host)b", lookup), ("amx.example.orgb", []))
        self.assertEqual(expand("localhost.$host.", lookup), ("localhost.mx.example.org.", []))

    def test_name_ends_at_non_name_character(self) -> None:
        self.assertEqual(expand("$host/mail", lookup), ("mx.example.org/mail", []))

    def test_if_non_empty(self) -> None:
        """${name?text} gives text only when name is non-empty."""
        self.assertEqual(expand("${host?yes}", lookup), ("yes", []))
        self.assertEqual(expand("${empty?yes}", lookup), ("", []))
        self.assertEqual(expand("${nosuch?yes}", lookup), ("", []))

    def test_if_empty(self) -> None:
        """${name:text} gives text only when name is empty or unknown."""
        self.assertEqual(expand("${host:no}", lookup), ("", []))
        self.assertEqual(expand("${empty:dflt}", lookup), ("dflt", []))
        self.assertEqual(expand("${nosuch:dflt}", lookup), ("dflt", []))

    def test_conditional_text_is_expanded(self) -> None:
        self.assertEqual(expand("${ext?user${ext}x}", lookup), ("user+x", []))
        self.assertEqual(expand("${empty:$host}", lookup), ("mx.example.org", []))

    def test_dollar_dollar(self) -> None:
        self.assertEqual(expand("cost $$5", lookup), ("cost $5", []))

    def test_unknown_reported(self) -> None:
        """An unknown plain reference expands to nothing and is reported."""
        self.assertEqual(expand("a $nosuch b ${other}", lookup), ("a  b ", ["nosuch", "other"]))

    def test_unknown_inside_taken_conditional(self) -> None:
        self.assertEqual(expand("${host?$nosuch}", lookup), ("", ["nosuch"]))

    def test_syntax_errors(self) -> None:
        for text, message in [
            ("${host", "missing '}' after '${'"),
            ("$(host", "missing ')' after '$('"),
            ("${}", "expected a parameter name after '${', got ''"),
            ("${host!x}", "unexpected '!' after '${host' (expected '?', ':' or the closing bracket)"),
            ("a $ b", "'$' must be followed by a parameter name, '{' or '(' (write '$$' for a literal '$')"),
            ("end$", "'$' must be followed by a parameter name"),
        ]:
            error = self.assertRaises(ExpansionError, expand, text, lookup)
            self.assertIn(message, str(error), text)

    def test_lookup_called_for_nested(self) -> None:
        """The lookup is what recurses; expand calls it once per reference."""
        calls: list[str] = []

        def recording(name: str) -> str | None:
            calls.append(name)
            return "v"

        expand("$a ${b?$c} ${d:x}", recording)
        self.assertEqual(calls, ["a", "b", "c", "d"])
