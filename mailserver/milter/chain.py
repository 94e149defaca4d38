"""
Several milters (C{smtpd_milters} lists them in order) behind the one API
of L{MilterSession}, as Postfix runs them: each stage goes to each milter in
turn; the first reject, tempfail, discard or shutdown ends the stage (later
milters are not asked); a milter's accept ends only that milter's part.  At
end of message the modifications of all milters are joined in milter order
(each milter saw the message as received) and any quarantine is kept.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

from twisted.internet import defer
from zope.interface import implementer

from mailserver.interfaces import IMilterSession
from mailserver.milter.client import CONTINUE, MilterSession, Verdict

_FINAL = ("reject", "tempfail", "discard", "shutdown")


@implementer(IMilterSession)
class MilterChain:
    """The milters of one SMTP connection, in configuration order."""

    def __init__(self, sessions: Sequence[MilterSession]) -> None:
        self.sessions = tuple(sessions)

    async def _each(self, call: Callable[[MilterSession], "defer.Deferred[Verdict]"]) -> Verdict:
        modifications: list[Any] = []
        quarantine: str | None = None
        default = False
        for session in self.sessions:
            verdict = await call(session)
            if verdict.action in _FINAL:
                return verdict
            modifications.extend(verdict.modifications)
            quarantine = quarantine or verdict.quarantine
            default = default or verdict.default
        return Verdict(CONTINUE, None, tuple(modifications), quarantine, default)

    def _run(self, call: Callable[[MilterSession], "defer.Deferred[Verdict]"]) -> defer.Deferred[Verdict]:
        return defer.Deferred.fromCoroutine(self._each(call))

    def connect(self, macros: Mapping[str, str] | None, hostname: str, family: str = "U",
                port: int = 0, address: str = "") -> defer.Deferred[Verdict]:  # fmt: skip
        return self._run(lambda s: s.connect(macros, hostname, family, port, address))

    def helo(self, name: str, macros: Mapping[str, str] | None = None) -> defer.Deferred[Verdict]:
        return self._run(lambda s: s.helo(name, macros))

    def mail_from(self, args: Sequence[str], macros: Mapping[str, str] | None = None) -> defer.Deferred[Verdict]:
        return self._run(lambda s: s.mail_from(args, macros))

    def rcpt(self, args: Sequence[str], macros: Mapping[str, str] | None = None) -> defer.Deferred[Verdict]:
        return self._run(lambda s: s.rcpt(args, macros))

    def data(self, macros: Mapping[str, str] | None = None) -> defer.Deferred[Verdict]:
        return self._run(lambda s: s.data(macros))

    def header(self, name: str, value: str) -> defer.Deferred[Verdict]:
        return self._run(lambda s: s.header(name, value))

    def eoh(self, macros: Mapping[str, str] | None = None) -> defer.Deferred[Verdict]:
        return self._run(lambda s: s.eoh(macros))

    def body(self, chunk: bytes) -> defer.Deferred[Verdict]:
        return self._run(lambda s: s.body(chunk))

    def eom(self, macros: Mapping[str, str] | None = None) -> defer.Deferred[Verdict]:
        return self._run(lambda s: s.eom(macros))

    def unknown(self, command: str, macros: Mapping[str, str] | None = None) -> defer.Deferred[Verdict]:
        return self._run(lambda s: s.unknown(command, macros))

    def abort(self) -> None:
        for session in self.sessions:
            session.abort()

    def quit(self) -> defer.Deferred[Any]:
        return defer.gatherResults([session.quit() for session in self.sessions])


