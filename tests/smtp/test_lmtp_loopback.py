"""LMTP end to end: Python's smtplib.LMTP against a running server, over a unix socket and tcp."""

from __future__ import annotations

import os
import shutil
import smtplib
import tempfile

from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.harness import RunningServer

MESSAGE = b"From: s@remote.example\r\nSubject: lmtp\r\n\r\nhello over LMTP\r\n"


def socket_path(testcase: TestCase) -> str:
    """A unix socket path, short as AF_UNIX wants (108 bytes): not under trial's deep temp directory."""
    directory = tempfile.mkdtemp(prefix="lmtp-")
    testcase.addCleanup(shutil.rmtree, directory, True)
    return os.path.join(directory, "lmtp")


class LMTPLoopbackTests(TestCase):

    @inlineCallbacks
    def test_unix_socket_per_recipient_replies(self):
        """smtplib.LMTP over unix: alice fits, bob is over his passwd-file quota, nobody is unknown."""
        path = socket_path(self)
        server = RunningServer(
            self, extra=f"lmtp_listen = unix:{path}\n", listeners=(),
            user_extra={"bob@example.com": "userdb_quota_rule=*:storage=10"},
        )
        yield server.start()

        def send():
            client = smtplib.LMTP(path, timeout=30)
            try:
                # SIZE is declared: bob's quota refuses at RCPT, so one reply follows the data.
                return client.sendmail(
                    "s@remote.example", ["alice@example.com", "bob@example.com", "nobody@example.com"], MESSAGE
                )
            finally:
                client.quit()

        refused = yield deferToThread(send)
        self.assertEqual(set(refused), {"nobody@example.com", "bob@example.com"})
        self.assertEqual(refused["bob@example.com"][0], 552)
        self.assertIn(b"5.2.2", refused["bob@example.com"][1])
        [message] = server.messages("alice")
        self.assertIn(b"hello over LMTP", message)
        self.assertIn(b"with LMTP id", message)
        self.assertEqual(server.messages("bob"), [])

    @inlineCallbacks
    def test_tcp_end_of_data_quota_per_recipient(self):
        """Over tcp: bob's quota is not reached at RCPT, but this message won't fit: 552 after DATA for him only."""
        server = RunningServer(
            self, extra="lmtp_listen = tcp:0:interface=127.0.0.1\n", listeners=(),
            user_extra={"bob@example.com": "userdb_quota_rule=*:storage=100"},
        )
        yield server.start()
        port = server.ports["lmtp_listen"]

        def send():
            client = smtplib.LMTP("127.0.0.1", port, timeout=30)
            try:
                client.ehlo_or_helo_if_needed()
                client.mail("s@remote.example")
                self.assertEqual(client.rcpt("alice@example.com")[0], 250)
                self.assertEqual(client.rcpt("bob@example.com")[0], 250)
                client.putcmd("data")
                code, _ = client.getreply()
                assert code == 354, code
                client.send(MESSAGE + b"x" * 200 + b"\r\n.\r\n")
                return [client.getreply(), client.getreply()]
            finally:
                client.quit()

        replies = yield deferToThread(send)
        self.assertEqual([code for code, _ in replies], [250, 552])
        self.assertTrue(replies[1][1].startswith(b"5.2.2"), replies)
        self.assertEqual(len(server.messages("alice")), 1)
        self.assertEqual(server.messages("bob"), [])


class StaleSocketTests(TestCase):

    @inlineCallbacks
    def test_regression_stale_lmtp_socket_replaced(self):
        """A socket left by a killed daemon no longer stops the next start (EADDRINUSE)."""
        import socket

        path = socket_path(self)
        stale = socket.socket(socket.AF_UNIX)
        stale.bind(path)
        stale.close()  # the file stays, nobody listens: what kill -9 leaves
        server = RunningServer(self, extra=f"lmtp_listen = unix:{path}\n", listeners=())
        yield server.start()

        def talk():
            client = smtplib.LMTP(path, timeout=30)
            try:
                return client.ehlo()[0]
            finally:
                client.quit()

        self.assertEqual((yield deferToThread(talk)), 250)

    @inlineCallbacks
    def test_regression_lmtp_socket_mode_0660(self):
        """Was 0666 (Twisted's default) unless the description gave C{mode=}; a given mode is kept."""
        import stat

        path = socket_path(self)
        server = RunningServer(self, extra=f"lmtp_listen = unix:{path}, unix:{path}-open:mode=666\n", listeners=())
        yield server.start()
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o660)
        self.assertEqual(stat.S_IMODE(os.stat(path + "-open").st_mode), 0o666)

    def test_live_socket_left_alone(self) -> None:
        import socket

        from mailserver.stale_socket import remove_stale_socket

        path = socket_path(self)
        live = socket.socket(socket.AF_UNIX)
        live.bind(path)
        live.listen(1)
        self.addCleanup(live.close)
        self.assertFalse(remove_stale_socket(path))
        self.assertTrue(os.path.exists(path))
        self.assertFalse(remove_stale_socket(path + ".missing"))
