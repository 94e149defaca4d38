"""Building a Config from text in tests, with a fixed host name."""

from __future__ import annotations

from typing import Iterable

from mailserver.config.parameters import Config, parse_config
from mailserver.errors import ConfigError, Problem

FQDN = "mx.example.org"
BASE = "/etc/mailserver"


def build(
    text: str,
    filename: str = "main.cf",
    overrides: Iterable[tuple[str, str]] = (),
    fqdn: str = FQDN,
) -> tuple[Config, list[Problem]]:
    return parse_config(
        text, filename, base_directory=BASE, overrides=overrides, fqdn=lambda: fqdn
    )


def problems_of(text: str) -> list[str]:
    """Every problem of a configuration that must fail, as printed."""
    try:
        build(text)
    except ConfigError as e:
        return [str(p) for p in e.problems]
    raise AssertionError("no ConfigError raised")
