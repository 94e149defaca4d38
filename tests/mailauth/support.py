"""Shared test data: keys made once per test run, messages, a DNS zone publishing the keys."""

from __future__ import annotations

import functools

from mailserver.mailauth.dkim_keys import SigningKey, generate

MESSAGE = (
    b"From: Alice <alice@example.com>\n"
    b"To: bob@example.org\n"
    b"Subject: Hello  there\n"
    b"Date: Fri, 04 Dec 2026 16:00:00 +0000\n"
    b"Message-ID: <1@example.com>\n"
    b"\n"
    b"Body line one.\n"
    b"Body line two   \n"
    b"\n\n"
)


@functools.lru_cache(maxsize=None)
def keys(domain: str = "example.com", selector: str = "mail") -> tuple[SigningKey, SigningKey]:
    """An RSA-2048 and an Ed25519 key (RSA generation is slow: made once)."""
    return generate(domain, selector, "rsa"), generate(domain, selector, "ed25519")


def key_records(*signing_keys: SigningKey) -> dict[str, list]:
    """Zone entries publishing C{signing_keys} (one name may hold one key here)."""
    return {key.dns_name: [("TXT", key.txt_value)] for key in signing_keys}


def sender_zones(*signing_keys: SigningKey) -> dict[str, dict[str, list]]:
    """
    The loopback DNS server's zones for inbound checks: example.com (these
    keys, SPF for 192.0.2.0/24, DMARC p=reject), example.org (SPF -all,
    DMARC p=quarantine), example.net (SPF ~all), mydomain.test (nothing).
    """
    return {
        "example.com": dict(key_records(*signing_keys), **{
            "example.com": [("TXT", "v=spf1 ip4:192.0.2.0/24 -all")],
            "_dmarc.example.com": [("TXT", "v=DMARC1; p=reject; rua=mailto:d@example.com")],
        }),
        "example.org": {
            "example.org": [("TXT", "v=spf1 -all")],
            "_dmarc.example.org": [("TXT", "v=DMARC1; p=quarantine")],
        },
        "example.net": {"example.net": [("TXT", "v=spf1 ~all")]},
        "mydomain.test": {},
    }
