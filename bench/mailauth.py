"""
The CPU cost of DKIM per 10 KB message, without SMTP, disk or DNS: signing
with RSA-2048, with Ed25519, with both (what the server does), and
verification of each (dkimpy, answers pre-fetched as the server does), plus
the pure SPF/DMARC/Authentication-Results parts of inbound checking.

Importing this module has no side effects; run it to print the figures::

    python bench/mailauth.py [--count 200]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Callable

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from mailserver.mailauth import authresults  # noqa: E402
from mailserver.mailauth.dkim_keys import generate  # noqa: E402
from mailserver.mailauth.dkim_sign import sign_with  # noqa: E402
from mailserver.mailauth.dkim_verify import _Answers, verify_blocking  # noqa: E402
from mailserver.mailauth.dmarc import organizational_domain, parse_record as parse_dmarc  # noqa: E402
from mailserver.mailauth.spf_record import parse_record as parse_spf  # noqa: E402

#: Upper bound on --count, so a typo cannot run for hours.
MAX_COUNT = 100_000


def message(size: int = 10240) -> bytes:
    head = (b"From: Alice <alice@example.com>\nTo: bob@example.org\nSubject: benchmark\n"
            b"Date: Fri, 04 Dec 2026 16:00:00 +0000\nMessage-ID: <bench@example.com>\n\n")
    line = b"The quick brown fox jumps over the lazy dog, again and again and again.\n"
    return head + line * ((size - len(head)) // len(line) + 1)


def per_message(function: Callable[[], object], count: int) -> float:
    """Microseconds per call, best of three rounds."""
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(count):
            function()
        best = min(best, (time.perf_counter() - start) / count)
    return best * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=200, help="messages per round (3 rounds, best kept)")
    parser.add_argument("--size", type=int, default=10240, help="message size in bytes")
    args = parser.parse_args(argv)
    count = max(1, min(args.count, MAX_COUNT))
    rsa, ed = generate("example.com", "mail", "rsa"), generate("example.com", "mail", "ed25519")
    answers = _Answers({rsa.dns_name: rsa.txt_value.encode(), ed.dns_name: ed.txt_value.encode()}, set())
    body = message(args.size)
    signed = {name: sign_with(body, keys) + body for name, keys in
              (("rsa", [rsa]), ("ed25519", [ed]), ("both", [rsa, ed]))}
    assert [r.result for r in verify_blocking(signed["both"], answers).dkim] == ["pass", "pass"]
    rows = [
        ("sign RSA-2048", lambda: sign_with(body, [rsa])),
        ("sign Ed25519", lambda: sign_with(body, [ed])),
        ("sign RSA-2048 + Ed25519 (server default)", lambda: sign_with(body, [rsa, ed])),
        ("verify RSA-2048", lambda: verify_blocking(signed["rsa"], answers)),
        ("verify Ed25519", lambda: verify_blocking(signed["ed25519"], answers)),
        ("verify both signatures", lambda: verify_blocking(signed["both"], answers)),
        ("SPF + DMARC parse, org domain, A-R header", lambda: (
            parse_spf("v=spf1 ip4:192.0.2.0/24 include:_spf.example.net mx -all"),
            parse_dmarc("v=DMARC1; p=reject; rua=mailto:d@example.com"),
            organizational_domain("mail.example.co.uk"),
            authresults.remove_forged(signed["both"], "mx.example.com"),
        )),
    ]
    print(f"{len(body)}-byte message, {count} per round, best of 3 (python {sys.version.split()[0]})")
    for name, function in rows:
        print(f"{name:<44} {per_message(function, count):>9.0f} us/message")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
