"""C{mailserver init-config}, the embedded default's aliases, and binding before dropping root."""

from __future__ import annotations

import os
import stat

from twisted.application.service import MultiService
from twisted.internet.testing import MemoryReactor
from twisted.trial.unittest import TestCase

from mailserver.cli.checks import check_files
from tests.cli.test_main import run
from mailserver.config.parameters import load_config
from mailserver.install import SAMPLE_FILES, install_default_aliases
from mailserver.service import Listener




class InitConfigTests(TestCase):
    def setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())

    def test_regression_empty_config_volume_gets_the_sample_config(self) -> None:
        """docker run -v /srv/mail/etc:/etc/mailserver exited 1: the empty bind mount hid the config."""
        os.makedirs(self.directory)  # an empty volume
        status, out, err = run("init-config", self.directory)
        self.assertEqual(status, 0, err)
        for name in (*SAMPLE_FILES, "passwd", "aliases.db"):
            self.assertTrue(os.path.exists(os.path.join(self.directory, name)), name)
        self.assertEqual(stat.S_IMODE(os.stat(os.path.join(self.directory, "passwd")).st_mode), 0o600)
        config, _ = load_config(os.path.join(self.directory, "mailserver.cf"))
        self.assertEqual(config.passwd_file, os.path.join(self.directory, "passwd"))
        self.assertEqual([str(m.path) for m in config.alias_maps], [os.path.join(self.directory, "aliases")])
        self.assertEqual([p for p in check_files(config) if p.severity == "error" and "data_directory" not in p.message], [])

    def test_configured_directory_left_alone(self) -> None:
        os.makedirs(self.directory)
        main_cf = os.path.join(self.directory, "mailserver.cf")
        with open(main_cf, "w") as handle:
            handle.write("myhostname = mine.example\n")
        status, _, err = run("init-config", self.directory)
        self.assertEqual(status, 0)
        self.assertIn("nothing changed", err)
        self.assertEqual(os.listdir(self.directory), ["mailserver.cf"])

    def test_missing_samples_fail_cleanly(self) -> None:
        status, _, err = run("init-config", self.directory, "--samples", self.directory + "-none")
        self.assertEqual(status, 1)
        self.assertIn("mailserver init-config:", err)
        self.assertFalse(os.path.exists(os.path.join(self.directory, "mailserver.cf")))


class DefaultAliasesTests(TestCase):
    def test_embedded_default_creates_its_aliases_once(self) -> None:
        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        config, _ = load_config(None, base_directory=base)
        path = install_default_aliases(config)
        self.assertEqual(path, os.path.join(base, "mailserver-data", "aliases"))
        with open(path) as handle:
            self.assertIn("root:           postmaster", handle.read())
        with open(path, "w") as handle:
            handle.write("root: alice@localhost\n")
        self.assertIsNone(install_default_aliases(config))
        with open(path) as handle:
            self.assertEqual(handle.read(), "root: alice@localhost\n")

    def test_a_file_config_is_never_given_aliases(self) -> None:
        path = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(__file__))), "etc", "mailserver.cf")
        config, _ = load_config(path)
        self.assertIsNone(install_default_aliases(config))

    def test_regression_sample_aliases_name_no_missing_user(self) -> None:
        """etc/aliases pointed root (and so postmaster) at harry, a user that does not exist."""
        from mailserver.tables.aliases import TargetKind, parse_aliases

        path = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(__file__))), "etc", "aliases")
        with open(path) as handle:
            table, problems = parse_aliases(handle.read(), path)
        self.assertEqual(problems, [])
        for name in table:
            for target in table.get(name).targets:
                if target.kind is TargetKind.LOCAL:
                    self.assertTrue(target.value == "postmaster" or target.value in table, (name, target))


class PrivilegedBindTests(TestCase):
    def test_listeners_bind_before_privileges_are_dropped(self) -> None:
        """twistd --uid: privilegedStartService runs as root, startService after the switch."""
        from twisted.internet.endpoints import TCP4ServerEndpoint
        from twisted.internet.protocol import Factory

        reactor = MemoryReactor()
        top = MultiService()
        listener = Listener("smtpd_listen", "tcp:25", TCP4ServerEndpoint(reactor, 25), Factory(), reactor)
        listener.setServiceParent(top)
        top.privilegedStartService()
        self.assertEqual([port[0] for port in reactor.tcpServers], [25])
        self.assertIsNotNone(listener.port)
        top.startService()
        self.assertEqual(len(reactor.tcpServers), 1)  # not bound twice
