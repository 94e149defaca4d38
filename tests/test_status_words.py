"""
Postfix's status words on the one line per message (issue 14): local
Maildir delivery says delivered, a hand-over to the outbound queue says
queued, and the queue manager says sent, deferred or bounced per recipient.
"""

from __future__ import annotations

import re

from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from mailserver.errors import MailError
from mailserver.smtp.factory import SMTPFactory
from mailserver.smtp.server import SMTPPolicy
from tests.fakes import MemoryQueue, MemoryStore, anonymous_portal, build_core
from tests.queue.test_manager import LATER, MESSAGE, OK, REFUSED, ManagerTestCase
from tests.smtp.test_server import Session


class _FailingStore(MemoryStore):
    def __init__(self, error: MailError) -> None:
        super().__init__()
        self.error = error

    def deliver(self, message, targets):
        from twisted.internet.defer import fail

        return fail(self.error)


class TransactionStatusTests(SynchronousTestCase):
    """The SMTP side's line: delivered, queued, deferred, bounced."""

    def line(self, rcpt: str, store=None, client_ip: str = "127.0.0.1") -> tuple[str, dict]:
        clock = MemoryReactorClock()
        clock.advance(1000)
        core = build_core(clock, store=store or MemoryStore(), queue=MemoryQueue())
        policy = SMTPPolicy(hostname="mx.example.com", banner="mx ESMTP", message_size_limit=1000,
                            hard_error_limit=20, line_length_limit=512)
        factory = SMTPFactory(anonymous_portal(core), policy, clock, max_connections=3, per_client_limit=2)
        session = Session(factory, client_ip)
        with capturedLogs() as events:
            session.send(f"EHLO c\r\nMAIL FROM:<x@example.com>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n".encode())
            clock.advance(2.5)
            session.send(b"Subject: hi\r\n\r\nbody\r\n.\r\n")
        [event] = [e for e in events if "delivery_line" in e]
        return formatEvent(event), event

    def test_regression_local_delivery_logged_as_delivered(self) -> None:
        text, event = self.line("alice@example.com")
        self.assertRegex(text, r", status=delivered \(delivered to alice@example\.com\)$")
        self.assertEqual(event["status"], "delivered")
        self.assertEqual(event["delay"], 2.5)

    def test_regression_remote_recipient_logged_as_queued(self) -> None:
        """Mail only handed to the outbound queue said status=delivered (sent before that)."""
        text, event = self.line("carol@remote.example")
        self.assertRegex(text, r", status=queued \(delivered to carol@remote\.example\)$")
        self.assertEqual(event["status"], "queued")

    def test_temporary_store_failure_logged_as_deferred(self) -> None:
        text, _ = self.line("alice@example.com", store=_FailingStore(MailError(451, "4.3.0", "disk full")))
        self.assertRegex(text, r", status=deferred \(4\.3\.0 disk full\)$")

    def test_permanent_failure_logged_as_bounced(self) -> None:
        text, _ = self.line("alice@example.com", store=_FailingStore(MailError(550, "5.7.1", "no")))
        self.assertRegex(text, r", status=bounced \(5\.7\.1 no\)$")


class QueueStatusTests(ManagerTestCase):
    """The queue manager's line per recipient: sent, deferred, bounced."""

    async def status_of(self, result) -> str:
        self.relay.script["bob@example.org"] = [result]
        manager = await self.started()
        with capturedLogs() as events:
            await manager.spool.enqueue("alice@example.com", ["bob@example.org"], MESSAGE)
            await manager.idle()
        [line] = [formatEvent(e) for e in events if e.get("status") and e.get("to") == "bob@example.org"]
        return re.search(r"status=(\w+)", line).group(1)

    async def test_remote_acceptance_logged_as_sent(self) -> None:
        self.assertEqual(await self.status_of(OK), "sent")

    async def test_temporary_failure_logged_as_deferred(self) -> None:
        self.assertEqual(await self.status_of(LATER), "deferred")

    async def test_permanent_failure_logged_as_bounced(self) -> None:
        self.assertEqual(await self.status_of(REFUSED), "bounced")


