"""
Replies over real loopback sockets: written straight to the socket when
nothing is queued, and one write for the replies to a pipelined group.
"""

from __future__ import annotations

import socket

from twisted.internet import protocol, reactor, tcp
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from mailserver.netwrite import write_now, write_sequence_now, writes_directly
from tests.harness import RunningServer


class _Writer(protocol.Protocol):
    """Server side: on connection, run the test's C{action} with the transport."""

    def connectionMade(self) -> None:
        self.factory.connected.callback(self.transport)


class _Loopback(TestCase):
    """A server-side transport over real loopback, and the client's socket."""

    timeout = 30

    def setUp(self):
        factory = protocol.ServerFactory.forProtocol(_Writer)
        factory.connected = Deferred()
        self.port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        self.client = socket.create_connection(("127.0.0.1", self.port.getHost().port), timeout=10)
        self.addCleanup(self.client.close)
        return factory.connected.addCallback(self._connected)

    def _connected(self, transport) -> None:
        self.transport = transport
        self.addCleanup(transport.loseConnection)

    def read(self, size: int) -> Deferred:
        def receive() -> bytes:
            data = b""
            while len(data) < size:
                chunk = self.client.recv(size - len(data))
                if not chunk:
                    break
                data += chunk
            return data

        return deferToThread(receive)


class WriteNowTests(_Loopback):
    def test_written_at_once(self):
        """Nothing queued: the bytes go to the socket before write_now returns."""
        self.assertTrue(writes_directly(self.transport))
        write_now(self.transport, b"250 2.0.0 Ok\r\n")
        self.assertEqual((self.transport.dataBuffer, self.transport._tempDataBuffer), (b"", []))
        return self.read(14).addCallback(self.assertEqual, b"250 2.0.0 Ok\r\n")

    def test_queued_bytes_keep_their_place(self):
        """Bytes already queued by transport.write() leave first; the new ones wait behind them."""
        self.transport.write(b"first ")
        self.assertFalse(writes_directly(self.transport))
        write_now(self.transport, b"second")
        self.assertEqual(self.transport._tempDataBuffer, [b"first ", b"second"])
        return self.read(12).addCallback(self.assertEqual, b"first second")

    def test_closing_connection_is_queued(self):
        """After loseConnection() the bytes are queued and still sent before the close."""
        self.transport.loseConnection()
        self.assertFalse(writes_directly(self.transport))
        write_now(self.transport, b"221 2.0.0 Bye\r\n")
        return self.read(100).addCallback(self.assertEqual, b"221 2.0.0 Bye\r\n")

    def test_other_transports_use_write(self):
        """Anything but a plain TCP connection (TLS, StringTransport) goes through write()."""
        from twisted.internet.testing import StringTransport

        transport = StringTransport()
        self.assertFalse(writes_directly(transport))
        write_now(transport, b"hello")
        self.assertEqual(transport.value(), b"hello")


class PipelinedGroupTests(TestCase):
    timeout = 60

    def setUp(self):
        self.server = RunningServer(self)
        self.sends: list[bytes] = []
        real = tcp.Connection.writeSomeData

        def recording(connection, data):
            if connection.getHost().port == self.server.ports["smtpd_listen"]:
                self.sends.append(bytes(data))
            return real(connection, data)

        self.patch(tcp.Connection, "writeSomeData", recording)
        return self.server.start()

    def test_end_of_data_and_next_envelope_answered_in_one_write(self):
        """
        RFC 2920: message content may open a group.  The 250 for the message
        and the replies to the MAIL, RCPT and DATA behind it come back in
        order, in one write.
        """
        envelope = b"MAIL FROM:<a@remote.example>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n"

        def send():
            with socket.create_connection(("127.0.0.1", self.server.ports["smtpd_listen"]), timeout=30) as sock:
                stream = sock.makefile("rb")
                stream.readline()
                sock.sendall(b"EHLO c\r\n")
                while not stream.readline().startswith(b"250 "):
                    pass
                sock.sendall(envelope)
                first = [stream.readline() for _ in range(3)]
                sock.sendall(b"Subject: one\r\n\r\nbody\r\n.\r\n" + envelope)
                second = [stream.readline() for _ in range(4)]
                sock.sendall(b"Subject: two\r\n\r\nbody\r\n.\r\nQUIT\r\n")
                third = [stream.readline() for _ in range(2)]
                return first, second, third

        def check(result):
            first, second, third = result
            self.assertEqual([line[:3] for line in first], [b"250", b"250", b"354"])
            self.assertRegex(second[0], rb"^250 2\.0\.0 Ok: queued as [0-9A-F]+\r\n$")
            self.assertEqual(second[1:], [b"250 2.1.0 Ok\r\n", b"250 2.1.5 Ok\r\n",
                                          b"354 End data with <CR><LF>.<CR><LF>\r\n"])
            self.assertEqual([line[:4] for line in third], [b"250 ", b"221 "])
            self.assertIn(b"".join(second), self.sends)  # one write for the whole group
            self.assertEqual(len(self.server.messages("bob")), 2)

        return deferToThread(send).addCallback(check)


class WriteSequenceNowTests(_Loopback):
    """L{write_sequence_now}: a FETCH batch's pieces handed to C{sendmsg}, the rest queued in order."""

    def test_regression_fetch_batch_sent_without_join(self):
        """
        1,500 pieces (more than one C{sendmsg} takes) go to the socket at once,
        in order, with no copy into one buffer and nothing left for the reactor.
        """
        pieces = [b"%05d" % n for n in range(1500)]
        self.assertEqual(write_sequence_now(self.transport, pieces), 7500)
        self.assertEqual((self.transport.dataBuffer, self.transport._tempDataBuffer), (b"", []))
        return self.read(7500).addCallback(self.assertEqual, b"".join(pieces))

    def test_regression_fetch_batch_rest_queued_in_order(self):
        """What the socket does not take (a client that stops reading) is queued, and the producer paused."""
        self.transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        throttle = _Paused()
        self.transport.registerProducer(throttle, True)
        self.addCleanup(self.transport.unregisterProducer)
        pieces = [bytes([65 + n % 26]) * 100_000 for n in range(40)]
        sent = write_sequence_now(self.transport, pieces)
        self.assertLess(sent, 4_000_000)
        self.assertEqual(self.transport._tempDataLen, 4_000_000 - sent)
        self.assertTrue(throttle.paused)
        return self.read(4_000_000).addCallback(self.assertEqual, b"".join(pieces))

    def test_regression_fetch_batch_queued_behind_earlier_bytes(self):
        """Bytes already queued leave first: then the whole batch is queued behind them."""
        self.transport.write(b"first ")
        self.assertEqual(write_sequence_now(self.transport, [b"sec", b"ond"]), 0)
        return self.read(12).addCallback(self.assertEqual, b"first second")


class _Paused:
    paused = False

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False

    def stopProducing(self) -> None:
        pass
