"""
C{mailserver dkim keygen DOMAIN [SELECTOR]} and C{mailserver dkim show
[DOMAIN]}: make DKIM keys (RSA-2048 and Ed25519) in C{dkim_key_directory}
and print the DNS TXT records to publish.
"""

from __future__ import annotations

import argparse
import sys

from mailserver.mailauth.dkim_keys import ALGORITHMS, KeyStore, KeyStoreError, SigningKey, generate

FAILURE = 1


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add C{dkim keygen} and C{dkim show} to the admin tool's parser."""
    dkim = subparsers.add_parser("dkim", help="DKIM signing keys and the DNS records to publish")
    commands = dkim.add_subparsers(dest="dkim_command", metavar="COMMAND")
    commands.required = True
    keygen = commands.add_parser("keygen", help="write new RSA-2048 and Ed25519 keys (0600); print the records")
    keygen.add_argument("domain")
    keygen.add_argument("selector", nargs="?", help="default: dkim_selector")
    keygen.add_argument("--algorithm", choices=ALGORITHMS, action="append",
                        help="only this key type (repeatable; default: both)")
    keygen.add_argument("--replace", action="store_true", help="overwrite existing keys (rotation)")
    keygen.set_defaults(func=run_keygen)
    show = commands.add_parser("show", help="print the TXT records of the keys on disk")
    show.add_argument("domain", nargs="?", help="only this domain")
    show.set_defaults(func=run_show)


def record_lines(key: SigningKey) -> str:
    """The record, as a zone-file line and as the plain value some DNS panels want."""
    return f"{key.zone_line()}\n  ; value: {key.txt_value}"


def run_keygen(args: argparse.Namespace, config) -> int:
    store = KeyStore(config.dkim_key_directory)
    selector = args.selector or config.dkim_selector
    made = []
    try:
        for algorithm in args.algorithm or ALGORITHMS:
            key = generate(args.domain, selector, algorithm)
            path = store.save(key, replace=args.replace)
            made.append(key)
            print(f"; {algorithm} key written to {path}", file=sys.stderr)
    except (KeyStoreError, FileExistsError) as error:
        print(f"mailserver dkim keygen: {error} (use --replace to rotate)"
              if isinstance(error, FileExistsError) else f"mailserver dkim keygen: {error}", file=sys.stderr)
        return FAILURE
    except OSError as error:
        print(f"mailserver dkim keygen: {error}", file=sys.stderr)
        return FAILURE
    print("; Publish in DNS:")
    for key in made:
        print(record_lines(key))
    if made and made[0].domain not in config.dkim_signing_domains:
        print(f"; note: {made[0].domain} is not in dkim_signing_domains; its mail is not signed yet", file=sys.stderr)
    return 0


def run_show(args: argparse.Namespace, config) -> int:
    store = KeyStore(config.dkim_key_directory)
    try:
        keys = store.all_keys()
    except OSError as error:
        print(f"mailserver dkim show: {error}", file=sys.stderr)
        return FAILURE
    if args.domain:
        keys = [key for key in keys if key.domain == args.domain.lower().rstrip(".")]
    for key in keys:
        signing = "signing" if key.domain in config.dkim_signing_domains and key.selector == config.dkim_selector \
            else "not used (domain or selector not configured)"
        print(f"; {key.domain} selector {key.selector} {key.algorithm}: {signing}")
        print(record_lines(key))
    if not keys:
        print(f"no DKIM keys in {store.directory}; make one with: mailserver dkim keygen DOMAIN", file=sys.stderr)
        return FAILURE
    return 0
