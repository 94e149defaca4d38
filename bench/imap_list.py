"""
Benchmark LIST/LSUB wildcard matching (issue 17 item 1).

A backtracking regex took 23 s for ``LIST "" "*a*a*a*a*ab"`` against one
200-character folder name, about 40 times more per extra wildcard.  This
times L{mailserver.imap.listing} on hostile patterns against N folders
with long names (255 characters, and 16 levels), the pure matching that
the server runs in its thread pool.

Usage: python bench/imap_list.py [--folders 1000]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mailserver.imap import listing  # noqa: E402

PATTERNS = [
    "*a*a*a*a*ab",
    "*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*ab",
    "%a" * 120 + "b",
    "%a%" * 60 + "b",
    "*" + "a*" * 250 + "b",
    "".join(chr(ord("a") + i % 3) + "*%" for i in range(200)),
    "*",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folders", type=int, default=1000)
    args = parser.parse_args()
    count = min(max(args.folders, 1), 100_000)
    plain = ["a" * (251 - len(str(i))) + "x%d" % i for i in range(count // 2)]
    plain += ["/".join(["a" * 14] * 16)[:240] + "%d" % i for i in range(count - len(plain))]
    # names that pass the cheap filters, so every one costs the full match
    hostile = ["a" * (250 - len(str(i))) + "b%db" % i for i in range(count // 2)]
    hostile += ["/".join(["a" * 14] * 16)[:239] + "b%db" % i for i in range(count - len(hostile))]
    for title, names in (("plain", plain), ("hostile", hostile)):
        print(f"{count} {title} folders, names of 240-255 characters, half of them 16 levels deep")
        run(names)


def run(names: list[str]) -> None:
    for pattern in PATTERNS:
        start = time.perf_counter()
        found = listing.list_folders(names, "", pattern, {})
        lsub = listing.list_subscribed(names, names, "", pattern, {})
        elapsed = time.perf_counter() - start
        shown = pattern if len(pattern) < 40 else pattern[:37] + "..."
        print(f"LIST+LSUB {shown!r:44} {len(found):6} / {len(lsub):6} matches  {elapsed * 1000:8.1f} ms")


if __name__ == "__main__":
    main()
