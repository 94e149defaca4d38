"""Fuzz: main.cf syntax, $name expansion, every parameter's value type, the whole Config build."""

from __future__ import annotations

from hypothesis import given, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from mailserver.config.endpoints import parse_endpoint
from mailserver.config.expand import ExpansionError, expand
from mailserver.config.maincf import parse_main_cf
from mailserver.config.parameters import DECLARED, parse_config
from mailserver.errors import ConfigError
from tests.fuzz.bounds import bounded
from tests.fuzz.strategies import salted

NAMES = sorted(DECLARED)
MAIN_CF_TOKENS = ["\n", " ", "\t", " = ", "=", "#", "$", "${", "}", "$(", ")", "?", ":", ",", "\\", "yes", "no",
                  "0", "100", "10s", "tcp:25", "127.0.0.1", "[::1]", "regexp:", "/etc/x", "example.com"] + NAMES
VALUE_TOKENS = [" ", ",", "\t", "$", "${", "}", "?", ":", "[", "]", "/", ".", "-", "0", "1", "65535", "99999999999",
                "s", "m", "h", "d", "w", "yes", "no", "tcp:", "ssl:", "unix:", "port=", "interface=", "::",
                "127.0.0.1", "192.0.2.0/24", "fe80::/10", "all", "loopback-only", "ipv4", "ipv6", "regexp:", "pcre:",
                "hash:", "TLSv1.2", ">=", "!", "\\", "=", "example.com", "*", "²", "٣"]


class MainCfTests(SynchronousTestCase):
    @given(salted(MAIN_CF_TOKENS))
    def test_parse_main_cf_never_raises(self, text: str) -> None:
        settings, problems = bounded(parse_main_cf, text, "main.cf")
        lines = text.count("\n") + 1
        for setting in settings:
            self.assertTrue(1 <= setting.line <= lines, setting)
        for problem in problems:
            self.assertTrue(0 <= problem.line <= lines, problem)

    @given(salted(VALUE_TOKENS + ["$myhostname", "${a?b}", "${a:b}", "$$"]),
           st.dictionaries(st.sampled_from(["a", "b", "myhostname", "x_y"]), st.text(max_size=20)))
    def test_expand_raises_only_expansion_error(self, text: str, values: dict[str, str]) -> None:
        bounded(expand, text, values.get, allowed=(ExpansionError,))

    @given(st.sampled_from(NAMES), salted(VALUE_TOKENS))
    def test_value_types_raise_only_value_error(self, name: str, text: str) -> None:
        bounded(DECLARED[name].type.parse, text, "/etc/mailserver", allowed=(ValueError,))

    @given(salted(VALUE_TOKENS))
    def test_endpoints_raise_only_value_error(self, text: str) -> None:
        bounded(parse_endpoint, text, allowed=(ValueError,))

    @given(salted(MAIN_CF_TOKENS))
    def test_parse_config_raises_only_config_error(self, text: str) -> None:
        def build(text: str) -> object:
            return parse_config(text, "/etc/mailserver/main.cf", base_directory="/etc/mailserver",
                                fqdn=lambda: "mx.example.com")

        bounded(build, text, allowed=(ConfigError,))
