"""A scripted milter on a StringTransport, and milter settings for tests."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from mailserver.milter import codec
from mailserver.milter.client import MilterProtocol, MilterSession
from mailserver.milter.settings import MilterSettings, MilterSpec

SPEC = MilterSpec("inet", host="127.0.0.1", port=11332)


def settings(**changes: Any) -> MilterSettings:
    values: dict[str, Any] = {"macros": {b"C": ("j", "{daemon_name}"), b"M": ("i", "{auth_authen}")}}
    values.update(changes)
    return MilterSettings(SPEC, **values)


class ScriptedMilter:
    """
    The milter end of a session: C{commands()} decodes what the session
    wrote since the last call; C{reply(...)} feeds replies to it.
    """

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock = clock or Clock()
        self.transport = StringTransport()
        self.protocol = MilterProtocol(self.clock)
        self.connects = 0
        self.pending: defer.Deferred[MilterProtocol] | None = None
        self._decoder = codec.Decoder()

    def connect(self) -> defer.Deferred[MilterProtocol]:
        self.connects += 1
        self.protocol.makeConnection(self.transport)
        return defer.succeed(self.protocol)

    def never_connect(self) -> defer.Deferred[MilterProtocol]:
        self.pending = defer.Deferred()
        return self.pending

    def session(self, **changes: Any) -> MilterSession:
        return MilterSession(settings(**changes), self.clock, self.connect)

    def commands(self) -> list[Any]:
        data = self.transport.value()
        self.transport.clear()
        return [codec.decode_command(p) for p in self._decoder.feed(data)]

    def reply(self, *replies: Any) -> None:
        self.protocol.dataReceived(b"".join(codec.encode(r) for r in replies))

    def negotiate(self, actions: int = codec.SMFIF_ALL, protocol: int = 0, macros: tuple = ()) -> None:
        self.reply(codec.OptNeg(6, actions, protocol, macros))
