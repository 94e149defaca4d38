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

        # The checker's failure delay is 2 s by default (auth_failure_delay).
        return deferToThread(login).addCallback(lambda error: self.assertIn("-ERR", error or ""))
