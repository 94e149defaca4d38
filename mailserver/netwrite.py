"""
Replies written to the socket at once.

Twisted's C{transport.write} only queues the bytes and asks the reactor to
watch the socket for writability; the bytes leave on the reactor's next
turn, and the watch is dropped again afterwards.  For a protocol that
answers every request with a few bytes that is two C{epoll_ctl} calls and
one more reactor turn per reply.  L{write_now} sends directly when nothing
is queued on a plain TCP connection and leaves everything else (TLS, a
full socket buffer, a closing connection) to C{transport.write}, so the
order of bytes on the wire never changes.  L{write_sequence_now} does the
same for many pieces (a batch of FETCH responses) with C{sendmsg}, so they
are neither joined into one buffer first nor wait for the reactor's turn.
"""

from __future__ import annotations

from twisted.internet import tcp


#: Pieces per C{sendmsg} (Linux's IOV_MAX is 1024).
IOV_MAX = 1024


def writes_directly(transport: object, producer_ok: bool = False) -> bool:
    """
    True if L{write_now} can hand bytes to this transport's socket now;
    C{producer_ok}: a producer registered on it (ours, for flow control)
    does not count against it.
    """
    return (
        isinstance(transport, tcp.Connection)
        and not transport.TLS
        and transport.connected
        and not transport.disconnecting
        and (producer_ok or transport.producer is None)
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


def write_sequence_now(transport, pieces: list[bytes]) -> int:
    """
    Send C{pieces} in order on C{transport}: as much as the socket takes
    at once with C{sendmsg} (no copy into one buffer), the rest queued with
    C{writeSequence} (whose producer is paused when that is much).
    Returns the bytes sent at once.
    """
    if not writes_directly(transport, producer_ok=True):
        transport.writeSequence(pieces)
        return 0
    sock = transport.socket
    total = 0
    done = 0  # pieces sent whole
    rest: bytes = b""
    while done < len(pieces):  # bounded: every turn sends at least one piece whole, or stops
        chunk = pieces[done:done + IOV_MAX]
        try:
            sent = sock.sendmsg(chunk)
        except OSError:  # full (EAGAIN) or lost: the transport queues, and finds a loss out itself
            sent = 0
        total += sent
        for piece in chunk:
            if sent < len(piece):
                rest = piece[sent:]
                break
            sent -= len(piece)
            done += 1
        else:
            continue
        break
    if done < len(pieces):
        transport.writeSequence([rest] + pieces[done + 1:])
    return total
