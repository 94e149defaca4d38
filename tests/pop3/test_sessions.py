"""Real POP3 sessions over loopback with the standard library's poplib (in threads)."""

from __future__ import annotations

import base64
import os
import poplib
import re
from typing import Any, Callable

from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import SkipTest, TestCase

from mailserver.pop3.factory import POP3Factory
from tests.pop3.support import deliver, files, make_maildir, make_portal

CORPUS = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))),
    "shared",
    "corpus",
    "mail-fixtures",
)


def on_the_wire(stored: bytes) -> bytes:
    """What a client must get back for a stored message (before dot-stuffing)."""
    wire = re.sub(rb"(?<!\r)\n", b"\r\n", stored)
    if wire and not wire.endswith(b"\r\n"):
        wire += b"\r\n"  # POP3 ends the last line before the final "."
    return wire


def joined(lines: list[bytes]) -> bytes:
    return b"".join(line + b"\r\n" for line in lines)


class TrackingFactory(POP3Factory):
    """Knows when each server-side session has ended."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.ended: list[Deferred] = []

    def buildProtocol(self, addr: Any):
        protocol = super().buildProtocol(addr)
        ended: Deferred = Deferred()
        self.ended.append(ended)
        lost = protocol.connectionLost

        def connectionLost(reason: Any = None) -> None:
            lost(reason)
            ended.callback(None)

        protocol.connectionLost = connectionLost
        return protocol


class SessionTests(TestCase):
    def setUp(self) -> None:
        self.base = os.path.abspath(self.mktemp())
        self.maildir = make_maildir(os.path.join(self.base, "alice"))
        portal = make_portal(self.base, reactor, None)
        self.factory = TrackingFactory(portal, reactor, auth_failure_delay=0)
        self.port = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        self.pool = ThreadPool(minthreads=1, maxthreads=4, name="poplib")
        self.pool.start()
        self.addCleanup(self.pool.stop)
        self.addCleanup(lambda: DeferredList(self.factory.ended))
        self.addCleanup(self.port.stopListening)

    def client(self, f: Callable[[], Any]) -> Deferred:
        return deferToThreadPool(reactor, self.pool, f)

    def connect(self, user: bytes | None = b"alice", password: str = "secret") -> poplib.POP3:
        c = poplib.POP3("127.0.0.1", self.port.getHost().port, timeout=30)
        if user is not None:
            c.user(user.decode())
            c.pass_(password)
        return c

    @inlineCallbacks
    def test_retrieve_delete_quit(self):
        one = deliver(self.maildir, b"Subject: one\n\nfirst\n.\n")
        two = deliver(self.maildir, b"Subject: two\n\nsecond\n")

        def session() -> dict[str, Any]:
            c = self.connect()
            got = {"stat": c.stat(), "list": c.list()[1], "uidl": c.uidl()[1]}
            got["retr"] = c.retr(1)[1]
            got["top"] = c.top(2, 0)[1]
            got["dele"] = c.dele(2)
            got["quit"] = c.quit()
            return got

        got = yield self.client(session)
        self.assertEqual(got["stat"], (2, 50))
        self.assertEqual(got["list"], [b"1 26", b"2 24"])
        uidls = [name.split(",")[0].encode() for name in (one, two)]
        self.assertEqual(got["uidl"], [b"1 " + uidls[0], b"2 " + uidls[1]])
        self.assertEqual(got["retr"], [b"Subject: one", b"", b"first", b"."])
        self.assertEqual(got["top"], [b"Subject: two", b""])
        self.assertTrue(got["quit"].startswith(b"+OK"))
        self.assertEqual(files(self.maildir, "new"), [])
        self.assertEqual(files(self.maildir, "cur"), [one + ":2,S"])

    @inlineCallbacks
    def test_uidl_stable_across_moves_and_reconnects(self):
        for n in range(3):
            deliver(self.maildir, b"Subject: %d\n\nbody\n" % n)

        def first() -> list[bytes]:
            c = self.connect()
            uidl = c.uidl()[1]
            for n in range(3):
                c.retr(n + 1)
            c.quit()
            return uidl

        def second() -> list[bytes]:
            c = self.connect()
            uidl = c.uidl()[1]
            c.quit()
            return uidl

        before = yield self.client(first)
        self.assertEqual(files(self.maildir, "new"), [])
        # An IMAP client flags one of them meanwhile.
        cur = os.path.join(self.maildir, "cur")
        name = files(self.maildir, "cur")[0]
        os.rename(os.path.join(cur, name), os.path.join(cur, name.replace(":2,S", ":2,FRS")))
        after = yield self.client(second)
        self.assertEqual(len(before), 3)
        self.assertEqual(before, after)

    @inlineCallbacks
    def test_second_session_in_use(self):
        def sessions() -> tuple[str, bytes]:
            first = self.connect()
            second = self.connect(None)
            second.user("alice")
            try:
                second.pass_("secret")
            except poplib.error_proto as e:
                refused = e.args[0]
            else:
                refused = b"logged in"
            first.quit()
            second.user("alice")
            answer = second.pass_("secret")
            second.quit()
            return refused, answer

        refused, answer = yield self.client(sessions)
        self.assertTrue(refused.startswith(b"-ERR [IN-USE]"), refused)
        self.assertTrue(answer.startswith(b"+OK"), answer)

    @inlineCallbacks
    def test_dropped_connection_deletes_nothing(self):
        deliver(self.maildir, b"keep me\n")

        def drop() -> None:
            c = self.connect()
            c.dele(1)
            c.sock.close()  # no QUIT
            c.file.close()

        def count() -> tuple[int, int]:
            c = self.connect()
            stat = c.stat()
            c.quit()
            return stat

        yield self.client(drop)
        yield self.factory.ended[0]
        stat = yield self.client(count)
        self.assertEqual(stat, (1, 9))
        self.assertEqual(len(files(self.maildir, "new")), 1)

    @inlineCallbacks
    def test_bad_password(self):
        def session() -> bytes:
            c = self.connect(None)
            c.user("alice")
            try:
                c.pass_("wrong")
            except poplib.error_proto as e:
                return e.args[0]
            finally:
                c.close()
            return b"logged in"

        answer = yield self.client(session)
        self.assertEqual(answer, b"-ERR [AUTH] Authentication failed.")

    @inlineCallbacks
    def test_auth_plain_and_login(self):
        deliver(self.maildir, b"hi\n")

        def plain() -> tuple[bytes, tuple[int, int]]:
            c = self.connect(None)
            response = base64.b64encode(b"\0alice\0secret").decode()
            answer = c._shortcmd("AUTH PLAIN " + response)
            stat = c.stat()
            c.quit()
            return answer, stat

        def login() -> list[bytes]:
            c = self.connect(None)
            answers = [c._shortcmd("AUTH LOGIN")]
            answers.append(c._shortcmd(base64.b64encode(b"alice").decode()))
            answers.append(c._shortcmd(base64.b64encode(b"secret").decode()))
            c.quit()
            return answers

        answer, stat = yield self.client(plain)
        self.assertEqual((answer, stat), (b"+OK Logged in.", (1, 4)))
        answers = yield self.client(login)
        self.assertEqual(answers, [b"+ VXNlcm5hbWU6", b"+ UGFzc3dvcmQ6", b"+OK Logged in."])

    @inlineCallbacks
    def test_capa(self):
        def session() -> dict[str, list[str]]:
            c = self.connect(None)
            capa = c.capa()
            c.quit()
            return capa

        capa = yield self.client(session)
        self.assertEqual(capa["SASL"], ["PLAIN", "LOGIN"])
        self.assertIn("RESP-CODES", capa)
        self.assertIn("UIDL", capa)

    @inlineCallbacks
    def test_stored_crlf_is_not_doubled(self):
        stored = b"Subject: crlf\r\n\r\nline\r\n.\r\nbare\nend"
        deliver(self.maildir, stored)

        def session() -> tuple[bytes, bytes]:
            c = self.connect()
            size = c.list(1).split()[-1]
            lines = c.retr(1)[1]
            c.quit()
            return size, joined(lines)

        size, body = yield self.client(session)
        self.assertEqual(body, on_the_wire(stored))
        self.assertEqual(int(size), len(on_the_wire(stored)) - 2)  # less the added final CRLF

    @inlineCallbacks
    def test_corpus_read_back_byte_identical(self):
        if not os.path.isdir(CORPUS):
            raise SkipTest(f"no corpus at {CORPUS}")
        stored: list[bytes] = []
        for directory, _, names in sorted(os.walk(CORPUS)):
            for name in sorted(names):
                if name == "LICENSE":
                    continue
                with open(os.path.join(directory, name), "rb") as f:
                    # As the store writes it: LF line ends.
                    data = f.read().replace(b"\r\n", b"\n")
                stored.append(data)
                deliver(self.maildir, data)
        self.patch(poplib, "_MAXLINE", 1 << 24)

        def session() -> tuple[list[bytes], list[bytes]]:
            c = self.connect()
            sizes = c.list()[1]
            bodies = [joined(c.retr(n + 1)[1]) for n in range(len(stored))]
            c.quit()
            return sizes, bodies

        sizes, bodies = yield self.client(session)
        self.assertGreater(len(stored), 100)
        self.assertEqual(len(bodies), len(stored))
        for n, (data, body) in enumerate(zip(stored, bodies)):
            self.assertEqual(body, on_the_wire(data), f"message {n + 1}")
            wire_size = len(re.sub(rb"(?<!\r)\n", b"\r\n", data))
            self.assertEqual(sizes[n], b"%d %d" % (n + 1, wire_size))
        self.assertEqual(files(self.maildir, "new"), [])
        self.assertEqual(len(files(self.maildir, "cur")), len(stored))
