"""
A scripted milter on loopback for session tests: continue to everything
unless C{replies} names what to send for a command class (a list of reply
objects, modifications first), all actions negotiated.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.protocol import Factory, Protocol

from mailserver.milter import codec


class ScriptedMilterProtocol(Protocol):
    def connectionMade(self) -> None:
        self.decoder = codec.Decoder()

    def dataReceived(self, data: bytes) -> None:
        factory: ScriptedMilterFactory = self.factory  # type: ignore[assignment]
        for packet in self.decoder.feed(data):
            command = codec.decode_command(packet)
            factory.seen.append(command)
            if isinstance(command, codec.OptNeg):
                replies: list[Any] = [codec.OptNeg(6, codec.SMFIF_ALL, 0)]
            elif isinstance(command, codec.Quit):
                self.transport.loseConnection()
                return
            elif isinstance(command, (codec.Macro, codec.Abort)):
                replies = []
            else:
                replies = factory.reply_to(command)
            self.transport.write(b"".join(codec.encode(r) for r in replies))


class ScriptedMilterFactory(Factory):
    protocol = ScriptedMilterProtocol

    def __init__(self, replies: dict[type, list[Any]] | None = None, rcpt_reject: str = "") -> None:
        self.replies = replies or {}
        self.rcpt_reject = rcpt_reject  # refuse this recipient at RCPT
        self.seen: list[Any] = []

    def reply_to(self, command: Any) -> list[Any]:
        if isinstance(command, codec.Rcpt) and self.rcpt_reject and self.rcpt_reject in command.args[0]:
            return [codec.ReplyCode("550 5.7.1 Not this one")]
        return list(self.replies.get(type(command), [codec.Continue()]))
