"""docs/parameters.rst is generated from the declarations; it may not drift from them."""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from mailserver.config.parameters import DECLARED, PARAMETERS, SECTIONS
from mailserver.config.reference import COMMAND, reference

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

    def test_sections_start_at_declared_parameters_in_order(self) -> None:
        order = [p.name for p in PARAMETERS]
        firsts = [first for _, first in SECTIONS]
        self.assertEqual(firsts, sorted(firsts, key=order.index))
        self.assertEqual(PARAMETERS[0].section, SECTIONS[0][0])
        self.assertEqual(DECLARED["metrics_allow"].section, "Observability")

    def test_markup_escaped(self) -> None:
        """A meaning with a |command or *wildcard stays plain text."""
        self.assertIn(r"time limit of a \|command alias delivery", reference())
