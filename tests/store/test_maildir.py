"""Tests for mailserver.store.maildir: delivery, links, names, threads."""

from __future__ import annotations

import errno
import os
import stat
import threading
from typing import Any

from twisted.internet import reactor as global_reactor
from twisted.internet.defer import Deferred
from twisted.logger import capturedLogs
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from mailserver.interfaces import IMailStore
from mailserver.store import maildir as maildir_module
from mailserver.store.maildir import MaildirStore
from mailserver.store.names import parse_name, virtual_size
from tests.fakes import MemoryStore
from tests.reactors import QueuedThreadPool
from tests.store.maildir_harness import (
    HOST,
    MESSAGE,
    PREFIX,
    DeliveryTestsMixin,
    corpus_directory,
    files,
)


class DeliverTests(DeliveryTestsMixin, SynchronousTestCase):
    def test_provides_interface(self) -> None:
        self.assertTrue(verifyObject(IMailStore, self.store))
        self.assertTrue(verifyObject(IMailStore, MemoryStore()))

    def test_file_into_through_the_store(self) -> None:
        """Sieve's fileinto goes through IMailStore: a missing folder is INBOX unless created; keywords get letters."""
        box = self.maildir("bob")
        path, info, events = self.store.file_into(box, "Lists")
        self.assertEqual((path, info), (box, ""))
        self.assertIn("does not exist", events[0])
        path, info, events = self.store.file_into(box, "Lists", ["\\Seen", "$Work"], create=True)
        self.assertEqual((path, info, events), (os.path.join(box, ".Lists"), "Sa", ["fileinto Lists"]))
        self.assertTrue(os.path.isdir(os.path.join(path, "cur")))

    def test_one_copy(self) -> None:
        """prefix + message lands byte for byte in new/, named with its size."""
        box = self.maildir("bob")
        names = self.deliver(MESSAGE, [(box, PREFIX)])
        self.assertEqual(len(names), 1)
        self.assertEqual(files(os.path.join(box, "new")), names)
        with open(os.path.join(box, "new", names[0]), "rb") as f:
            content = f.read()
        self.assertEqual(content, PREFIX + MESSAGE)
        parsed = parse_name(names[0])
        self.assertEqual(parsed.size, len(content))
        self.assertEqual(virtual_size(names[0]), len(content) + content.count(b"\n"))
        self.assertIsNone(parsed.info)
        self.assertTrue(parsed.unique.startswith(f"1700000000.M250000P{os.getpid()}Q"))
        self.assertTrue(parsed.unique.endswith("." + HOST))
        self.assertEqual(files(os.path.join(box, "tmp")), [])
        self.assertEqual(files(os.path.join(box, "cur")), [])
        self.assertEqual(len(self.reactor.pool.calls), 1)

    def test_crlf_virtual_size(self) -> None:
        """,W= counts a CRLF line ending once and a bare LF as two bytes."""
        box = self.maildir("bob")
        [name] = self.deliver(b"A: b\r\n\r\nx\ny\r\n", [(box, b"P: q\n")])
        self.assertEqual(parse_name(name).size, 18)
        self.assertEqual(virtual_size(name), 20)

    def test_modes(self) -> None:
        """Directories we create are 0700 (parents too), message files 0600."""
        box = self.maildir("bob")
        [name] = self.deliver(MESSAGE, [(box, PREFIX)])
        for d in [os.path.dirname(box), box] + [os.path.join(box, s) for s in ("tmp", "new", "cur")]:
            self.assertEqual(stat.S_IMODE(os.stat(d).st_mode) & 0o077, 0, d)
            self.assertTrue(os.path.isdir(d))
        mode = stat.S_IMODE(os.stat(os.path.join(box, "new", name)).st_mode)
        self.assertEqual(mode, 0o600)

    def test_same_prefix_hard_links(self) -> None:
        """Identical copies into different Maildirs share one inode."""
        a, b, c = self.maildir("a"), self.maildir("b"), self.maildir("c")
        names = self.deliver(MESSAGE, [(a, PREFIX), (b, PREFIX), (c, PREFIX)])
        self.assertEqual(len(set(names)), 3)
        paths = [os.path.join(m, "new", n) for m, n in zip((a, b, c), names)]
        inodes = {os.stat(p).st_ino for p in paths}
        self.assertEqual(len(inodes), 1)
        self.assertEqual(os.stat(paths[0]).st_nlink, 3)
        for p in paths:
            with open(p, "rb") as f:
                self.assertEqual(f.read(), PREFIX + MESSAGE)
        self.assertNothingLeftIn("tmp", a, b, c)

    def test_different_prefix_separate_files(self) -> None:
        """Copies with different prefixes are separate files; equal ones still link."""
        a, b, c = self.maildir("a"), self.maildir("b"), self.maildir("c")
        other = b"Delivered-To: c@example.org\n"
        names = self.deliver(MESSAGE, [(a, PREFIX), (b, other), (c, PREFIX)])
        pa, pb, pc = (os.path.join(m, "new", n) for m, n in zip((a, b, c), names))
        self.assertNotEqual(os.stat(pa).st_ino, os.stat(pb).st_ino)
        self.assertEqual(os.stat(pa).st_ino, os.stat(pc).st_ino)
        with open(pb, "rb") as f:
            self.assertEqual(f.read(), other + MESSAGE)
        self.assertEqual(parse_name(names[1]).size, len(other + MESSAGE))
        self.assertNothingLeftIn("tmp", a, b, c)

    def test_same_maildir_twice(self) -> None:
        """Two copies into one Maildir are two files with distinct names."""
        a = self.maildir("a")
        names = self.deliver(MESSAGE, [(a, PREFIX), (a, PREFIX)])
        self.assertEqual(files(os.path.join(a, "new")), sorted(names))
        self.assertEqual(len(set(names)), 2)

    def test_many_deliveries_unique(self) -> None:
        """Many deliveries at the same clock time never reuse a name."""
        a = self.maildir("a")
        names = []
        for _ in range(50):
            names += self.deliver(MESSAGE, [(a, PREFIX)])
        self.assertEqual(len(set(names)), 50)
        self.assertEqual(len(files(os.path.join(a, "new"))), 50)

    def test_link_fallback(self) -> None:
        """EXDEV or EPERM from link() means a second, fsynced write instead."""
        for code in (errno.EXDEV, errno.EPERM):
            def no_link(src: str, dst: str, code: int = code) -> None:
                raise OSError(code, os.strerror(code))

            self.patch(os, "link", no_link)
            a, b = self.maildir(f"a{code}"), self.maildir(f"b{code}")
            names = self.deliver(MESSAGE, [(a, PREFIX), (b, PREFIX)])
            pa, pb = (os.path.join(m, "new", n) for m, n in zip((a, b), names))
            self.assertNotEqual(os.stat(pa).st_ino, os.stat(pb).st_ino)
            for p in (pa, pb):
                with open(p, "rb") as f:
                    self.assertEqual(f.read(), PREFIX + MESSAGE)
            self.assertNothingLeftIn("tmp", a, b)

    def test_link_other_error_fails(self) -> None:
        """Any other link() error fails the delivery and removes the first copy."""
        def broken_link(src: str, dst: str) -> None:
            raise OSError(errno.EIO, "I/O error")

        self.patch(os, "link", broken_link)
        a, b = self.maildir("a"), self.maildir("b")
        error = self.fail_delivery(MESSAGE, [(a, PREFIX), (b, PREFIX)])
        self.assertEqual(error.code, 451)
        self.assertNothingLeft(a, b)

    def test_name_collision_retries(self) -> None:
        """A name already in tmp/ (O_EXCL) is skipped for the next counter value."""
        counters = iter([5, 5, 6])
        self.patch(maildir_module, "_counter", lambda: next(counters))
        a = self.maildir("a")
        names = self.deliver(MESSAGE, [(a, PREFIX), (a, PREFIX)])
        self.assertIn("Q5.", names[0])
        self.assertIn("Q6.", names[1])
        self.assertEqual(files(os.path.join(a, "new")), sorted(names))

    def test_name_collision_gives_up(self) -> None:
        """If every try collides the delivery fails cleanly rather than loop."""
        self.patch(maildir_module, "_counter", lambda: 9)
        a = self.maildir("a")
        error = self.fail_delivery(MESSAGE, [(a, PREFIX), (a, PREFIX)])
        self.assertEqual(error.code, 451)
        self.assertNothingLeft(a)

    def test_on_delivered(self) -> None:
        """on_delivered gets the distinct Maildirs, once per successful delivery."""
        a, b = self.maildir("a"), self.maildir("b")
        self.deliver(MESSAGE, [(a, PREFIX), (b, PREFIX), (a, PREFIX)])
        self.assertEqual(self.delivered, [[a, b]])

    def test_on_delivered_error_logged(self) -> None:
        """A failing listener is logged; the delivery still succeeds."""
        def boom(paths: list[str]) -> None:
            raise RuntimeError("listener broke")

        store = MaildirStore(self.reactor, HOST, on_delivered=boom)
        a = self.maildir("a")
        with capturedLogs() as events:
            names = self.successResultOf(store.deliver(MESSAGE, [(a, PREFIX)]))
        self.assertEqual(files(os.path.join(a, "new")), names)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertTrue(any("on_delivered" in e.get("log_format", "") for e in events))

    def test_empty_copies(self) -> None:
        """Nothing to deliver fires at once, without a thread."""
        self.assertEqual(self.deliver(MESSAGE, []), [])
        self.assertEqual(self.reactor.pool.calls, [])
        self.assertEqual(self.delivered, [])

    def test_flagged_copy_goes_to_cur(self) -> None:
        """A copy with Maildir info (Sieve :flags) lands in cur/ as name:2,info; others in new/ as before."""
        plain, flagged = self.maildir("plain"), self.maildir("flagged")
        names = self.deliver(MESSAGE, [(plain, PREFIX), (flagged, PREFIX, "FS")])
        self.assertEqual(files(os.path.join(plain, "new")), [names[0]])
        [stored] = files(os.path.join(flagged, "cur"))
        self.assertEqual(stored, names[1] + ":2,FS")
        self.assertEqual(parse_name(stored).info, "2,FS")
        self.assertEqual(files(os.path.join(flagged, "new")), [])
        with open(os.path.join(flagged, "cur", stored), "rb") as f:
            self.assertEqual(f.read(), PREFIX + MESSAGE)
        self.assertRaises(ValueError, self.store.deliver, MESSAGE, [(plain, PREFIX, "../x")])

    def test_bad_arguments(self) -> None:
        """Wrong types are refused before any disk work."""
        a = self.maildir("a")
        self.assertRaises(TypeError, self.store.deliver, "text", [(a, PREFIX)])
        self.assertRaises(TypeError, self.store.deliver, MESSAGE, [(a, "text")])
        self.assertRaises(TypeError, self.store.deliver, MESSAGE, [(a.encode(), PREFIX)])
        self.assertRaises(ValueError, self.store.deliver, MESSAGE, [("", PREFIX)])
        self.assertRaises(ValueError, MaildirStore, self.reactor, "")
        self.assertEqual(self.reactor.pool.calls, [])
        self.assertFalse(os.path.exists(a))

    def test_copies_from_a_plan_in_the_writer_thread(self) -> None:
        """A callable for the copies is called in the writer's thread call; [] writes and notifies nothing."""
        a = self.maildir("a")
        calls: list[int] = []

        def plan() -> list[tuple]:
            calls.append(len(self.reactor.pool.calls))
            return [(a, PREFIX, "S")]

        names = self.deliver(MESSAGE, plan)
        self.assertEqual((calls, len(self.reactor.pool.calls)), ([1], 1))
        self.assertEqual(files(os.path.join(a, "cur")), [names[0] + ":2,S"])
        self.assertEqual(self.delivered, [[a]])
        self.assertEqual(self.deliver(MESSAGE, lambda: []), [])
        self.assertEqual(self.delivered, [[a]])

    def test_own_thread_pool(self) -> None:
        """A thread pool given to the store is used instead of the reactor's."""
        pool = QueuedThreadPool()
        store = MaildirStore(self.reactor, HOST, threadpool=pool)
        self.successResultOf(store.deliver(MESSAGE, [(self.maildir("a"), PREFIX)]))
        self.assertEqual((len(pool.calls), len(self.reactor.pool.calls)), (1, 0))


