"""The outbound side wired by service.py: relay to a (fake) remote MX, bounces, sendmail pickup."""

from __future__ import annotations

import email
import os
import io
import smtplib

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from mailserver.cli.sendmail import parse_arguments
from mailserver.cli.sendmail import run as sendmail_run
from tests.harness import RunningServer, write_table
from tests.queue.remote import FakeResolver, ScriptedESMTPFactory


class RelayThroughServiceTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def setUp(self):
        self.remote = ScriptedESMTPFactory()
        self.port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(self.remote)
        self.addCleanup(self.port.stopListening)
        resolver = FakeResolver(mx={"remote.example": [(10, "mx.remote.example")]},
                                a={"mx.remote.example": ["127.0.0.1"]})
        self.server = RunningServer(self, extra="mynetworks = 127.0.0.0/8\n", resolver=resolver,
                                    relay_port=self.port.getHost().port)
        yield self.server.start()
        self.manager = self.server.service.server.queue_manager

    def send(self, recipients):
        def run():
            with smtplib.SMTP("127.0.0.1", self.server.ports["smtpd_listen"], timeout=30) as client:
                return client.sendmail("alice@example.com", recipients, b"Subject: out\r\n\r\nto the world\r\n")
        return deferToThread(run)

    @inlineCallbacks
    def test_mynetworks_client_relays_to_remote_mx(self):
        refused = yield self.send(["carol@remote.example"])
        self.assertEqual(refused, {})
        yield self.manager.flush()
        yield self.remote.wait_closed()
        [transaction] = self.remote.delivered
        self.assertRegex(transaction.mail_from, rb"^<alice@example\.com>( |$)")
        self.assertEqual(transaction.recipients, [b"carol@remote.example"])
        self.assertIn(b"to the world", transaction.data)
        remaining = yield self.server.service.server.spool.list()
        self.assertEqual(remaining, [])

    @inlineCallbacks
    def test_permanent_failure_bounces_to_sender(self):
        self.remote.script("carol@remote.example", b"550 5.1.1 <carol@remote.example>: no such user here")
        yield self.send(["carol@remote.example"])
        yield self.manager.flush()
        yield self.remote.wait_closed()
        yield self.manager.idle()
        [bounce] = self.server.messages("alice")
        self.assertIn(b"Return-Path: <>\n", bounce)
        report = email.message_from_bytes(bounce)
        self.assertEqual(report.get_content_type(), "multipart/report")
        self.assertIn(b"no such user here", bounce)


class SendmailPickupTests(TestCase):
    timeout = 60

    def setUp(self):
        self.server = RunningServer(self)
        return self.server.start()

    @inlineCallbacks
    def test_sendmail_message_is_picked_up_and_delivered(self):
        config = self.server.config
        stdin = io.BytesIO(b"Subject: from the host\n\nhello bob\n")
        status = sendmail_run(parse_arguments(["-i", "-f", "root", "--", "bob@example.com"]), config,
                              stdin, io.StringIO(), io.StringIO())
        self.assertEqual(status, 0)
        for _ in range(50):
            if self.server.messages("bob"):
                break
            yield deferToThread(lambda: __import__("time").sleep(0.1))
        [message] = self.server.messages("bob")
        self.assertIn(b"Received: by mx.example.com (mailserver) id ", message)
        self.assertIn(b"Subject: from the host\n", message)
        self.assertIn(b"\nMessage-ID: <", message)
        self.assertIn(b"\nFrom: ", message)
        self.assertTrue(message.endswith(b"\nhello bob\n"))

    @inlineCallbacks
    def test_regression_sendmail_unknown_local_recipient_bounces(self):
        """sendmail to a user that does not exist: a DSN to the sender, not maildrop/corrupt/ and exit 0."""
        config = self.server.config
        pickup = self.server.service.server.pickup
        yield pickup.ready
        stdin = io.BytesIO(b"Subject: test\n\nhello\n")
        status = sendmail_run(parse_arguments(["-i", "-f", "alice@example.com", "--", "root", "bob@example.com"]),
                              config, stdin, io.StringIO(), io.StringIO())
        self.assertEqual(status, 0)
        yield pickup.scan()
        [delivered] = self.server.messages("bob")
        self.assertIn(b"Subject: test\n", delivered)
        [bounce] = self.server.messages("alice")
        report = email.message_from_bytes(bounce)
        self.assertEqual(report.get_content_type(), "multipart/report")
        self.assertIn(b"Final-Recipient: rfc822; root@mx.example.com", bounce)
        self.assertIn(b"Status: 5.1.1", bounce)
        maildrop = os.path.join(config.data_directory, "maildrop")
        self.assertEqual(os.listdir(os.path.join(maildrop, "corrupt")), [])
        self.assertEqual([n for n in os.listdir(maildrop) if n != "corrupt"], [])


