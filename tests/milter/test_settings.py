"""Milter addresses and per-milter settings (pure)."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from mailserver.milter.settings import MilterSpec, milter_settings, parse_address, parse_milters
from tests.config.helpers import build


class ParseTests(SynchronousTestCase):
    def test_addresses(self) -> None:
        self.assertEqual(parse_address("inet:localhost:11332"), MilterSpec("inet", "localhost", 11332))
        self.assertEqual(parse_address("inet:[::1]:8891"), MilterSpec("inet", "::1", 8891))
        self.assertEqual(parse_address("unix:/run/x.sock"), MilterSpec("unix", path="/run/x.sock"))
        self.assertEqual(parse_address("local:/run/x.sock"), MilterSpec("unix", path="/run/x.sock"))
        self.assertEqual(parse_address("inet:[::1]:8891").name, "inet:[::1]:8891")
        for bad in ("inet:host", "inet:host:0", "inet:host:99999", "tcp:host:1", "unix:", "x",
                    "inet:[::1:25", "inet::25"):  # fmt: skip
            self.assertRaises(ValueError, parse_address, bad)

    def test_list_with_braces(self) -> None:
        """Postfix 3 per-milter settings in braces."""
        specs = parse_milters(
            "{ inet:127.0.0.1:11332, default_action = accept, command_timeout = 1m },"
            " unix:/run/opendkim.sock"
        )
        self.assertEqual(specs[0].overrides, (("default_action", "accept"), ("command_timeout", 60.0)))
        self.assertEqual(specs[1], MilterSpec("unix", path="/run/opendkim.sock"))
        for bad in ("{ inet:h:1, colour = red }", "{ inet:h:1, default_action = maybe }", "{ }",
                    "inet:h:1 }", "{ inet:h:1, protocol = 5 }", "{ inet:h:1, command_timeout }"):  # fmt: skip
            self.assertRaises(ValueError, parse_milters, bad)

    def test_from_config(self) -> None:
        """Shared settings from the parameters, per-milter overrides on top."""
        config, _ = build(
            "smtpd_milters = { inet:127.0.0.1:11332, default_action = accept }, unix:/x\n"
            "milter_command_timeout = 10s\nmilter_protocol = 4\nmilter_rcpt_macros = i\n"
        )
        first, second = milter_settings(config)
        self.assertEqual((first.default_action, second.default_action), ("accept", "tempfail"))
        self.assertEqual((first.command_timeout, first.content_timeout, first.protocol), (10.0, 300.0, 4))
        self.assertEqual(first.macros[b"R"], ("i",))
        self.assertEqual(first.macros[b"C"], ("j", "{daemon_name}", "{daemon_addr}", "v", "_"))
        self.assertEqual(milter_settings(config, "non_smtpd"), ())
