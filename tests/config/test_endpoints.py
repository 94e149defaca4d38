"""Tests for endpoint description checking, cross-checked against Twisted."""

from __future__ import annotations

from twisted.internet import endpoints
from twisted.internet.testing import MemoryReactor
from twisted.trial.unittest import SynchronousTestCase

from mailserver.config.endpoints import bind_to, escape, parse_endpoint


class ParseEndpointTests(SynchronousTestCase):
    def test_good_descriptions(self) -> None:
        """Accepted descriptions map positional arguments as Twisted does."""
        cases = {
            "tcp:25": ("tcp", {"port": "25"}),
            "tcp:3025:interface=127.0.0.1": ("tcp", {"port": "3025", "interface": "127.0.0.1"}),
            "tcp:25:127.0.0.1": ("tcp", {"port": "25", "interface": "127.0.0.1"}),
            "tcp:port=25:backlog=10": ("tcp", {"port": "25", "backlog": "10"}),
            "tcp6:25:interface=\\:\\:1": ("tcp6", {"port": "25", "interface": "::1"}),
            "ssl:993:privateKey=key.pem:certKey=cert.pem": (
                "ssl",
                {"port": "993", "privateKey": "key.pem", "certKey": "cert.pem"},
            ),
            "unix:/run/mailserver/smtp.sock:mode=660": (
                "unix",
                {"address": "/run/mailserver/smtp.sock", "mode": "660"},
            ),
            "systemd:domain=INET6:name=smtp": ("systemd", {"domain": "INET6", "name": "smtp"}),
        }
        for description, (kind, arguments) in cases.items():
            endpoint = parse_endpoint(description)
            self.assertEqual((endpoint.type, endpoint.arguments), (kind, arguments), description)
            self.assertEqual(endpoint.description, description)

    def test_twisted_agrees(self) -> None:
        """What we accept, Twisted parses to the same port and interface."""
        reactor = MemoryReactor()
        for description, port, interface in [
            ("tcp:25", 25, ""),
            ("tcp:3025:interface=127.0.0.1", 3025, "127.0.0.1"),
            ("tcp:25:127.0.0.1", 25, "127.0.0.1"),
            ("tcp6:143:interface=\\:\\:1", 143, "::1"),
        ]:
            parse_endpoint(description)
            endpoint = endpoints.serverFromString(reactor, description)
            self.assertEqual((endpoint._port, endpoint._interface), (port, interface))
        unix = endpoints.serverFromString(reactor, "unix:/tmp/x.sock:mode=660")
        self.assertEqual(unix._address, parse_endpoint("unix:/tmp/x.sock:mode=660").arguments["address"])

    def test_bad_descriptions(self) -> None:
        for description, message in [
            ("25", "'25': write tcp:25 for a TCP port"),
            ("udp:25", "unknown endpoint type 'udp' (known: tcp, tcp6, ssl, unix, systemd)"),
            ("tcp", "'tcp': tcp needs a port"),
            ("tcp:http", "port must be a number from 0 to 65535, got 'http'"),
            ("tcp:65536", "port must be a number from 0 to 65535, got '65536'"),
            ("tcp:-1", "port must be a number"),
            ("tcp:25:interface=localhost", "interface must be an IP address, got 'localhost'"),
            ("tcp6:25:interface=127.0.0.1", "tcp6 needs an IPv6 interface, got '127.0.0.1'"),
            ("tcp:25:nosuch=1", "tcp has no argument 'nosuch' (known: port, interface, backlog)"),
            ("tcp:25:127.0.0.1:50:extra", "too many arguments for tcp"),
            ("tcp:25:port=26", "port given twice"),
            ("tcp:25:backlog=0", "backlog must be a number from 1 to 65535"),
            ("unix:", "unix needs a socket path"),
            ("unix:/x:mode=999", "mode must be octal"),
            ("unix:/x:lockfile=2", "lockfile must be 0 or 1"),
            ("systemd:domain=INET", "give exactly one of index= or name="),
            ("systemd:domain=IPX:index=0", "domain must be INET, INET6 or UNIX"),
            (":25", "does not start with an endpoint type"),
            ("tcp:25\\", "a backslash at the end escapes nothing"),
        ]:
            error = self.assertRaises(ValueError, parse_endpoint, description)
            self.assertIn(message, str(error), description)

    def test_escape(self) -> None:
        self.assertEqual(escape("::1"), "\\:\\:1")
        self.assertEqual(escape("a=b\\c"), "a\\=b\\\\c")

    def test_bind_to(self) -> None:
        """tcp/tcp6 follow the address family; ssl keeps its type."""
        tcp, tcp6 = parse_endpoint("tcp:25"), parse_endpoint("tcp6:25:backlog=5")
        ssl = parse_endpoint("ssl:993:privateKey=k.pem")
        self.assertEqual(bind_to(tcp, "127.0.0.1"), "tcp:25:interface=127.0.0.1")
        self.assertEqual(bind_to(tcp, "::1"), "tcp6:25:interface=\\:\\:1")
        self.assertEqual(bind_to(tcp6, "127.0.0.1"), "tcp:25:backlog=5:interface=127.0.0.1")
        self.assertEqual(bind_to(ssl, "::1"), "ssl:993:privateKey=k.pem:interface=\\:\\:1")
        endpoint = endpoints.serverFromString(MemoryReactor(), bind_to(tcp, "::1"))
        self.assertEqual((endpoint._port, endpoint._interface), (25, "::1"))


class BacklogTests(SynchronousTestCase):
    """Issue 18: Twisted's default listen backlog of 50 left a burst of clients without a banner."""

    def test_added_where_none_given(self) -> None:
        from mailserver.config.endpoints import with_backlog

        self.assertEqual(with_backlog("tcp:25", 4096), "tcp:25:backlog=4096")
        self.assertEqual(with_backlog("tcp6:25:interface=\\:\\:1", 100), "tcp6:25:interface=\\:\\:1:backlog=100")
        self.assertEqual(with_backlog("unix:/run/s.sock", 100), "unix:/run/s.sock:backlog=100")
        endpoint = endpoints.serverFromString(MemoryReactor(), with_backlog("tcp:25:interface=127.0.0.1", 4096))
        self.assertEqual((endpoint._port, endpoint._interface, endpoint._backlog), (25, "127.0.0.1", 4096))

    def test_kept_where_given_or_inherited(self) -> None:
        from mailserver.config.endpoints import with_backlog

        for description in ("tcp:25:backlog=10", "tcp:25:127.0.0.1:10", "systemd:domain=INET:index=0"):
            self.assertEqual(with_backlog(description, 4096), description)


class UnixModeTests(SynchronousTestCase):
    """Our unix sockets are 0660 unless the description says otherwise (Twisted's default is 0666)."""

    def test_regression_unix_listener_mode_defaults_to_0660(self) -> None:
        from mailserver.config.endpoints import with_unix_mode

        self.assertEqual(with_unix_mode("unix:/run/s.sock"), "unix:/run/s.sock:mode=660")
        endpoint = endpoints.serverFromString(MemoryReactor(), with_unix_mode("unix:/run/s.sock:backlog=9"))
        self.assertEqual(endpoint._mode, 0o660)

    def test_mode_kept_where_given_or_not_unix(self) -> None:
        from mailserver.config.endpoints import with_unix_mode

        for description in ("unix:/run/s.sock:mode=666", "unix:/run/s.sock:666", "tcp:25", "systemd:domain=UNIX:index=0"):
            self.assertEqual(with_unix_mode(description), description)