class DefaultAliasesTests(TestCase):
    timeout = 60

    def setUp(self):
        from mailserver.config.embedded import DEFAULT_ALIASES

        aliases = write_table(self, DEFAULT_ALIASES)
        self.server = RunningServer(self, extra=f"alias_maps = texthash:{aliases}\n")
        return self.server.start()

    @inlineCallbacks
    def test_regression_mail_to_root_reaches_postmaster_mailbox(self):
        """The README's `mail -s test root`: root had no mailbox by default and the mail was set aside."""
        pickup = self.server.service.server.pickup
        yield pickup.ready
        status = sendmail_run(parse_arguments(["-i", "--", "root"]), self.server.config,
                              io.BytesIO(b"Subject: test\n\nhello root\n"), io.StringIO(), io.StringIO())
        self.assertEqual(status, 0)
        yield pickup.scan()
        [message] = self.server.messages("postmaster", "mx.example.com")
        self.assertIn(b"hello root", message)


class PickupRejectTests(TestCase):
    timeout = 60

    def setUp(self):
        checks = write_table(self, "/^Subject: .*forbidden/ REJECT no forbidden things\n", "header_checks")
        self.server = RunningServer(self, extra=f"header_checks = regexp:{checks}\n")
        return self.server.start()

    @inlineCallbacks
    def test_content_check_reject_bounces_to_the_sender(self):
        pickup = self.server.service.server.pickup
        yield pickup.ready
        status = sendmail_run(parse_arguments(["-i", "-f", "alice@example.com", "--", "bob@example.com"]),
                              self.server.config, io.BytesIO(b"Subject: forbidden fruit\n\nx\n"),
                              io.StringIO(), io.StringIO())
        self.assertEqual(status, 0)
        yield pickup.scan()
        self.assertEqual(self.server.messages("bob"), [])
        [bounce] = self.server.messages("alice")
        self.assertIn(b"Final-Recipient: rfc822; bob@example.com", bounce)
        self.assertIn(b"Status: 5.7.1", bounce)
        self.assertIn(b"no forbidden things", bounce)


class PickupRecipientLimitTests(TestCase):
    timeout = 60

    def setUp(self):
        self.server = RunningServer(self, extra="smtpd_recipient_limit = 1\n")
        return self.server.start()

    @inlineCallbacks
    def test_regression_sendmail_list_longer_than_smtpd_recipient_limit(self):
        """The SMTP limit's 452 4.5.3 made a local message to many recipients wait forever."""
        pickup = self.server.service.server.pickup
        yield pickup.ready
        status = sendmail_run(parse_arguments(["-i", "--", "alice@example.com", "bob@example.com"]),
                              self.server.config, io.BytesIO(b"Subject: all\n\nhello\n"), io.StringIO(), io.StringIO())
        self.assertEqual(status, 0)
        yield pickup.scan()
        self.assertEqual((len(self.server.messages("alice")), len(self.server.messages("bob"))), (1, 1))
