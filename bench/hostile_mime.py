"""
The CPU cost of hostile but legal messages through the content checks
(L{ContentChecks.inspect}) with the sample tables in C{etc/}
(header_checks, mime_header_checks, body_checks): about 10 MB each of many
MIME boundaries, many header lines, deep nesting, and the like.  Prints
seconds per MB for each shape, so a quadratic walk shows up as a figure far
above the plain-text one.

Importing this module has no side effects; run it to print the figures::

    PYTHONPATH=. python bench/hostile_mime.py [--size-mb 10] [--profile SHAPE]

``--profile SHAPE`` runs that shape once under cProfile and prints the 25
costliest functions (cumulative).
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import time
from typing import Callable

from mailserver.delivery.checks import ContentChecks
from mailserver.tables.regexp import RuleTable, compile_regexp_table

ETC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "etc")
MB = 1024 * 1024
#: Upper bound on --size-mb, so a typo cannot fill the memory.
MAX_SIZE_MB = 200
HEAD = b"From: alice@example.org\nTo: bob@example.net\nSubject: hostile\nMIME-Version: 1.0\n"


def table(name: str) -> RuleTable:
    path = os.path.join(ETC, name)
    with open(path, encoding="utf-8") as handle:
        return compile_regexp_table(handle.read(), path)


def repeat(size: int, head: bytes, unit: bytes, tail: bytes = b"") -> bytes:
    """C{head}, then C{unit} until about C{size} bytes, then C{tail}."""
    return head + unit * max(1, (size - len(head)) // len(unit)) + tail


def plain(size: int) -> bytes:
    """The baseline: a text message of 70-byte lines."""
    return repeat(size, HEAD + b"\n", b"The quick brown fox jumps over the lazy dog, then reads the minutes.\n")


def many_boundaries(size: int) -> bytes:
    """One multipart of tiny parts: a boundary and a MIME header per ~60 bytes."""
    return repeat(size, HEAD + b'Content-Type: multipart/mixed; boundary="b"\n\n',
                  b"--b\nContent-Type: text/plain\n\nx\n", b"--b--\n")


def many_empty_parts(size: int) -> bytes:
    """Boundary lines only (each opens an empty header block)."""
    return repeat(size, HEAD + b'Content-Type: multipart/mixed; boundary="b"\n\n', b"--b\n", b"--b--\n")


def boundary_lookalikes(size: int) -> bytes:
    """Body lines starting with C{--} that are not the boundary (each stops a body run)."""
    return repeat(size, HEAD + b'Content-Type: multipart/mixed; boundary="b"\n\n--b\n\n', b"--c\n", b"--b--\n")


def many_header_lines(size: int) -> bytes:
    """One primary header block of short header lines, then a one-line body."""
    return repeat(size, HEAD, b"X-Filler: abcdefghijklmnopqrstuvwxyz\n", b"\nbody\n")


def one_folded_header(size: int) -> bytes:
    """One header folded over ~10 MB of continuation lines."""
    return repeat(size, HEAD + b"X-Folded: start\n", b" continued folded header text\n", b"\nbody\n")


def deep_nesting(size: int) -> bytes:
    """Ninety nested multiparts, then many small parts in the innermost one."""
    head = [HEAD]
    for level in range(90):
        head.append(b'Content-Type: multipart/mixed; boundary="level%d"\n\n--level%d\n' % (level, level))
    head.append(b'Content-Type: multipart/mixed; boundary="in"\n\n')
    tail = b"--in--\n" + b"".join(b"--level%d--\n" % level for level in reversed(range(90)))
    return repeat(size, b"".join(head), b"--in\nContent-Type: text/plain\n\nx\n", tail)


def nested_boundaries(size: int) -> bytes:
    """Ninety open multiparts; every line is a boundary of the outermost (each closes the rest)."""
    head = [HEAD]
    for level in range(90):
        head.append(b'Content-Type: multipart/mixed; boundary="level%d"\n\n--level%d\n' % (level, level))
    return repeat(size, b"".join(head), b"--level0\nContent-Type: multipart/mixed; boundary=\"z\"\n\n--z\n")


def many_attached_messages(size: int) -> bytes:
    """A digest of tiny message/rfc822 parts (each a nested header block)."""
    return repeat(size, HEAD + b'Content-Type: multipart/digest; boundary="d"\n\n',
                  b"--d\n\nSubject: part\nFrom: x@example.org\n\nx\n", b"--d--\n")


SHAPES: dict[str, Callable[[int], bytes]] = {
    "plain": plain,
    "many_boundaries": many_boundaries,
    "many_empty_parts": many_empty_parts,
    "boundary_lookalikes": boundary_lookalikes,
    "many_header_lines": many_header_lines,
    "one_folded_header": one_folded_header,
    "deep_nesting": deep_nesting,
    "nested_boundaries": nested_boundaries,
    "many_attached_messages": many_attached_messages,
}


def sample_checks() -> ContentChecks:
    return ContentChecks(
        header_checks=table("header_checks"),
        mime_header_checks=table("mime_header_checks"),
        body_checks=table("body_checks"),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=float, default=10.0, help="message size (default 10)")
    parser.add_argument("--profile", choices=sorted(SHAPES), help="profile one shape with cProfile")
    args = parser.parse_args()
    size = int(max(0.01, min(args.size_mb, MAX_SIZE_MB)) * MB)
    checks = sample_checks()
    if args.profile:
        data = SHAPES[args.profile](size)
        profile = cProfile.Profile()
        profile.runcall(checks.inspect, None, data)
        pstats.Stats(profile).sort_stats("cumulative").print_stats(25)
        return
    print(f"{'shape':<24} {'MB':>6} {'seconds':>8} {'s/MB':>7}  verdict")
    for name, build in SHAPES.items():
        data = build(size)
        started = time.process_time()
        verdict = checks.inspect(None, data)
        spent = time.process_time() - started
        outcome = verdict.error.reply() if verdict.error is not None else "accepted"
        megabytes = len(data) / MB
        print(f"{name:<24} {megabytes:>6.1f} {spent:>8.2f} {spent / megabytes:>7.3f}  {outcome}")


if __name__ == "__main__":
    main()
