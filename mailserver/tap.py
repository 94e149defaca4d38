"""twistd plugin options: the path to main.cf; makeService builds the service tree."""

from __future__ import annotations

import sys

from twisted.python import usage

from mailserver.errors import ConfigError


class Options(usage.Options):
    synopsis = "[--config PATH]"
    longdesc = (
        "Runs the mail server. Without --config, $MAILSERVER_CONFIG names the file; "
        "without either, an embedded loopback-only default is used."
    )
    optParameters = [["config", "c", None, "Path of the main configuration file (main.cf syntax)."]]


def makeService(options: Options):
    from twisted.internet import reactor

    from mailserver.install import install_default_aliases
    from mailserver.limits import raise_nofile_limit
    from mailserver.locate import EmbeddedRecord, config_path, find_config
    from mailserver.logformat import FastLogFormat
    from mailserver.service import build

    try:
        config, warnings = find_config(options["config"])
    except ConfigError as error:
        raise SystemExit(f"mailserver: configuration error\n{error}") from None
    for warning in warnings:
        print(warning, file=sys.stderr)
    try:
        install_default_aliases(config)  # the embedded default's root/postmaster aliases, at first start
    except OSError as error:
        raise SystemExit(f"mailserver: cannot create the default aliases: {error}") from None
    raise_nofile_limit()  # before build: the descriptor reserve is computed from the raised limit
    try:
        service = build(config, reactor)
    except ConfigError as error:
        raise SystemExit(f"mailserver: configuration error\n{error}") from None
    if config_path(options["config"]) is None:
        # Commands run from other directories find this daemon's data_directory.
        EmbeddedRecord(config.config_directory).setServiceParent(service)
    # twistd's log file formats a timestamp per line; same lines, formatted cheaper.
    FastLogFormat().setServiceParent(service)
    return service
