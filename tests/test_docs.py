"""Every reStructuredText page parses with docutils without a warning."""

from __future__ import annotations

import glob
import io
import os

from twisted.trial.unittest import SkipTest, SynchronousTestCase

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pages() -> list[str]:
    found = sorted(glob.glob(os.path.join(ROOT, "docs", "*.rst")))
    return found + [os.path.join(ROOT, "README.rst"), os.path.join(ROOT, "bench", "README.rst")]


class DocsParseTests(SynchronousTestCase):
    def test_pages_parse_without_warnings(self) -> None:
        try:
            from docutils.core import publish_doctree
        except ImportError:  # the "test" extra installs it (README's test command)
            raise SkipTest("docutils is not installed")
        self.assertIn(os.path.join(ROOT, "docs", "parameters.rst"), pages())
        for path in pages():
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
            warnings = io.StringIO()
            publish_doctree(text, source_path=path, settings_overrides={
                "report_level": 2, "halt_level": 5, "warning_stream": warnings, "file_insertion_enabled": False,
                "raw_enabled": False,
            })
            self.assertEqual(warnings.getvalue(), "", os.path.relpath(path, ROOT))
