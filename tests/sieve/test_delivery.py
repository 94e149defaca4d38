"""Sieve at final delivery, end to end over SMTP on loopback (service.py wiring, real Maildirs)."""

from __future__ import annotations

import os
import smtplib

from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from mailserver.sieve.scripts import UserScripts
from tests.fakes import MemoryQueue
from tests.harness import RunningServer

MESSAGE = (
    b"From: Carol <carol@remote.example>\r\nTo: alice@example.com\r\nSubject: report 42\r\n"
    b"Message-ID: <m1@remote.example>\r\n\r\nbody\r\n"
)


class _SieveServer(TestCase):
    """A running server whose outbound queue is a MemoryQueue; alice's scripts in C{scripts}."""

    timeout = 60

    @inlineCallbacks
    def setUp(self):
        self.server = RunningServer(self, extra=self.extra(), listeners=self.listeners)
        yield self.server.start()
        self.queue = MemoryQueue()
        self.server.service.server.core.committer.queue = self.queue
        self.scripts = UserScripts(self.server.maildir("alice"))

    listeners = ("smtpd_listen",)

    def extra(self) -> str:
        return ""

    def install(self, text: str) -> None:
        self.scripts.write("main", text.encode())
        self.scripts.set_active("main")

    def send(self, message=MESSAGE, sender="carol@remote.example", recipients=("alice@example.com",)):
        def run():
            with smtplib.SMTP("127.0.0.1", self.server.ports["smtpd_listen"], timeout=30) as client:
                return client.sendmail(sender, list(recipients), message)
        return deferToThread(run)

    def folder_files(self, folder: str, sub: str) -> list[str]:
        path = os.path.join(self.server.maildir("alice"), folder, sub)
        return sorted(os.listdir(path)) if os.path.isdir(path) else []


class SieveDeliveryTests(_SieveServer):
    @inlineCallbacks
    def test_fileinto_folder_with_flags(self):
        self.install('require ["fileinto", "imap4flags", "mailbox"];\n'
                     'if header :contains "subject" "report" { fileinto :create :flags ["\\\\Seen", "\\\\Flagged"] "Reports/Daily"; }')
        yield self.send()
        [name] = self.folder_files(".Reports.Daily", "cur")
        self.assertTrue(name.endswith(":2,FS"), name)
        self.assertEqual(self.folder_files(".", "new"), [])

    @inlineCallbacks
    def test_each_recipient_own_script(self):
        self.install('discard;')
        bob = UserScripts(self.server.maildir("bob"))
        bob.write("b", b'require ["fileinto", "mailbox"]; fileinto :create "FromCarol";')
        bob.set_active("b")
        yield self.send(recipients=("alice@example.com", "bob@example.com", "postmaster@example.com"))
        self.assertEqual(self.folder_files(".", "new"), [])
        self.assertEqual(len(os.listdir(os.path.join(self.server.maildir("bob"), ".FromCarol", "new"))), 1)
        self.assertEqual(len(self.server.messages("postmaster")), 1)

    @inlineCallbacks
    def test_missing_folder_without_create_goes_to_inbox(self):
        self.install('require "fileinto"; fileinto "Nowhere";')
        yield self.send()
        self.assertEqual(len(self.folder_files(".", "new")), 1)
        self.assertFalse(os.path.exists(os.path.join(self.server.maildir("alice"), ".Nowhere")))

    @inlineCallbacks
    def test_vacation_once_per_period_not_to_lists_or_null(self):
        self.install('require "vacation"; vacation :days 1 :subject "Away" "I am away.";')
        yield self.send()
        yield self.send()
        [(sender, recipients, reply)] = self.queue.queued
        self.assertEqual((sender, recipients), ("", ["carol@remote.example"]))
        self.assertIn(b"Auto-Submitted: auto-replied", reply)
        self.assertIn(b"In-Reply-To: <m1@remote.example>", reply)
        self.assertIn(b"I am away.", reply)
        yield self.send(sender="")
        yield self.send(MESSAGE.replace(b"Subject:", b"List-Id: <l.example>\r\nSubject:"), sender="dave@remote.example")
        yield self.send(MESSAGE.replace(b"Subject:", b"Precedence: bulk\r\nSubject:"), sender="erin@remote.example")
        yield self.send(MESSAGE.replace(b"To: alice@", b"To: other@"), sender="frank@remote.example")
        self.assertEqual(len(self.queue.queued), 1)
        self.assertEqual(len(self.folder_files(".", "new")), 6)  # vacation keeps every message

    @inlineCallbacks
    def test_reject_notice_queued_and_nothing_stored(self):
        self.install('require "reject"; reject "Not wanted here.";')
        yield self.send()
        [(sender, recipients, notice)] = self.queue.queued
        self.assertEqual((sender, recipients), ("", ["carol@remote.example"]))
        self.assertIn(b"Not wanted here.", notice)
        self.assertIn(b"report-type=disposition-notification", notice)
        self.assertEqual(self.folder_files(".", "new"), [])
        yield self.send(sender="")
        self.assertEqual(len(self.queue.queued), 1)  # never to <>

    @inlineCallbacks
    def test_redirect_queued_with_original_sender(self):
        self.install('redirect "someone@remote.example";')
        yield self.send()
        [(sender, recipients, copy)] = self.queue.queued
        self.assertEqual((sender, recipients), ("carol@remote.example", ["someone@remote.example"]))
        self.assertTrue(copy.startswith(b"X-Sieve-Redirected-From: alice@example.com\n"))
        self.assertEqual(self.folder_files(".", "new"), [])

    @inlineCallbacks
    def test_sendmail_pickup_is_filtered_too(self):
        import io
        import time

        from mailserver.cli.sendmail import parse_arguments
        from mailserver.cli.sendmail import run as sendmail_run

        self.install('require ["fileinto", "mailbox"]; fileinto :create "Local";')
        status = sendmail_run(parse_arguments(["-i", "-f", "root", "--", "alice@example.com"]), self.server.config,
                              io.BytesIO(b"Subject: cron\n\noutput\n"), io.StringIO(), io.StringIO())
        self.assertEqual(status, 0)
        for _ in range(100):
            if self.folder_files(".Local", "new"):
                break
            yield deferToThread(time.sleep, 0.05)
        self.assertEqual(len(self.folder_files(".Local", "new")), 1)

    @inlineCallbacks
    def test_broken_script_keeps_message_and_logs(self):
        self.install('require "fileinto"; fileinto ;')
        yield self.send()
        self.assertEqual(len(self.folder_files(".", "new")), 1)
        with open(self.scripts.log_path) as handle:
            self.assertIn("line 1", handle.read())

    @inlineCallbacks
    def test_runtime_error_keeps_message(self):
        self.install('require "include"; include "missing";')
        yield self.send()
        self.assertEqual(len(self.folder_files(".", "new")), 1)
        with open(self.scripts.log_path) as handle:
            self.assertIn("does not exist", handle.read())


