"""
Sieve evaluation cost: compile time of a typical user script and runs per
second over a small message, and a ``body :contains`` over a 1 MiB one
(the most a script sees).  Pure CPU, one thread::

    python bench/sieve_eval.py --runs 2000
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from mailserver.sieve.checker import compile_script  # noqa: E402
from mailserver.sieve.interpreter import Environment, run  # noqa: E402
from mailserver.sieve.message import SieveEnvelope, SieveMessage  # noqa: E402

SCRIPT = """require ["fileinto", "imap4flags", "variables", "envelope", "subaddress", "regex", "vacation", "body"];
if anyof (header :contains "list-id" "announce", address :domain "from" "lists.example.org") { fileinto "Lists"; stop; }
if header :regex "subject" "^\\\\[(urgent|alert)\\\\]" { addflag "\\\\Flagged"; }
if envelope :detail "to" "*" { fileinto "plus/${1}"; }
if header :matches "subject" "*invoice*" { fileinto :flags "\\\\Seen" "Invoices"; }
if body :contains "unsubscribe" { fileinto "Newsletters"; }
vacation :days 7 :subject "Away" "I am away until Monday.";
"""
SMALL = b"From: a@example.net\nTo: alice+shop@example.com\nSubject: your invoice 42\n\n" + b"hello\n" * 50
LARGE = b"From: a@example.net\nTo: alice@example.com\nSubject: big\n\n" + b"x" * 100 + b"\n" * 1 + (b"y" * 79 + b"\n") * 13000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=2000)
    args = parser.parse_args()
    start = time.perf_counter()
    for _ in range(100):
        script = compile_script(SCRIPT)
    compile_ms = (time.perf_counter() - start) / 100 * 1000
    envelope = SieveEnvelope("a@example.net", "alice+shop@example.com")
    start = time.perf_counter()
    for _ in range(args.runs):
        run(script, Environment(SieveMessage(SMALL), envelope, "+"))
    small_rate = args.runs / (time.perf_counter() - start)
    start = time.perf_counter()
    for _ in range(20):
        run(script, Environment(SieveMessage(LARGE), envelope, "+"))
    large_ms = (time.perf_counter() - start) / 20 * 1000
    print(f"compile: {compile_ms:.2f} ms; small message: {small_rate:.0f} runs/s; "
          f"1 MiB message with body test: {large_ms:.1f} ms/run")


if __name__ == "__main__":
    main()
