"""
COMPRESS=DEFLATE (RFC 4978): over StringTransport, over loopback with a
socket client, and over TLS.
"""

from __future__ import annotations

import os
import socket
import ssl
import zlib

from twisted.internet.interfaces import ISSLTransport
from twisted.internet.testing import StringTransport
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import directlyProvides

from mailserver.imap.compress import DeflateTransport, Inflater
from mailserver.tls import PlaintextPolicy, ReloadableContextFactory, ensure_certificate, is_secure
from tests.imap.support import PASSWORD, LoopbackServer, MemorySession, deliver


class Peer:
    """The client's end of a DEFLATE stream."""

    def __init__(self) -> None:
        self.out = zlib.compressobj(6, zlib.DEFLATED, -15)
        self.into = zlib.decompressobj(-15)

    def pack(self, data: bytes) -> bytes:
        return self.out.compress(data) + self.out.flush(zlib.Z_SYNC_FLUSH)

    def unpack(self, data: bytes) -> bytes:
        return self.into.decompress(data)


class CompressSessionTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.s = MemorySession(self)
        self.s.output()
        deliver(self.s.maildir(), b"Subject: hi\n\n" + b"compressible line\n" * 500)
        self.s.send(b"a LOGIN alice secret\r\n")

    def test_capability_and_commands_compressed(self) -> None:
        self.assertIn(b" COMPRESS=DEFLATE", self.s.send(b"c CAPABILITY\r\n"))
        self.assertEqual(self.s.send(b"z COMPRESS DEFLATE\r\n"), b"z OK DEFLATE active\r\n")
        peer = Peer()
        out = peer.unpack(self.s.send(peer.pack(b"s SELECT INBOX\r\n")))
        self.assertIn(b"s OK [READ-WRITE]", out)
        raw = self.s.send(peer.pack(b"f FETCH 1 BODY.PEEK[]\r\n"))
        text = peer.unpack(raw)
        self.assertIn(b"compressible line\r\n" * 500, text)
        self.assertLess(len(raw), len(text) // 10)
        out = peer.unpack(self.s.send(peer.pack(b"c CAPABILITY\r\nz COMPRESS DEFLATE\r\n")))
        self.assertNotIn(b"COMPRESS=DEFLATE", out)
        self.assertIn(b"z NO [COMPRESSIONACTIVE]", out)

    def test_bad_mechanism_and_state(self) -> None:
        self.assertIn(b"z BAD", self.s.send(b"z COMPRESS LZ4\r\n"))
        fresh = MemorySession(self)
        fresh.output()
        self.assertIn(b"z BAD", fresh.send(b"z COMPRESS DEFLATE\r\n"))

    def test_regression_garbage_stream_closes(self) -> None:
        """Bytes that are not a DEFLATE stream end the connection, no traceback."""
        self.s.send(b"z COMPRESS DEFLATE\r\n")
        self.s.send(b"\xff\xff\xff\xff garbage")
        self.assertTrue(self.s.transport.disconnecting)

    def test_regression_inflate_bounded(self) -> None:
        """A small bomb is decompressed in bounded pieces."""
        bomb = zlib.compressobj(9, zlib.DEFLATED, -15)
        data = bomb.compress(b"\0" * 10_000_000) + bomb.flush(zlib.Z_SYNC_FLUSH)
        pieces = list(Inflater(chunk=65536).feed(data))
        self.assertEqual(sum(len(p) for p in pieces), 10_000_000)
        self.assertLessEqual(max(len(p) for p in pieces), 65536)

    def test_wrapper_keeps_tls_marker(self) -> None:
        transport = StringTransport()
        directlyProvides(transport, ISSLTransport)
        self.assertTrue(is_secure(DeflateTransport(transport)))


class CompressLoopbackTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.server = LoopbackServer(self)

    async def test_socket_client(self) -> None:
        self.server.deliver(b"Subject: hi\n\nbody\n")

        def session(raw) -> bytes:
            raw.login()
            assert raw.command(b"z COMPRESS DEFLATE")[-1].startswith(b"z OK")
            peer = Peer()
            raw.sock.sendall(peer.pack(b"s SELECT INBOX\r\nf FETCH 1 (BODY.PEEK[])\r\nl LOGOUT\r\n"))
            received = b""
            while b"l OK" not in received:
                chunk = raw.sock.recv(65536)
                if not chunk:
                    break
                received += peer.unpack(chunk)
            return received

        received = await self.server.raw(session)
        self.assertIn(b"body\r\n", received)
        self.assertIn(b"l OK", received)


class PipelineTests(SynchronousTestCase):
    def test_regression_pipelined_commands_after_compress_run(self) -> None:
        """Commands pipelined in one compressed packet all run: resuming reads the buffered lines."""
        s = MemorySession(self)
        s.output()
        s.send(b"a LOGIN alice secret\r\nz COMPRESS DEFLATE\r\n")
        s.server.pauseProducing()
        peer = Peer()
        s.server.dataReceived(peer.pack(b"n NOOP\r\nm NOOP\r\n"))
        self.assertEqual(s.output(), b"")
        s.server.resumeProducing()
        out = peer.unpack(s.output())
        self.assertIn(b"n OK", out)
        self.assertIn(b"m OK", out)


class CompressOverTLSTests(TestCase):
    """IMAPS, then COMPRESS: deflate inside TLS, and the session still counts as secure."""

    timeout = 60
    HOST = "localhost"

    def setUp(self) -> None:
        data = os.path.abspath(self.mktemp())
        self.cert, key = ensure_certificate(data, self.HOST, key_type="ec")
        context = ReloadableContextFactory(self.cert, key)
        self.server = LoopbackServer(self, implicit_tls=context, context_factory=context,
                                     allow_plaintext=PlaintextPolicy(trusted_networks=()))

    async def test_imaps_then_compress(self) -> None:
        self.server.deliver(b"Subject: tls\n\nsecret body\n")

        def session() -> bytes:
            context = ssl.create_default_context(cafile=self.cert)
            raw = socket.create_connection(("127.0.0.1", self.server.port), timeout=30)
            sock = context.wrap_socket(raw, server_hostname=self.HOST)
            reader = sock.makefile("rb")
            reader.readline()
            sock.sendall(b"a LOGIN alice " + PASSWORD.encode() + b"\r\nz COMPRESS DEFLATE\r\n")
            while not reader.readline().startswith(b"z OK"):
                pass
            peer = Peer()
            sock.sendall(peer.pack(b"s SELECT INBOX\r\nf FETCH 1 BODY.PEEK[TEXT]\r\nl LOGOUT\r\n"))
            got = b""
            while b"l OK" not in got:
                chunk = sock.recv(65536)  # nothing is buffered in reader: the server waited for our data
                if not chunk:
                    break
                got += peer.unpack(chunk)
            sock.close()
            return got

        got = await deferToThread(session)
        self.assertIn(b"secret body", got)


class LiteralAfterCompressTests(SynchronousTestCase):
    def test_regression_append_literal_plus_after_compress(self) -> None:
        """mbsync: APPEND with a LITERAL+ literal and more commands in one compressed packet.

        The bytes after the literal were handed back through dataReceived and inflated twice:
        "broken DEFLATE stream" and a dropped connection (or BAD on the next APPEND).
        """
        s = MemorySession(self)
        s.output()
        s.send(b"a LOGIN alice secret\r\nz COMPRESS DEFLATE\r\n")
        peer = Peer()
        msg = b"From: a@example.com\r\nSubject: x\r\n\r\nbody\r\n"
        packet = b"".join(b'%d APPEND INBOX {%d+}\r\n%s\r\n' % (i, len(msg), msg) for i in range(1, 4))
        out = peer.unpack(s.send(peer.pack(packet + b"n NOOP\r\n")))
        self.assertFalse(s.transport.disconnecting)
        for tag in (b"1", b"2", b"3", b"n"):
            self.assertIn(b"\r\n" + tag + b" OK", b"\r\n" + out)
