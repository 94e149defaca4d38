"""
The DKIM part of C{mailserver check}: each C{dkim_signing_domains} domain
has a readable 0600 key for C{dkim_selector}; with C{--dns}, the published
records (looked up through twisted.names) match the keys on disk
(L{dns_findings}, one line of the C{--dns} report per key).
"""

from __future__ import annotations

import os
import stat
from typing import Any, Sequence

from mailserver.cli.dns_records import FAIL, OK, WARN, Finding, guarded
from mailserver.errors import Problem
from mailserver.mailauth.dkim_keys import ALGORITHMS, KeyStore, KeyStoreError, SigningKey
from mailserver.mailauth.dns import DNSLookup


def key_problems(config: Any) -> tuple[list[Problem], list[SigningKey]]:
    """Problems of the signing keys, and the keys found (for L{dns_problems})."""
    file, line = config.where("dkim_signing_domains")
    store = KeyStore(config.dkim_key_directory)
    selector = config.dkim_selector
    problems: list[Problem] = []
    found: list[SigningKey] = []
    for domain in config.dkim_signing_domains:
        if domain == "localhost" or domain.startswith("localhost."):
            continue  # in mydestination by default; never sends to the internet
        try:
            paths = [store.path(domain, selector, algorithm) for algorithm in ALGORITHMS]
        except KeyStoreError as error:
            problems.append(Problem(file, line, f"dkim_signing_domains: {error}"))
            continue
        loose = [path for path in paths if _loose_mode(path)]
        for path in loose:
            problems.append(Problem(path, 0, f"DKIM key of {domain} is readable by others: chmod 600 {path}"))
        try:
            keys = store.load(domain, selector)
        except KeyStoreError as error:
            problems.append(Problem(file, line, f"DKIM key of {domain}: {error}"))
            continue
        if not keys:
            problems.append(Problem(
                file, line, f"no DKIM key for {domain} (selector {selector}): its mail is sent unsigned; "
                f"make one with: mailserver dkim keygen {domain}", "warning"))
        found.extend(keys)
    return problems, found


def _loose_mode(path: str) -> bool:
    try:
        return bool(stat.S_IMODE(os.stat(path).st_mode) & 0o077)
    except OSError:
        return False  # missing or unreadable: load() says so


def _tags(value: bytes) -> dict[str, str]:
    tags = {}
    for part in value.decode("ascii", "replace").split(";"):
        name, sep, tag_value = part.partition("=")
        if sep:
            tags[name.strip()] = "".join(tag_value.split())
    return tags


async def dns_findings(keys: Sequence[SigningKey], lookup: DNSLookup) -> list[Finding]:
    """Is each key published as C{SELECTOR._domainkey.DOMAIN}, with our public key?"""
    findings = []
    for key in keys:
        findings += await guarded("DKIM", key.dns_name, _published(key, lookup))
    return findings


async def _published(key: SigningKey, lookup: DNSLookup) -> list[Finding]:
    records = await lookup.txt_bytes(key.dns_name)
    published = [_tags(record).get("p") for record in records if b"p=" in record]
    if not published:
        return [Finding(WARN, "DKIM", key.dns_name, f"no DKIM record: {key.domain}'s {key.algorithm} signatures "
                        "cannot be verified", key.zone_line())]
    if key.public_base64 not in published:
        return [Finding(FAIL, "DKIM", key.dns_name, "the published key is not the key on disk", key.zone_line())]
    return [Finding(OK, "DKIM", key.dns_name, f"{key.algorithm} key matches {key.domain}'s key on disk")]
