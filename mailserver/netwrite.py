"""
Replies written to the socket at once.

Twisted's C{transport.write} only queues the bytes and asks the reactor to
watch the socket for writability; the bytes leave on the reactor's next
turn, and the watch is dropped again afterwards.  For a protocol that
answers every request with a few bytes that is two C{epoll_ctl} calls and
one more reactor turn per reply.  L{write_now} sends directly when nothing
is queued on a plain TCP connection and leaves everything else (TLS, a
full socket buffer, a closing connection) to C{transport.write}, so the
order of bytes on the wire never changes.
"""

from __future__ import annotations

from twisted.internet import tcp


def writes_directly(transport: object) -> bool:
    """True if L{write_now} can hand bytes to this transport's socket now."""
    return (
        isinstance(transport, tcp.Connection)
        and not transport.TLS
        and transport.connected
        and not transport.disconnecting
        and transport.producer is None
        and not transport.dataBuffer
        and not transport._tempDataLen
    )


def write_now(transport, data: bytes) -> None:
    """Send C{data} on C{transport}: straight to the socket if possible, else queued."""
    if data and writes_directly(transport):
        sent = transport.writeSomeData(data)
        if isinstance(sent, int):
            if sent >= len(data):
                return
            data = data[sent:]
        # A lost connection: transport.write queues, and the reactor's next
        # write attempt reports the loss the usual way.
    transport.write(data)
