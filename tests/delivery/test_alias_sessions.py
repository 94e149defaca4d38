"""Aliases over real SMTP sessions: the seed scenario and the refusals at RCPT."""

from __future__ import annotations

import os
import smtplib

from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.harness import RunningServer

ALIASES = """\
# seed scenario
admin: harry
Team: alice, bob, harry, alice
loop1: loop2
loop2: loop1
ghost: nobody-here
far: someone@elsewhere.example
staff: alice, carol@remote.example
owner-staff: harry
"""


def server_with_aliases(testcase: TestCase, aliases: str, **options) -> RunningServer:
    """A server whose C{alias_maps} is a file holding C{aliases}."""
    directory = os.path.abspath(testcase.mktemp())
    os.makedirs(directory)
    path = os.path.join(directory, "aliases")
    with open(path, "w") as handle:
        handle.write(aliases)
    return RunningServer(testcase, extra=f"alias_maps = hash:{path}\n", **options)


class AliasSessionTests(TestCase):
    timeout = 60

    def setUp(self):
        self.server = server_with_aliases(
            self, ALIASES, users={"alice@example.com": "a", "bob@example.com": "b", "harry": "h"}
        )
        return self.server.start()

    def session(self, *recipients: str) -> dict:
        def send():
            with smtplib.SMTP("127.0.0.1", self.server.ports["smtpd_listen"], timeout=30) as client:
                client.ehlo("c")
                client.mail("sender@remote.example")
                replies = {r: client.rcpt(r) for r in recipients}
                if any(code == 250 for code, _ in replies.values()):
                    client.data(b"Subject: alias test\r\n\r\nhello\r\n")
                return replies

        return deferToThread(send)

    def harry(self) -> list[bytes]:
        path = os.path.join(self.server.config.virtual_mailbox_base, "harry", "new")
        return [open(os.path.join(path, n), "rb").read() for n in sorted(os.listdir(path))] if os.path.isdir(path) else []

    def test_admin_reaches_harry(self):
        def check(replies):
            self.assertEqual(replies["ADMIN@example.com"][0], 250)
            [message] = self.harry()
            self.assertTrue(message.startswith(
                b"Return-Path: <sender@remote.example>\nX-Original-To: ADMIN@example.com\nDelivered-To: harry@example.com\n"))
        return self.session("ADMIN@example.com").addCallback(check)

    def test_list_delivers_each_member_once(self):
        def check(replies):
            self.assertEqual(replies["team@example.com"][0], 250)
            self.assertEqual(len(self.server.messages("alice")), 1)
            self.assertEqual(len(self.server.messages("bob")), 1)
            self.assertEqual(len(self.harry()), 1)
        return self.session("team@example.com").addCallback(check)

    def test_refusals_with_reasons(self):
        def check(replies):
            code, text = replies["loop1@example.com"]
            self.assertEqual((code, text[:5]), (550, b"5.4.6"))
            self.assertIn(b"loop", text.lower())
            code, text = replies["ghost@example.com"]
            self.assertEqual((code, text[:5]), (550, b"5.1.1"))
            code, text = replies["far@example.com"]
            self.assertEqual(code, 250)  # the remote target goes to the outbound queue
            self.assertEqual(self.harry(), [])
        return self.session("loop1@example.com", "ghost@example.com", "far@example.com").addCallback(check)


class MailerDaemonTests(TestCase):
    """Issue 17 item 4: MAILER-DAEMON follows a configured postmaster alias."""

    timeout = 60

    def setUp(self):
        self.server = server_with_aliases(self, "postmaster: harry\n", users={"harry": "h"})
        return self.server.start()

    def test_regression_mailer_daemon_routed_like_postmaster(self):
        def send():
            with smtplib.SMTP("127.0.0.1", self.server.ports["smtpd_listen"], timeout=30) as client:
                return client.sendmail("x@remote.example", ["MAILER-DAEMON@example.com", "postmaster@example.com"],
                                       b"Subject: md\r\n\r\nhi\r\n")

        def check(refused):
            self.assertEqual(refused, {})
            base = self.server.config.virtual_mailbox_base
            self.assertEqual(len(os.listdir(os.path.join(base, "harry", "new"))), 1)  # one copy for both
            self.assertFalse(os.path.exists(os.path.join(base, "example.com", "postmaster")))

        return deferToThread(send).addCallback(check)


class ListOwnerTests(TestCase):
    """owner-NAME takes the bounces of list NAME: its copies carry owner-NAME as envelope sender."""

    timeout = 60

    def setUp(self):
        self.server = server_with_aliases(self, ALIASES, users={"alice@example.com": "a", "harry": "h"})
        return self.server.start()

    def test_list_copies_use_the_owner_as_sender(self):
        spool = self.server.service.server.spool
        manager = self.server.service.server.queue_manager
        manager.stopService()  # keep the remote copy in the queue to inspect it

        def send():
            with smtplib.SMTP("127.0.0.1", self.server.ports["smtpd_listen"], timeout=30) as client:
                return client.sendmail("poster@remote.example", ["staff@example.com", "mailer-daemon@example.com"],
                                       b"Subject: list\r\n\r\nhi\r\n")

        def check(refused):
            self.assertEqual(refused, {})
            [local] = self.server.messages("alice")
            self.assertTrue(local.startswith(b"Return-Path: <owner-staff@example.com>\n"), local[:80])
            [postmaster] = self.server.messages("postmaster")
            self.assertTrue(postmaster.startswith(b"Return-Path: <poster@remote.example>\n"))
            return spool.list()

        def queued(entries):
            [entry] = entries
            self.assertEqual(entry.sender, "owner-staff@example.com")
            self.assertEqual([r.address for r in entry.recipients], ["carol@remote.example"])

        return deferToThread(send).addCallback(check).addCallback(queued)
