"""
Benchmark the IMAP read path over loopback.

Creates a Maildir with N messages of about 4 KB (written the way the
delivery store writes them: tmp/ then rename into new/), starts the real
IMAP factory in a child process and measures, with imaplib clients:

- LOGIN + first SELECT (builds the folder index) and a second SELECT;
- ``FETCH 1:* (UID FLAGS RFC822.SIZE ENVELOPE)``;
- full-body fetch throughput (``FETCH 1:* BODY.PEEK[]``);
- ``UID SEARCH`` on flags and on a cached header;
- ``FETCH 1:* (FLAGS) (CHANGEDSINCE m)`` after one flag change (CONDSTORE)
  and ``SORT (DATE)`` / ``THREAD REFERENCES`` of the whole folder;
- LOGIN + SELECT in a restarted server (the index is read from disk);
- the same with 16 concurrent clients.

Usage: python bench/imap_read.py [--messages 10000] [--clients 16] [--keep DIR]
"""

from __future__ import annotations

import argparse
import email.utils
import imaplib
import multiprocessing
import os
import random
import shutil
import sys
import tempfile
import threading
import time

MAX_MESSAGES = 100_000
PASSWORD = "bench-password"


def make_message(n: int, size: int = 4096) -> bytes:
    header = (
        f"From: Sender {n % 97} <sender{n % 97}@example.org>\n"
        f"To: Bench User <bench@example.org>\n"
        f"Subject: benchmark message {n}\n"
        f"Date: {email.utils.formatdate(1_600_000_000 + (n * 7919) % 10_000_000)}\n"
        f"Message-ID: <{n}@bench.example.org>\n"
        f"MIME-Version: 1.0\nContent-Type: text/plain; charset=us-ascii\n\n"
    ).encode()
    rng = random.Random(n)
    words = [b"lorem", b"ipsum", b"dolor", b"sit", b"amet", b"consectetur", b"adipiscing", b"elit"]
    body = bytearray()
    while len(header) + len(body) < size:
        body += b" ".join(rng.choice(words) for _ in range(10)) + b"\n"
    return header + bytes(body[: size - len(header)]) + b"\n"


def fill(maildir: str, count: int) -> None:
    for sub in ("tmp", "new", "cur"):
        os.makedirs(os.path.join(maildir, sub), exist_ok=True)
    now = 1_700_000_000
    for n in range(count):
        data = make_message(n)
        name = f"{now + n}.M{n}P1Q{n}.bench,S={len(data)}"
        tmp = os.path.join(maildir, "tmp", name)
        with open(tmp, "wb") as f:
            f.write(data)
        os.rename(tmp, os.path.join(maildir, "new", name))


def serve(base: str, ready) -> None:
    """The server process: the real factory on 127.0.0.1, port sent back through C{ready}."""
    from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
    from twisted.cred.portal import Portal
    from twisted.internet import reactor
    from twisted.mail.imap4 import IAccount

    from mailserver.auth.realm import MailRealm
    from mailserver.service import maildir_imap_accounts
    from mailserver.imap.server import IMAPFactory
    from mailserver.store.notify import MailboxNotifier

    reactor.suggestThreadPoolSize(16)
    notifier = MailboxNotifier(reactor)
    accounts = maildir_imap_accounts(lambda user: os.path.join(base, user), notifier, reactor)
    checker = InMemoryUsernamePasswordDatabaseDontUse(bench=PASSWORD.encode())
    portal = Portal(MailRealm({IAccount: accounts}), [checker])
    port = reactor.listenTCP(0, IMAPFactory(portal, reactor, notifier), interface="127.0.0.1", backlog=64)
    ready.send(port.getHost().port)
    reactor.run()


def timed(f):
    start = time.perf_counter()
    result = f()
    return time.perf_counter() - start, result


def check(result):
    typ, data = result
    if typ != "OK":
        raise RuntimeError(f"{typ} {data!r}")
    return data


