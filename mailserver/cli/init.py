"""
C{mailserver init-config DIR}: install the commented sample configuration
into an empty configuration directory (what the Docker image does on its
first start with an empty C{/etc/mailserver} volume), then compile its
aliases.  A directory that has a C{mailserver.cf} is left alone.
"""

from __future__ import annotations

import argparse
import os
import sys

from mailserver.install import AlreadyConfigured, default_samples, init_config


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add C{init-config} to the admin tool's parser."""
    parser = subparsers.add_parser("init-config", help="install the sample configuration into an empty directory")
    parser.add_argument("directory", metavar="DIR", help="the configuration directory, e.g. /etc/mailserver")
    parser.add_argument("--samples", metavar="DIR", help=f"where the samples are (default: {default_samples()})")
    parser.set_defaults(func=run_init_config, needs_config=False)


def run_init_config(args: argparse.Namespace, config=None) -> int:
    from mailserver.cli.aliases import compile_all

    try:
        written = init_config(args.directory, args.samples)
    except AlreadyConfigured as existing:
        print(f"mailserver init-config: {existing} exists: nothing changed", file=sys.stderr)
        return 0
    except OSError as error:
        print(f"mailserver init-config: {error}", file=sys.stderr)
        return 1
    for path in written:
        print(f"installed {path}")
    aliases = os.path.join(os.path.abspath(args.directory), "aliases")
    return compile_all([(aliases, True)]) if os.path.exists(aliases) else 0