class GlobalScriptTests(_SieveServer):
    """sieve_before runs first; a fileinto there ends the sequence (Pigeonhole's multiscript)."""

    def extra(self) -> str:
        self.before = os.path.abspath(self.mktemp())
        with open(self.before, "w") as handle:
            handle.write('require "fileinto"; if header :contains "subject" "spam" { fileinto "Junk"; stop; }\n')
        return f"sieve_before = {self.before}\nlda_mailbox_autocreate = yes\n"

    @inlineCallbacks
    def test_before_script_files_spam(self):
        self.install('discard;')
        yield self.send(MESSAGE.replace(b"report 42", b"spam offer"))
        self.assertEqual(len(self.folder_files(".Junk", "new")), 1)
        yield self.send()
        self.assertEqual(len(self.folder_files(".Junk", "new")), 1)
        self.assertEqual(self.folder_files(".", "new"), [])  # the user's discard ran


class SieveThenIMAPTests(_SieveServer):
    """What Sieve filed with flags is seen over IMAP with those flags."""

    listeners = ("smtpd_listen", "imap_listen")

    @inlineCallbacks
    def test_filed_flagged_message_read_over_imap(self):
        import imaplib

        self.install('require ["fileinto", "imap4flags", "mailbox"]; fileinto :create :flags ["\\\\Flagged", "$Work"] "Reports";')
        yield self.send()

        def read():
            client = imaplib.IMAP4("127.0.0.1", self.server.ports["imap_listen"], timeout=30)
            try:
                client.login("alice@example.com", "secret")
                typ, data = client.select("Reports")
                count = int(data[0])
                typ, flags = client.fetch("1", "(FLAGS)")
                return count, flags[0]
            finally:
                client.logout()

        count, flags = yield deferToThread(read)
        self.assertEqual(count, 1)
        self.assertIn(b"\\Flagged", flags)
        self.assertIn(b"$Work", flags)
        self.assertNotIn(b"\\Seen", flags)
