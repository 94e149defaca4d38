"""The one failure type with SMTP meaning, and configuration errors."""

from __future__ import annotations

from dataclasses import dataclass


class MailError(Exception):
    """
    A refusal with SMTP meaning: reply code, enhanced status code and text.

    C{temporary} tells a 4xx from a 5xx for callers that do not look at the
    code (the outbound queue, bounces).  Only C{mailserver.smtp.server} turns
    it into a reply line.
    """

    def __init__(self, code: int, enhanced: str, text: str) -> None:
        super().__init__(f"{code} {enhanced} {text}")
        self.code = code
        self.enhanced = enhanced
        self.text = text

    @property
    def temporary(self) -> bool:
        return 400 <= self.code < 500

    def reply(self) -> str:
        """The reply text after the code: C{"5.1.1 User unknown"}."""
        return f"{self.enhanced} {self.text}"


@dataclass(frozen=True)
class Problem:
    """One finding of a configuration check, located by file and line."""

    file: str
    line: int
    message: str
    severity: str = "error"  # "error" or "warning"

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.severity}: {self.message}"


class ConfigError(Exception):
    """The configuration cannot be used; C{problems} says where and why."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))
