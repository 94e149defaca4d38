"""Content checks over real SMTP sessions, with the shipped sample tables (the seed scenarios)."""

from __future__ import annotations

import base64
import os
import shutil
import smtplib
import time

from twisted.internet.threads import deferToThread
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase

from tests.delivery.test_checks import nested_exe
from tests.harness import RunningServer

ETC = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "etc")


def attachment(name: str) -> bytes:
    payload = base64.b64encode(b"MZ\x90\x00 not really a program").decode()
    return (
        "Subject: files\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n'
        "--b1\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
        f'--b1\r\nContent-Type: application/octet-stream; name="{name}"\r\n'
        f'Content-Disposition: attachment; filename="{name}"\r\n'
        f"Content-Transfer-Encoding: base64\r\n\r\n{payload}\r\n--b1--\r\n"
    ).encode()


class CheckSessionTests(TestCase):
    timeout = 60

    def setUp(self):
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        for name in ("header_checks", "body_checks", "mime_header_checks"):
            shutil.copy(os.path.join(ETC, name), directory)
        with open(os.path.join(directory, "header_checks"), "a") as handle:
            handle.write("/^Subject:.*quarantine me/ HOLD suspicious subject\n")
        self.directory = directory
        self.server = RunningServer(self, extra=(
            f"header_checks = regexp:{directory}/header_checks\n"
            f"body_checks = regexp:{directory}/body_checks\n"
            f"mime_header_checks = regexp:{directory}/mime_header_checks\n"
        ))
        return self.server.start()

    def send(self, message: bytes):
        def run():
            with smtplib.SMTP("127.0.0.1", self.server.ports["smtpd_listen"], timeout=30) as client:
                client.ehlo("c")
                client.mail("x@remote.example")
                client.rcpt("bob@example.com")
                client.rcpt("alice@example.com")
                return client.data(message)

        return deferToThread(run)

    def assertRefused(self, reply, text: bytes):
        self.assertEqual(reply[0], 550)
        self.assertTrue(reply[1].startswith(b"5.7.1 "), reply)
        self.assertIn(text, reply[1])
        self.assertEqual(self.server.messages("bob") + self.server.messages("alice"), [])

    def test_lottery_subject_refused_with_rule_text(self):
        return self.send(b"Subject: You won the lottery!\r\n\r\nclaim now\r\n").addCallback(
            self.assertRefused, b"No lottery spam, thank you")

    def test_encoded_lottery_subject_refused(self):
        encoded = base64.b64encode("Big lottery win €".encode()).decode()
        message = f"Subject: =?utf-8?b?{encoded}?=\r\n\r\nclaim now\r\n".encode()
        return self.send(message).addCallback(self.assertRefused, b"No lottery spam")

    def test_i_love_you_body_refused(self):
        def check(reply):
            self.assertEqual(reply, (550, b"5.7.1 message content rejected"))
            self.assertEqual(self.server.messages("bob") + self.server.messages("alice"), [])

        return self.send(b"Subject: hi\r\n\r\nhello\r\nI love you\r\nbye\r\n").addCallback(check)

    def test_exe_refused_pdf_passes(self):
        def pdf(reply):
            self.assertRefused(reply, b"invoice.exe")
            return self.send(attachment("invoice.pdf"))

        def delivered(reply):
            self.assertEqual(reply[0], 250)
            self.assertEqual(len(self.server.messages("bob")), 1)

        return self.send(attachment("invoice.exe")).addCallback(pdf).addCallback(delivered)

    def test_regression_mime_nesting_beyond_limit_refused_over_smtp(self):
        lines: list[str] = []

        def observe(event):
            lines.append(formatEvent(event))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)

        def check(reply):
            self.assertEqual(reply, (550, b"5.6.0 MIME nesting exceeds safety limit"))
            self.assertEqual(self.server.messages("bob") + self.server.messages("alice"), [])
            [mime_error] = [line for line in lines if "mime-error" in line]
            self.assertIn(": cleanup: reject: mime-error MIME nesting exceeds safety limit: Content-Type:", mime_error)
            self.assertTrue([line for line in lines if "status=reject (5.6.0 MIME nesting" in line], lines)

        return self.send(nested_exe(101, crlf=True)).addCallback(check)

    def test_hold_keeps_message_out_of_mailboxes(self):
        area = self.server.service.server.hold_area

        def check(reply):
            self.assertEqual(reply[0], 250)
            self.assertEqual(self.server.messages("bob"), [])
            [held] = area.list()
            area.mark_released(held.id)
            return self.releaser().run()

        def released(_):
            self.assertEqual(area.list(), [])
            [bob] = self.server.messages("bob")
            self.assertIn(b"Subject: please quarantine me\n", bob)
            self.assertEqual(len(self.server.messages("alice")), 1)

        return self.send(b"Subject: please quarantine me\r\n\r\nx\r\n").addCallback(check).addCallback(released)

    def releaser(self):
        from mailserver.service import HoldReleaser

        return next(s for s in self.server.service if isinstance(s, HoldReleaser))

    def test_table_reload_without_restart(self):
        path = os.path.join(self.directory, "body_checks")

        def edit(reply):
            self.assertEqual(reply[0], 250)
            with open(path, "a") as handle:
                handle.write("/^forbidden words$/ REJECT not here\n")
            os.utime(path, (time.time() + 5, time.time() + 5))
            return self.server.service.server.checks.reload()

        def resend(_):
            return self.send(b"Subject: s\r\n\r\nforbidden words\r\n")

        return self.send(b"Subject: s\r\n\r\nforbidden words\r\n").addCallback(edit).addCallback(resend).addCallback(
            lambda reply: self.assertEqual(reply, (550, b"5.7.1 not here")))
