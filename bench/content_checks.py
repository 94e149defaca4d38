"""
The CPU cost of Postfix-style content checks (L{ContentChecks.inspect}),
without SMTP or disk: 10 KB messages through empty tables, through one
never-matching rule per table (the MIME walk alone) and through 100 header
rules + 100 body rules; then single inspections of 10 MB messages.

Importing this module has no side effects; run it to print the figures::

    python bench/content_checks.py [--count 2000]
"""

from __future__ import annotations

import argparse
import time

from mailserver.delivery.checks import ContentChecks
from mailserver.tables.regexp import compile_regexp_table

#: Upper bound on --count, so a typo cannot run for hours.
MAX_COUNT = 1_000_000
WORDS = (
    "lottery casino pharmacy replica watches diploma inheritance beneficiary "
    "crypto bitcoin investment guaranteed winner prize claim urgent"
).split()


def header_rules(count: int) -> str:
    """C{count} realistic header rules that the sample message does not trigger."""
    lines = []
    for index in range(count):
        word = f"{WORDS[index % len(WORDS)]}{index}"
        kind = index % 4
        if kind == 0:
            lines.append(f"/^Subject:.*\\b{word}\\b/ REJECT spam {index}")
        elif kind == 1:
            lines.append(f"/^From:.*@{word}\\.example$/ REJECT sender {index}")
        elif kind == 2:
            lines.append(f"/^X-Mailer: {word}/ HOLD mailer {index}")
        else:
            lines.append(f"/^(To|Cc):.*{word}@/ WARN recipient {index}")
    return "\n".join(lines) + "\n"


def body_rules(count: int) -> str:
    """C{count} body rules that the sample message does not trigger."""
    lines = []
    for index in range(count):
        word = f"{WORDS[index % len(WORDS)]}{index}"
        if index % 2:
            lines.append(f"/^{word} / REJECT body {index}")
        else:
            lines.append(f"/\\b{word}\\b/ REJECT body {index}")
    return "\n".join(lines) + "\n"


def message(size: int) -> bytes:
    """A plain message of about C{size} bytes: 12 headers, 70-byte lines."""
    head = (
        b"Received: from client.example (client.example [192.0.2.1])\n\tby mx.example with ESMTP id 4F2A1\n"
        b"From: Alice Example <alice@example.org>\n"
        b"To: Bob Example <bob@example.net>\n"
        b"Cc: carol@example.net\n"
        b"Subject: Minutes of the weekly meeting\n"
        b"Date: Tue, 1 Apr 2025 10:00:00 +0000\n"
        b"Message-ID: <20250401100000.4F2A1@example.org>\n"
        b"MIME-Version: 1.0\n"
        b"Content-Type: text/plain; charset=utf-8\n"
        b"Content-Transfer-Encoding: 8bit\n"
        b"X-Mailer: Example Mail 1.0\n"
        b"\n"
    )
    line = b"The quick brown fox jumps over the lazy dog, then reads the minutes.\n"
    body = line * max(1, (size - len(head)) // len(line))
    return head + body


def multipart_message(size: int, parts: int) -> bytes:
    """About C{size} bytes in C{parts} base64 attachments."""
    head = (
        b"From: alice@example.org\nTo: bob@example.net\nSubject: files\nMIME-Version: 1.0\n"
        b'Content-Type: multipart/mixed; boundary="=_b"\n\n'
    )
    chunk = b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAx\n"
    per_part = max(1, size // parts // len(chunk))
    out = [head]
    for index in range(parts):
        out.append(
            b"--=_b\nContent-Type: application/octet-stream; name=\"file%d.bin\"\n"
            b"Content-Transfer-Encoding: base64\n\n" % index
        )
        out.append(chunk * per_part)
    out.append(b"--=_b--\n")
    return b"".join(out)


def throughput(checks: ContentChecks, data: bytes, count: int) -> float:
    """Messages per second over C{count} inspections."""
    started = time.perf_counter()
    for _ in range(count):
        verdict = checks.inspect(None, data)
        assert verdict.error is None and verdict.message is data
    return count / (time.perf_counter() - started)


def once(checks: ContentChecks, data: bytes) -> float:
    started = time.perf_counter()
    checks.inspect(None, data)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=2000, help="inspections per figure (default 2000)")
    args = parser.parse_args()
    count = max(1, min(args.count, MAX_COUNT))

    headers = compile_regexp_table(header_rules(100), "header_checks")
    bodies = compile_regexp_table(body_rules(100), "body_checks")
    one_header = compile_regexp_table("/^X-Never-Seen:/ REJECT\n", "one")
    one_body = compile_regexp_table("/^never seen$/ REJECT\n", "one")
    empty = ContentChecks(None, None, None, None, 51200, True)
    walk_only = ContentChecks(one_header, one_header, one_header, one_body, 51200, True)
    full = ContentChecks(headers, headers, headers, bodies, 51200, True)

    data = message(10 * 1024)
    print(f"10 KB message ({len(data)} bytes), {count} inspections each:")
    base = throughput(empty, data, count)
    results = [
        ("empty tables", base),
        ("1 header + 1 body rule (MIME walk)", throughput(walk_only, data, count)),
        ("100 header + 100 body rules", throughput(full, data, count)),
    ]
    for label, rate in results:
        print(f"  {label:<38} {rate:>10.0f} msg/s  {1e6 / rate:>8.1f} us/msg")
    walk, rules = results[1][1], results[-1][1]
    print(f"  cost of 100+100 rules: {1e6 / rules - 1e6 / base:.1f} us per message; throughput ratio "
          f"empty/rules {base / rules:.1f}x, MIME walk/rules {walk / rules:.2f}x")

    big = message(10 * 1024 * 1024)
    print("10 MB messages, one inspection each (100+100 rules):")
    print(f"  plain text, body_checks_size_limit=51200      {once(full, big) * 1000:8.1f} ms")
    parts = multipart_message(10 * 1024 * 1024, 100)
    print(f"  100 base64 attachments, limit=51200           {once(full, parts) * 1000:8.1f} ms")
    unlimited = ContentChecks(headers, headers, headers, bodies, 64 * 1024 * 1024, True)
    print(f"  plain text, every line checked (limit=64 MB)  {once(unlimited, big) * 1000:8.1f} ms")


if __name__ == "__main__":
    main()
