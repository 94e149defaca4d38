"""
New milter sessions for the configured milters: one L{MilterSession} per
milter, several behind a L{MilterChain}, with the connection's first macros.
"""

from __future__ import annotations

from typing import Any, Callable

from mailserver.interfaces import IMilterSession
from mailserver.milter.chain import MilterChain
from mailserver.milter.client import MilterSession, endpoint_connector
from mailserver.milter.macros import MacroContext
from mailserver.milter.settings import milter_settings

Opener = Callable[[], "tuple[IMilterSession, MacroContext]"]


def session_opener(config: Any, reactor: Any, kind: str = "smtpd") -> Opener | None:
    """
    C{() -> (session, macro context)} for C{smtpd_milters} (C{kind="smtpd"})
    or C{non_smtpd_milters}; None when the list is empty.
    """
    settings = milter_settings(config, kind)
    if not settings:
        return None
    context = MacroContext.from_config(config)

    def open_session() -> tuple[IMilterSession, MacroContext]:
        sessions = [MilterSession(s, reactor, endpoint_connector(s.spec, reactor)) for s in settings]
        return (sessions[0] if len(sessions) == 1 else MilterChain(sessions)), context

    return open_session
