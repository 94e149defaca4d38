"""The loopback test harness itself."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from mailserver.config.parameters import load_config
from tests.harness import write_config


class HarnessTests(SynchronousTestCase):
    def test_regression_no_real_login_failure_delay(self) -> None:
        """Real-session tests do not wait auth_failure_delay (2 s, 6 s for smtplib's three mechanisms)."""
        config, _ = load_config(write_config(self.mktemp()))
        self.assertEqual(config.auth_failure_delay, 0)

    def test_extra_overrides_the_harness_defaults(self) -> None:
        config, _ = load_config(write_config(self.mktemp(), extra="auth_failure_delay = 3s\n"))
        self.assertEqual(config.auth_failure_delay, 3)