class CounterTests(SynchronousTestCase):
    def test_threads_get_distinct_values(self) -> None:
        counter = maildir_module._Counter()
        seen: list[int] = []
        lock = threading.Lock()

        def work() -> None:
            values = [counter() for _ in range(2000)]
            with lock:
                seen.extend(values)

        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(len(set(seen)), 8000)


class CorpusTests(DeliveryTestsMixin, SynchronousTestCase):
    def test_corpus_round_trip(self) -> None:
        """Every fixture (bare LF and CRLF) is stored and read back byte-identical."""
        corpus = corpus_directory()
        if not os.path.isdir(corpus):
            raise self.skipTest(f"{corpus} not found")
        paths = sorted(
            os.path.join(d, f) for d, _, fs in os.walk(corpus) for f in fs if f.endswith(".eml")
        )
        self.assertGreater(len(paths), 50)
        a, b = self.maildir("a"), self.maildir("b")
        for path in paths:
            with open(path, "rb") as f:
                message = f.read()
            names = self.deliver(message, [(a, PREFIX), (b, b"")])
            for box, prefix, name in zip((a, b), (PREFIX, b""), names):
                with open(os.path.join(box, "new", name), "rb") as f:
                    stored = f.read()
                self.assertEqual(stored, prefix + message, path)
                self.assertEqual(parse_name(name).size, len(stored))
        self.assertEqual(len(files(os.path.join(a, "new"))), len(paths))
        self.assertEqual(files(os.path.join(a, "tmp")), [])


