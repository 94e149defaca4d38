"""docs/parameters.rst is generated from the declarations; it may not drift from them."""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from mailserver.config.parameters import DECLARED
from mailserver.config.reference import COMMAND, reference, sections

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class ReferenceTests(SynchronousTestCase):
    def test_regression_parameter_reference_matches_declarations(self) -> None:
        """The hand-written table lacked command_time_limit; the generated file may not lag."""
        with open(os.path.join(ROOT, "docs", "parameters.rst"), encoding="utf-8") as handle:
            written = handle.read()
        self.assertTrue(written == reference(), f"docs/parameters.rst is out of date: run `{COMMAND}`")

    def test_every_parameter_listed_once(self) -> None:
        text = reference()
        for name in DECLARED:
            self.assertEqual(text.count(f"   * - ``{name}``\n"), 1, name)
        self.assertIn("``command_time_limit``", text)

    def test_sections_from_the_declaration_comments(self) -> None:
        """Each comment line of the PARAMETERS table heads a section, in declaration order."""
        grouped = dict(sections())
        self.assertEqual(list(grouped)[:3], ["Site and domains", "Network", "SMTP server limits"])
        self.assertEqual([p.name for p in grouped["Observability"]], ["metrics_listen", "metrics_allow"])
        self.assertIn("Listeners", grouped)  # "# Listeners (Twisted endpoint ...)." loses its remark
        self.assertEqual(sum(len(members) for members in grouped.values()), len(DECLARED))

    def test_markup_escaped(self) -> None:
        """A meaning with a |command or *wildcard stays plain text."""
        self.assertIn(r"time limit of a \|command alias delivery", reference())