def single(port: int, count: int) -> dict[str, float]:
    out: dict[str, float] = {}
    client = imaplib.IMAP4("127.0.0.1", port)
    t, _ = timed(lambda: (check(client.login("bench", PASSWORD)), check(client.select("INBOX"))))
    out["login_select_first"] = t
    t, _ = timed(lambda: check(client.select("INBOX")))
    out["select_second"] = t
    t, data = timed(lambda: check(client.fetch("1:*", "(UID FLAGS RFC822.SIZE ENVELOPE)")))
    assert len(data) == count, len(data)
    out["fetch_envelope"] = t
    t, data = timed(lambda: check(client.fetch("1:*", "(BODY.PEEK[])")))
    out["fetch_bodies"] = t
    out["body_bytes"] = sum(len(part[1]) for part in data if isinstance(part, tuple))
    t, _ = timed(lambda: check(client.uid("SEARCH", "UNSEEN")))
    out["uid_search_unseen"] = t
    t, _ = timed(lambda: check(client.uid("SEARCH", "FROM", "sender7")))
    out["uid_search_from"] = t
    changedsince = []
    for n in range(7):  # the median of several: one figure on a shared machine is noise
        status = check(client.status("INBOX", "(HIGHESTMODSEQ)"))[0]
        modseq = int(status.split(b"HIGHESTMODSEQ ")[1].split(b")")[0])
        check(client.store(str(1 + (count // 7) * n), "+FLAGS", "(\\Flagged)"))
        t, data = timed(lambda: check(client.fetch("1:*", f"(FLAGS) (CHANGEDSINCE {modseq})")))
        assert len(data) == 1, data
        changedsince.append(t)
    out["fetch_changedsince"] = sorted(changedsince)[len(changedsince) // 2]
    out["fetch_changedsince_min"] = min(changedsince)
    sorts = []
    for _ in range(5):
        t, data = timed(lambda: check(client.sort("(DATE)", "UTF-8", "ALL")))
        assert len(data[0].split()) == count
        sorts.append(t)
    out["sort_date"] = sorted(sorts)[len(sorts) // 2]
    out["sort_date_min"] = min(sorts)
    t, _ = timed(lambda: check(client.thread("REFERENCES", "UTF-8", "ALL")))
    out["thread_references"] = t
    client.logout()
    client = imaplib.IMAP4("127.0.0.1", port)
    t, _ = timed(lambda: (check(client.login("bench", PASSWORD)), check(client.select("INBOX"))))
    out["login_select_warm"] = t
    client.logout()
    return out


def concurrent(port: int, clients: int, count: int) -> dict[str, float]:
    times: list[dict[str, float]] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(clients)

    def run() -> None:
        try:
            client = imaplib.IMAP4("127.0.0.1", port)
            barrier.wait()
            mine = {}
            mine["login_select"], _ = timed(lambda: (check(client.login("bench", PASSWORD)), check(client.select("INBOX"))))
            mine["fetch_envelope"], _ = timed(lambda: check(client.fetch("1:*", "(UID FLAGS RFC822.SIZE ENVELOPE)")))
            mine["uid_search"], _ = timed(lambda: check(client.uid("SEARCH", "UNSEEN")))
            client.logout()
            times.append(mine)
        except BaseException as e:  # report any client failure
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    if errors:
        raise errors[0]
    return {
        "wall": wall,
        **{f"avg_{k}": sum(t[k] for t in times) / len(times) for k in times[0]},
        **{f"max_{k}": max(t[k] for t in times) for k in times[0]},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--keep", help="use (and keep) this directory instead of a temporary one")
    args = parser.parse_args(argv)
    count = max(1, min(args.messages, MAX_MESSAGES))
    base = args.keep or tempfile.mkdtemp(prefix="imap-bench-")
    maildir = os.path.join(base, "bench")
    try:
        t, _ = timed(lambda: fill(maildir, count))
        print(f"created {count} messages of ~4 KB in {t:.2f} s ({maildir})")
        parent, child = multiprocessing.Pipe()
        server = multiprocessing.Process(target=serve, args=(base, child), daemon=True)
        server.start()
        port = parent.recv()
        try:
            r = single(port, count)
            mb = r["body_bytes"] / 1e6
            print(f"LOGIN+SELECT (first, builds index)   {r['login_select_first']:8.3f} s")
            print(f"second SELECT                        {r['select_second']:8.3f} s   (target < 0.5 s)")
            print(f"LOGIN+SELECT (new session, warm)     {r['login_select_warm']:8.3f} s")
            print(f"FETCH 1:* (UID FLAGS RFC822.SIZE ENVELOPE) {r['fetch_envelope']:8.3f} s   (target < 3 s)")
            print(f"FETCH 1:* BODY.PEEK[]                {r['fetch_bodies']:8.3f} s   {mb / r['fetch_bodies']:.1f} MB/s, {count / r['fetch_bodies']:.0f} msg/s")
            print(f"UID SEARCH UNSEEN                    {r['uid_search_unseen']:8.3f} s")
            print(f"UID SEARCH FROM sender7              {r['uid_search_from']:8.3f} s")
            print(f"FETCH 1:* (FLAGS) (CHANGEDSINCE m), one change: median {r['fetch_changedsince'] * 1000:.1f} ms,"
                  f" best {r['fetch_changedsince_min'] * 1000:.1f} ms of 7   (target < 20 ms)")
            print(f"SORT (DATE) UTF-8 ALL: median {r['sort_date']:.3f} s, best {r['sort_date_min']:.3f} s of 5"
                  f"   (target < 0.2 s)")
            print(f"THREAD REFERENCES UTF-8 ALL          {r['thread_references']:8.3f} s")
            server.terminate()
            server.join(5)
            parent, child = multiprocessing.Pipe()
            server = multiprocessing.Process(target=serve, args=(base, child), daemon=True)
            server.start()
            port = parent.recv()
            client = imaplib.IMAP4("127.0.0.1", port)
            t, _ = timed(lambda: (check(client.login("bench", PASSWORD)), check(client.select("INBOX"))))
            client.logout()
            print(f"LOGIN+SELECT after a restart (index read from disk) {t:8.3f} s")
            c = concurrent(port, args.clients, count)
            print(f"{args.clients} concurrent clients (LOGIN+SELECT, envelope FETCH, UID SEARCH): wall {c['wall']:.2f} s")
            for key in ("login_select", "fetch_envelope", "uid_search"):
                print(f"  {key:16s} avg {c['avg_' + key]:7.3f} s   max {c['max_' + key]:7.3f} s")
        finally:
            server.terminate()
            server.join(5)
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.exit(main())