class ThreadTests(TestCase):
    """With a real reactor and thread pool: disk work stays off the reactor thread."""

    def setUp(self) -> None:
        self.pool = ThreadPool(minthreads=1, maxthreads=2, name="maildir-test")
        self.pool.start()
        self.addCleanup(self.pool.stop)

    def test_not_on_reactor_thread(self) -> Deferred[None]:
        writers: list[threading.Thread] = []
        fsyncers: list[threading.Thread] = []
        callbacks: list[threading.Thread] = []
        real_writev, real_fsync = os.writev, os.fsync

        def writev(fd: int, buffers: Any) -> int:
            if MESSAGE in buffers:
                writers.append(threading.current_thread())
            return real_writev(fd, buffers)

        def fsync(fd: int) -> None:
            fsyncers.append(threading.current_thread())
            real_fsync(fd)

        self.patch(os, "writev", writev)
        self.patch(os, "fsync", fsync)
        box = os.path.abspath(os.path.join(self.mktemp(), "Maildir"))
        store = MaildirStore(
            global_reactor,
            HOST,
            on_delivered=lambda paths: callbacks.append(threading.current_thread()),
            threadpool=self.pool,
        )
        here = threading.current_thread()

        def check(names: list[str]) -> None:
            self.assertEqual(files(os.path.join(box, "new")), names)
            self.assertEqual(len(writers), 1)  # the message body, written once
            self.assertTrue(fsyncers)
            for thread in writers + fsyncers:
                self.assertIsNot(thread, here)
            self.assertEqual(callbacks, [here])

        return store.deliver(MESSAGE, [(box, PREFIX)]).addCallback(check)
