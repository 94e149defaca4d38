"""
The smallest useful milter: continue to everything, and at end of message
add one header and accept.  Used by the loopback tests, and run as a child
process by bench/milter.py --null to measure the client alone.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.protocol import Factory, Protocol

from mailserver.milter import codec


class NullMilter(Protocol):
    """Continue to everything; at end of message add X-Tiny and accept."""

    def connectionMade(self) -> None:
        self.decoder = codec.Decoder()
        connections = getattr(self.factory, "connections", None)
        if connections is not None:
            connections.append(self)

    def dataReceived(self, data: bytes) -> None:
        for packet in self.decoder.feed(data):
            command = codec.decode_command(packet)
            if isinstance(command, codec.OptNeg):
                replies: list[Any] = [codec.OptNeg(6, codec.SMFIF_ADDHDRS, codec.SMFIP_NR_HDR)]
            elif isinstance(command, codec.EndOfMessage):
                replies = [codec.AddHeader("X-Tiny", "seen"), codec.Accept()]
            elif isinstance(command, (codec.Macro, codec.Header, codec.Abort)):
                replies = []
            elif isinstance(command, codec.Quit):
                self.transport.loseConnection()
                return
            else:
                replies = [codec.Continue()]
            self.transport.write(b"".join(codec.encode(r) for r in replies))


def main() -> None:
    """Listen on 127.0.0.1, print the port, serve until killed."""
    from twisted.internet import reactor

    port = reactor.listenTCP(0, Factory.forProtocol(NullMilter), interface="127.0.0.1")  # type: ignore[attr-defined]
    print(port.getHost().port, flush=True)
    reactor.run()  # type: ignore[attr-defined]
