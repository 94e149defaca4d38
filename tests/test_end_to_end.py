"""SMTP in, POP3 out, over loopback against the service built by service.py."""

from __future__ import annotations

import poplib
import smtplib

from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.harness import RunningServer


class SMTPThenPOP3Tests(TestCase):
    timeout = 60

    def setUp(self):
        self.server = RunningServer(self, listeners=("smtpd_listen", "pop3_listen"))
        return self.server.start()

    def test_delivered_message_read_back_over_pop3(self):
        sent = b"Subject: round trip\r\nMessage-ID: <rt@x>\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n\r\nbody\r\n.leading dot\r\n"

        def exchange():
            with smtplib.SMTP("127.0.0.1", self.server.ports["smtpd_listen"], timeout=30) as client:
                client.sendmail("x@remote.example", ["alice@example.com"], sent)
            pop = poplib.POP3("127.0.0.1", self.server.ports["pop3_listen"], timeout=30)
            try:
                pop.user("alice@example.com")
                pop.pass_("secret")
                count, _ = pop.stat()
                _, lines, _ = pop.retr(1)
                uidl = pop.uidl(1)
            finally:
                pop.quit()
            return count, lines, uidl

        def check(result):
            count, lines, uidl = result
            self.assertEqual(count, 1)
            [stored] = self.server.messages_any("alice")
            self.assertEqual(b"\r\n".join(lines) + b"\r\n", stored.replace(b"\n", b"\r\n"))
            self.assertTrue(b"\r\n".join(lines).endswith(b"\r\n\r\nbody\r\n.leading dot"))

        return deferToThread(exchange).addCallback(check)

    def test_wrong_password_refused(self):
        def login():
            pop = poplib.POP3("127.0.0.1", self.server.ports["pop3_listen"], timeout=30)
            pop.user("alice@example.com")
            try:
                pop.pass_("wrong")
            except poplib.error_proto as error:
                return str(error)
            finally:
                pop.close()
            return None

        # The harness sets auth_failure_delay = 0: the delay is tested on a fake clock.
        return deferToThread(login).addCallback(
            lambda error: self.assertIn("-ERR [AUTH] Authentication failed.", error or ""))


class SMTPThenIMAPTests(TestCase):
    """Deliver over SMTP, read over IMAP (imaplib) byte-identical; IDLE wakes on delivery."""

    timeout = 60

    def setUp(self):
        self.server = RunningServer(self, listeners=("smtpd_listen", "imap_listen", "pop3_listen"))
        return self.server.start()

    def smtp_send(self, body: bytes) -> None:
        with smtplib.SMTP("127.0.0.1", self.server.ports["smtpd_listen"], timeout=30) as client:
            client.sendmail("x@remote.example", ["alice@example.com"], body)

    def test_delivered_message_read_back_over_imap(self):
        import imaplib

        sent = b"Subject: imap trip\r\nMessage-ID: <it@x>\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n\r\nbody line\r\n"

        def exchange():
            self.smtp_send(sent)
            imap = imaplib.IMAP4("127.0.0.1", self.server.ports["imap_listen"], timeout=30)
            try:
                imap.login("alice@example.com", "secret")
                typ, data = imap.select("INBOX")
                count = int(data[0])
                typ, fetched = imap.uid("FETCH", "1:*", "(UID BODY.PEEK[])")
                listing = imap.list()[1]
            finally:
                imap.logout()
            return count, fetched, listing

        def check(result):
            count, fetched, listing = result
            self.assertEqual(count, 1)
            body = fetched[0][1]
            [stored] = self.server.messages_any("alice")
            self.assertEqual(body, stored.replace(b"\n", b"\r\n"))
            names = b" ".join(listing)
            for folder in (b"Sent", b"Drafts", b"Trash", b"Junk"):
                self.assertIn(folder, names)

        return deferToThread(exchange).addCallback(check)

    def test_idle_wakes_when_smtp_delivers(self):
        import socket
        import time

        def exchange():
            sock = socket.create_connection(("127.0.0.1", self.server.ports["imap_listen"]), timeout=30)
            stream = sock.makefile("rb")
            stream.readline()
            sock.sendall(b"a1 LOGIN alice@example.com secret\r\na2 SELECT INBOX\r\n")
            while not stream.readline().startswith(b"a2 "):
                pass
            sock.sendall(b"a3 IDLE\r\n")
            assert stream.readline().startswith(b"+")
            start = time.monotonic()
            self.smtp_send(b"Subject: wake up\r\n\r\nnow\r\n")
            line = stream.readline()
            elapsed = time.monotonic() - start
            sock.sendall(b"DONE\r\na4 LOGOUT\r\n")
            sock.close()
            return line, elapsed

        def check(result):
            line, elapsed = result
            self.assertEqual(line.strip(), b"* 1 EXISTS")
            self.assertLess(elapsed, 5)

        return deferToThread(exchange).addCallback(check)
