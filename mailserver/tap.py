"""twistd plugin options: the path to main.cf; makeService builds the service tree."""

from __future__ import annotations

import sys

from twisted.python import usage

from mailserver.errors import ConfigError


class Options(usage.Options):
    synopsis = "[--config PATH]"
    longdesc = "Runs the mail server. Without --config, an embedded loopback-only default is used."
    optParameters = [["config", "c", None, "Path of the main configuration file (main.cf syntax)."]]


def makeService(options: Options):
    from twisted.internet import reactor

    from mailserver.config.parameters import load_config
    from mailserver.limits import raise_nofile_limit
    from mailserver.logformat import FastLogFormat
    from mailserver.service import build

    try:
        config, warnings = load_config(options["config"])
    except ConfigError as error:
        raise SystemExit(f"mailserver: configuration error\n{error}") from None
    for warning in warnings:
        print(warning, file=sys.stderr)
    raise_nofile_limit()  # before build: the descriptor reserve is computed from the raised limit
    try:
        top = build(config, reactor)
    except ConfigError as error:
        raise SystemExit(f"mailserver: configuration error\n{error}") from None
    # twistd's log file formats a timestamp per line; same lines, formatted cheaper.
    FastLogFormat().setServiceParent(top)
    return top
