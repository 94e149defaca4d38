"""
The raw disk limit for Maildir delivery: how many messages per second this
disk takes with the store's durable pattern and no server in the way.

Each message: create in ``tmp/`` (O_EXCL), write, fsync, close, rename into
``new/``, fsync ``new/``.  A server benchmark prints this figure beside its
own to show how close it gets to the disk.  Importing this module has no
side effects; run it to print the figures for 1 KB and 100 KB messages::

    python bench/disk_limit.py [--count 500] [--concurrency 1] [--dir /var/tmp]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import threading
import time

#: Upper bound on --count, so a typo cannot fill the disk.
MAX_COUNT = 100_000
#: Upper bound on message size, for the same reason.
MAX_SIZE = 64 * 1024 * 1024

_OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
_DIR_FLAGS = os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_DIRECTORY", 0)


def _fsync_directory(path: str) -> None:
    fd = os.open(path, _DIR_FLAGS)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _deliver_many(maildir: str, worker: int, count: int, body: bytes) -> None:
    tmp, new = os.path.join(maildir, "tmp"), os.path.join(maildir, "new")
    for n in range(count):
        name = f"{worker}.{n}"
        tmp_path = os.path.join(tmp, name)
        fd = os.open(tmp_path, _OPEN_FLAGS, 0o600)
        try:
            view = memoryview(body)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp_path, os.path.join(new, name))
        _fsync_directory(new)


def measure_raw_disk(directory: str, count: int, size: int, concurrency: int = 1) -> float:
    """
    Messages per second for C{count} messages of C{size} bytes written into
    a scratch Maildir under C{directory} by C{concurrency} threads.

    The scratch Maildir is removed afterwards.  Raises ValueError for counts
    or sizes out of bounds and OSError if the disk fails.
    """
    if not 1 <= count <= MAX_COUNT:
        raise ValueError(f"count must be between 1 and {MAX_COUNT}")
    if not 0 <= size <= MAX_SIZE:
        raise ValueError(f"size must be between 0 and {MAX_SIZE}")
    if not 1 <= concurrency <= min(count, 256):
        raise ValueError("concurrency must be between 1 and min(count, 256)")
    body = (b"x" * 77 + b"\n") * (size // 78) + b"x" * (size % 78)
    scratch = tempfile.mkdtemp(prefix="disk-limit-", dir=directory)
    try:
        for sub in ("tmp", "new", "cur"):
            os.mkdir(os.path.join(scratch, sub), 0o700)
        shares = [count // concurrency + (1 if i < count % concurrency else 0)
                  for i in range(concurrency)]
        errors: list[BaseException] = []

        def work(worker: int, share: int) -> None:
            try:
                _deliver_many(scratch, worker, share, body)
            except Exception as e:  # re-raised in the calling thread below
                errors.append(e)

        threads = [threading.Thread(target=work, args=(i, share), daemon=True)
                   for i, share in enumerate(shares)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - start
        if errors:
            raise errors[0]
        return count / elapsed if elapsed > 0 else float("inf")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _bounded_count(text: str) -> int:
    value = int(text)
    if not 1 <= value <= MAX_COUNT:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_COUNT}")
    return value


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=_bounded_count, default=500,
                        help="messages per size (default 500, at most %d)" % MAX_COUNT)
    parser.add_argument("--concurrency", type=int, default=1,
                        help="writer threads (default 1)")
    parser.add_argument("--dir", default=tempfile.gettempdir(),
                        help="where to put the scratch Maildir (default: the temp dir)")
    args = parser.parse_args(argv)
    concurrency = max(1, min(args.concurrency, args.count, 256))
    for label, size in (("1 KB", 1024), ("100 KB", 100 * 1024)):
        rate = measure_raw_disk(args.dir, args.count, size, concurrency)
        print(f"raw disk limit, {label}: {rate:.0f} msg/s "
              f"({args.count} messages, {concurrency} thread(s), {args.dir})")


if __name__ == "__main__":
    main()
