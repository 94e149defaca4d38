"""Certificates, TLS clients in threads and a TLS-capable StringTransport for the TLS tests."""

from __future__ import annotations

import datetime
import os
import socket
import ssl
import warnings
from typing import Any, Callable

from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import ISSLTransport, ITLSTransport
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.internet.testing import StringTransport
from twisted.internet.threads import deferToThread
from zope.interface import alsoProvides, implementer

from mailserver.tls import generate_self_signed

HOSTNAME = "mail.example.test"

_pairs: dict[tuple[str, int, str], tuple[bytes, bytes]] = {}


def pair(hostname: str = HOSTNAME, serial: int = 0, key_type: str = "ec") -> tuple[bytes, bytes]:
    """A self-signed (cert PEM, key PEM), made once per (hostname, serial) and test run."""
    key = (hostname, serial, key_type)
    if key not in _pairs:
        _pairs[key] = generate_self_signed(hostname, datetime.datetime.now(datetime.timezone.utc), key_type=key_type)
    return _pairs[key]


def write_pair(directory: str, pem: tuple[bytes, bytes], name: str = "server") -> tuple[str, str]:
    os.makedirs(directory, exist_ok=True)
    cert_path = os.path.join(directory, name + ".crt")
    key_path = os.path.join(directory, name + ".key")
    with open(cert_path, "wb") as f:
        f.write(pem[0])
    with open(key_path, "wb") as f:
        f.write(pem[1])
    return cert_path, key_path


def client_context(
    cafile: str | None = None,
    *,
    minimum: ssl.TLSVersion | None = None,
    maximum: ssl.TLSVersion | None = None,
    ciphers: str | None = None,
    check_hostname: bool = True,
) -> ssl.SSLContext:
    """A Python ssl client context trusting C{cafile} (the self-signed cert)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLSv1_1 is deprecated
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = check_hostname and cafile is not None
        if cafile is None:
            context.verify_mode = ssl.CERT_NONE
        else:
            context.load_verify_locations(cafile)
        if minimum is not None:
            context.minimum_version = minimum
        if maximum is not None:
            context.maximum_version = maximum
        if ciphers is not None:
            context.set_ciphers(ciphers)
    return context


def in_thread(f: Callable[..., Any], *args: Any) -> Deferred:
    """Run a blocking client off the reactor thread."""
    return deferToThread(f, *args)


def tls_connect(port: int, context: ssl.SSLContext, server_hostname: str = HOSTNAME) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=30)
    try:
        return context.wrap_socket(raw, server_hostname=server_hostname)
    except BaseException:
        raw.close()
        raise


def read_line(sock: Any) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(1)
        if not chunk:
            break
        data += chunk
    return data


class Echo(Protocol):
    """Says hello, then echoes: the TLS tests' server."""

    def connectionMade(self) -> None:
        self.factory.connections.append(self)
        self.transport.write(b"hello\r\n")

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)

    def connectionLost(self, reason: Any = None) -> None:
        self.factory.connections.remove(self)
        if not self.factory.connections and self.factory.idle is not None:
            idle, self.factory.idle = self.factory.idle, None
            idle.callback(None)


class EchoFactory(ServerFactory):
    protocol = Echo
    noisy = False

    def __init__(self) -> None:
        self.connections: list[Echo] = []
        self.idle: Deferred | None = None

    def all_closed(self) -> Deferred:
        """Fires once every server-side connection has ended (clean trial reactor)."""
        if not self.connections:
            return succeed(None)
        self.idle = Deferred()
        return self.idle


def listen(test: Any, factory: Any) -> int:
    """Listen on 127.0.0.1 port 0 for the duration of C{test}; return the port number."""
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    test.addCleanup(port.stopListening)
    return port.getHost().port


@implementer(ITLSTransport)
class TLSStringTransport(StringTransport):
    """A StringTransport that can start TLS: it records the context and becomes ISSLTransport."""

    def __init__(self, peer_host: str = "192.0.2.10", secure: bool = False) -> None:
        from twisted.internet.address import IPv4Address, IPv6Address

        address_type = IPv6Address if ":" in peer_host else IPv4Address
        super().__init__(peerAddress=address_type("TCP", peer_host, 50000))
        self.tls_context: Any = None
        self.written_before_tls: bytes | None = None
        if secure:
            alsoProvides(self, ISSLTransport)

    def setTcpNoDelay(self, enabled: bool) -> None:
        """ISSLTransport extends ITCPTransport."""

    def startTLS(self, context: Any, normal: bool = True) -> None:
        if ISSLTransport.providedBy(self):
            raise RuntimeError("TLS already started")
        self.tls_context = context
        self.written_before_tls = self.value()
        alsoProvides(self, ISSLTransport)
