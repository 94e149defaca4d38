"""Macro values as Postfix sends them, and what each stage gets by default."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from mailserver.milter import codec
from mailserver.milter.client import MilterSession
from mailserver.milter.macros import MacroContext
from mailserver.milter.settings import milter_settings
from tests.config.helpers import build
from tests.milter.fakes import ScriptedMilter


class MacroTests(SynchronousTestCase):
    def test_values(self) -> None:
        config, _ = build("smtpd_milters = inet:127.0.0.1:11332\nmyhostname = mx.example.com\n")
        context = MacroContext.from_config(
            config, client_addr="192.0.2.10", client_port=40000, daemon_addr="192.0.2.1"
        ).with_(queue_id="4AB12C0001", mail_addr="alice@example.com", auth_type="PLAIN",
                auth_authen="alice", rcpt_addr="bob@example.org", rcpt_mailer="local")  # fmt: skip
        values = context.values()
        self.assertEqual(values["j"], "mx.example.com")
        self.assertEqual(values["{daemon_name}"], "mx.example.com")
        self.assertEqual(values["v"], "mailserver")
        self.assertEqual(values["_"], "unknown [192.0.2.10]")
        self.assertEqual(values["{client_addr}"], "192.0.2.10")
        self.assertEqual(values["{mail_host}"], "example.com")
        self.assertEqual(values["{rcpt_host}"], "example.org")
        self.assertEqual(values["{auth_authen}"], "alice")
        self.assertNotIn("{tls_version}", values)  # empty values are not sent
        self.assertEqual(MacroContext().values(), {})

    def test_default_lists_per_stage(self) -> None:
        """With Postfix's default lists, connect gets j/{daemon_name}/{daemon_addr}/v/_, MAIL i and auth."""
        config, _ = build("smtpd_milters = inet:127.0.0.1:11332\nmyhostname = mx.example.com\n")
        (settings,) = milter_settings(config)
        values = MacroContext.from_config(config, client_addr="192.0.2.10", daemon_addr="192.0.2.1",
                                          queue_id="Q1", auth_type="PLAIN", auth_authen="alice",
                                          mail_addr="a@example.com").values()  # fmt: skip
        milter = ScriptedMilter()
        session = MilterSession(settings, milter.clock, milter.connect)
        d = session.connect(values, "unknown", codec.FAMILY_INET, 40000, "192.0.2.10")
        milter.negotiate()
        self.assertEqual(milter.commands()[1], codec.Macro(b"C", (
            ("j", "mx.example.com"), ("{daemon_name}", "mx.example.com"), ("{daemon_addr}", "192.0.2.1"),
            ("v", "mailserver"), ("_", "unknown [192.0.2.10]"),
        )))  # fmt: skip
        milter.reply(codec.Continue())
        self.successResultOf(d)
        d = session.mail_from(["<a@example.com>"], values)
        self.assertEqual(milter.commands()[0], codec.Macro(b"M", (
            ("i", "Q1"), ("{auth_type}", "PLAIN"), ("{auth_authen}", "alice"),
            ("{mail_addr}", "a@example.com"), ("{mail_host}", "example.com"), ("{mail_mailer}", "smtp"),
        )))  # fmt: skip
        milter.reply(codec.Continue())
        self.successResultOf(d)
