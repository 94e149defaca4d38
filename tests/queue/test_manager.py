"""The queue runner: retries on a fake clock, bounces, expiry, restarts, flush."""

from __future__ import annotations

import email
import errno
import email.policy
import os
import time

from twisted.internet import reactor
from twisted.internet.defer import fail, succeed
from twisted.internet.task import Clock, deferLater
from twisted.logger import capturedLogs
from twisted.trial.unittest import TestCase

from mailserver.errors import MailError
from mailserver.queue.envelope import BOUNCED, DELIVERED, PENDING
from mailserver.queue.manager import QueueManager
from mailserver.queue.relay import BOUNCED as R_BOUNCED
from mailserver.queue.relay import DELIVERED as R_DELIVERED
from mailserver.queue.relay import DEFERRED as R_DEFERRED
from mailserver.queue.relay import Relay, RecipientResult
from mailserver.queue.spool import ACTIVE, DEFERRED, Spool, SpoolDirectory
from tests.queue.remote import FakeResolver, ScriptedESMTPFactory

MESSAGE = b"From: alice@example.com\nTo: bob@example.org\nSubject: report\nMessage-ID: <m1@example.com>\n\nbody\n"

OK = (R_DELIVERED, "2.0.0", "250 2.0.0 Ok: queued", "250 2.0.0 Ok: queued")
LATER = (R_DEFERRED, "4.2.0", "host mx.example.org[192.0.2.1] said: 450 4.2.0 Greylisted (in reply to RCPT TO command)", "450 4.2.0 Greylisted")
REFUSED = (R_BOUNCED, "5.1.1", "host mx.example.org[192.0.2.1] said: 550 5.1.1 User unknown (in reply to RCPT TO command)", "550 5.1.1 User unknown")


class FakeRelay:
    """Results scripted per recipient, one entry per attempt (the last repeats)."""

    def __init__(self) -> None:
        self.script: dict[str, list[tuple[str, str, str, str]]] = {}
        self.calls: list[tuple[str, list[str]]] = []
        self.error: Exception | None = None

    def deliver(self, sender, recipients, message):
        self.calls.append((sender, list(recipients)))
        if self.error is not None:
            return fail(self.error)
        results = []
        for recipient in recipients:
            steps = self.script.get(recipient, [OK])
            status, enhanced, text, diagnostic = steps.pop(0) if len(steps) > 1 else steps[0]
            results.append(
                RecipientResult(recipient, status, enhanced, text, "mx.example.org", diagnostic, "mx.example.org[192.0.2.1]:25")
            )
        return succeed(results)


class Bounces:
    """The inject_bounce callable; C{errors} are raised in turn."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, list[str], bytes]] = []
        self.errors: list[Exception] = []

    def __call__(self, sender, recipients, message):
        if self.errors:
            return fail(self.errors.pop(0))
        self.sent.append((sender, list(recipients), message))
        return succeed(None)

    def parsed(self, index: int = -1):
        return email.message_from_bytes(self.sent[index][2], policy=email.policy.compat32)


class ManagerTestCase(TestCase):
    def setUp(self) -> None:
        self.path = self.mktemp()
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.relay = FakeRelay()
        self.bounces = Bounces()

    def manager(self, relay=None, **kw) -> QueueManager:
        spool = Spool(self.path, reactor, clock=self.clock)
        values = dict(inject_bounce=self.bounces, myhostname="mx.example.com", queue_run_delay=300)
        values.update(kw)
        manager = QueueManager(spool, relay or self.relay, self.clock, **values)
        self.addCleanup(lambda: manager.running and manager.stopService())
        return manager

    async def started(self, **kw) -> QueueManager:
        manager = self.manager(**kw)
        manager.startService()
        await manager.ready
        await manager.run()
        return manager

    def entries(self):
        return SpoolDirectory(self.path).entries()

    async def advance(self, manager: QueueManager, seconds: float) -> None:
        """Move the fake clock; let the runs it triggers finish."""
        self.clock.advance(seconds)
        await manager.run()


class DeliveryTests(ManagerTestCase):
    async def test_delivered_immediately_and_removed(self) -> None:
        manager = await self.started()
        queue_id = await manager.spool.enqueue("alice@example.com", ["bob@example.org"], MESSAGE)
        await manager.idle()
        self.assertEqual(self.relay.calls, [("alice@example.com", ["bob@example.org"])])
        self.assertEqual(self.entries(), [])
        self.assertFalse(os.path.exists(os.path.join(self.path, "data", queue_id)))
        self.assertEqual(self.bounces.sent, [])

    async def test_deferred_then_delivered_on_retry(self) -> None:
        self.relay.script["bob@example.org"] = [LATER, OK]
        manager = await self.started()
        await manager.spool.enqueue("alice@example.com", ["bob@example.org"], MESSAGE)
        await manager.idle()
        [entry] = self.entries()
        self.assertEqual(entry.state, DEFERRED)
        self.assertEqual(entry.next_attempt, self.clock.seconds() + 300)
        self.assertEqual(entry.recipients[0].attempts, 1)
        self.assertIn("450 4.2.0 Greylisted", entry.recipients[0].last_error)
        await self.advance(manager, 299)
        self.assertEqual(len(self.relay.calls), 1)  # not yet due
        await self.advance(manager, 1)
        self.assertEqual(len(self.relay.calls), 2)
        self.assertEqual(self.entries(), [])
        self.assertEqual(self.bounces.sent, [])

    async def test_backoff_doubles(self) -> None:
        self.relay.script["bob@example.org"] = [LATER]
        manager = await self.started(minimal_backoff_time=300, maximal_backoff_time=1000)
        await manager.spool.enqueue("alice@example.com", ["bob@example.org"], MESSAGE)
        await manager.idle()
        gaps = []
        for _ in range(4):
            [entry] = self.entries()
            gap = entry.next_attempt - self.clock.seconds()
            gaps.append(gap)
            await self.advance(manager, gap)
        self.assertEqual(gaps, [300, 600, 1000, 1000])

    async def test_only_pending_recipients_retried(self) -> None:
        self.relay.script["carol@example.org"] = [LATER, OK]
        manager = await self.started()
        await manager.spool.enqueue("alice@example.com", ["bob@example.org", "carol@example.org"], MESSAGE)
        await manager.idle()
        [entry] = self.entries()
        self.assertEqual([r.status for r in entry.recipients], [DELIVERED, PENDING])
        await self.advance(manager, 300)
        self.assertEqual(self.relay.calls[-1], ("alice@example.com", ["carol@example.org"]))
        self.assertEqual(self.entries(), [])

    async def test_relay_error_keeps_message(self) -> None:
        self.relay.error = RuntimeError("bug")
        manager = await self.started()
        await manager.spool.enqueue("alice@example.com", ["bob@example.org"], MESSAGE)
        await manager.idle()
        [entry] = self.entries()
        self.assertEqual(entry.state, DEFERRED)
        self.assertEqual(entry.recipients[0].status, PENDING)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class FullDiskTests(ManagerTestCase):
    async def test_regression_full_disk_deferral_backs_off_in_memory(self) -> None:
        """Issue 18 item 4: a deferral that cannot be written waits its backoff, logs one line."""
        self.relay.script["bob@example.org"] = [LATER, LATER, OK]
        manager = await self.started()
        real_defer = manager.spool.defer
        failures = [OSError(errno.ENOSPC, "No space left on device")]

        def defer(envelope):
            if failures:
                return fail(failures.pop())
            return real_defer(envelope)

        manager.spool.defer = defer
        with capturedLogs() as events:
            await manager.spool.enqueue("alice@example.com", ["bob@example.org"], MESSAGE)
            await manager.idle()
            [entry] = self.entries()
            self.assertEqual(entry.state, ACTIVE)  # the envelope could not move
            for _ in range(5):
                await self.advance(manager, 50)  # scans before the backoff: no attempt
            self.assertEqual(len(self.relay.calls), 1)
            await self.advance(manager, 50)  # 300 s: due
            self.assertEqual(len(self.relay.calls), 2)
        [line] = [e for e in events if "cannot write the queue file" in e.get("log_format", "")]
        self.assertEqual(line["log_level"].name, "error")
        self.assertNotIn("log_failure", line)
        self.assertEqual([e for e in events if "log_failure" in e], [])
        [entry] = self.entries()
        self.assertEqual((entry.state, entry.attempts), (DEFERRED, 2))  # the progress kept in memory
        self.assertEqual(entry.next_attempt, self.clock.seconds() + 600)  # backoff doubled
        await self.advance(manager, 600)
        self.assertEqual(self.entries(), [])

    async def test_flush_tries_a_message_backing_off_in_memory(self) -> None:
        self.relay.script["bob@example.org"] = [LATER, OK]
        manager = await self.started()
        manager.spool.defer = lambda envelope: fail(OSError(errno.ENOSPC, "No space left on device"))
        await manager.spool.enqueue("alice@example.com", ["bob@example.org"], MESSAGE)
        await manager.idle()
        await manager.flush()
        self.assertEqual(len(self.relay.calls), 2)
        self.assertEqual(self.entries(), [])


class LeftoverTests(ManagerTestCase):
    async def logged(self, events: list, count: int) -> None:
        """Wait (30 s at most: a loaded machine's thread pool is slow) for C{count} leftover lines."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if len([e for e in events if "crash leftover" in e.get("log_format", "")]) >= count:
                return
            await deferLater(reactor, 0.005)
        self.fail("not logged")

    async def cleanup_done(self, manager) -> None:
        """Wait (30 s at most) until the cleanup run in progress has finished."""
        [task] = [loop for loop in manager._loops if loop.name == "queue cleanup"]
        deadline = time.monotonic() + 30
        while task.busy and time.monotonic() < deadline:
            await deferLater(reactor, 0.005)
        self.assertFalse(task.busy, "the cleanup run did not finish")

    async def test_regression_queue_crash_leftovers_removed_at_start_and_periodically(self) -> None:
        """Issue 16 item 5: stale tmp/ files and data files with no envelope are removed and logged."""
        directory = SpoolDirectory(self.path)
        directory.ensure()
        old = self.clock.seconds() - 2 * 3600
        leftovers = [os.path.join(self.path, "tmp", "123.abc"), os.path.join(self.path, "data", "ABCDEF0123456")]
        for path in leftovers:
            open(path, "wb").close()
            os.utime(path, (old, old))
        with capturedLogs() as events:
            manager = await self.started(cleanup_interval=3600)
            await manager.idle()
            await self.logged(events, 2)  # the cleanup runs in a thread
            later = os.path.join(self.path, "tmp", "456.def")
            open(later, "wb").close()
            os.utime(later, (self.clock.seconds(), self.clock.seconds()))  # young: kept for now
            await self.advance(manager, 3600)
            await self.cleanup_done(manager)  # else the next tick is skipped, not overlapped
            self.assertTrue(os.path.exists(later))
            await self.advance(manager, 3600)
            await self.logged(events, 3)
        self.assertFalse(os.path.exists(later))
        logged = sorted(e["path"] for e in events if "crash leftover" in e.get("log_format", ""))
        self.assertEqual(logged, [os.path.join("data", "ABCDEF0123456"), os.path.join("tmp", "123.abc"),
                                  os.path.join("tmp", "456.def")])


class BounceTests(ManagerTestCase):
    async def test_5xx_bounces_with_dsn(self) -> None:
        self.relay.script["carol@example.org"] = [REFUSED]
        manager = await self.started()
        queue_id = await manager.spool.enqueue(
            "alice@example.com", ["bob@example.org", "carol@example.org"], MESSAGE
        )
        await manager.idle()
        [(sender, recipients, _)] = self.bounces.sent
        self.assertEqual((sender, recipients), ("", ["alice@example.com"]))
        dsn = self.bounces.parsed()
        self.assertEqual(dsn.get_content_type(), "multipart/report")
        per_message, per_recipient = dsn.get_payload(1).get_payload()
        self.assertEqual(per_message["Reporting-MTA"], "dns; mx.example.com")
        self.assertEqual(per_message["X-Mailserver-Queue-ID"], queue_id)
        self.assertEqual(per_recipient["Final-Recipient"], "rfc822; carol@example.org")
        self.assertEqual(per_recipient["Action"], "failed")
        self.assertEqual(per_recipient["Status"], "5.1.1")
        self.assertEqual(per_recipient["Diagnostic-Code"], "smtp; 550 5.1.1 User unknown")
        self.assertIn("Message-ID: <m1@example.com>", dsn.get_payload(2).get_payload())
        self.assertEqual(self.entries(), [])

    async def test_expired_message_bounced(self) -> None:
        self.relay.script["bob@example.org"] = [LATER]
        manager = await self.started(maximal_queue_lifetime=1000)
        await manager.spool.enqueue("alice@example.com", ["bob@example.org"], MESSAGE)
        await manager.idle()
        for _ in range(5):
            if not self.entries():
                break
            await self.advance(manager, self.entries()[0].next_attempt - self.clock.seconds())
        self.assertEqual(self.entries(), [])
        [(_, recipients, _)] = self.bounces.sent
        self.assertEqual(recipients, ["alice@example.com"])
        block = self.bounces.parsed().get_payload(1).get_payload()[1]
        self.assertEqual(block["Action"], "failed")
        self.assertEqual(block["Status"], "4.2.0")
        self.assertEqual(block["Diagnostic-Code"], "smtp; 450 4.2.0 Greylisted")
        self.assertIn("expired", self.bounces.parsed().get_payload(0).get_payload())
        self.assertGreaterEqual(self.clock.seconds() - 1_700_000_000, 1000)

    async def test_null_sender_never_bounced_to_sender(self) -> None:
        self.relay.script["bob@example.org"] = [REFUSED]
        manager = await self.started(postmaster=None)
        await manager.spool.enqueue("", ["bob@example.org"], MESSAGE)
        await manager.idle()
        self.assertEqual(self.bounces.sent, [])
        self.assertEqual(self.entries(), [])

    async def test_undeliverable_bounce_goes_to_postmaster(self) -> None:
        self.relay.script["alice@example.net"] = [REFUSED]
        manager = await self.started(postmaster="postmaster@example.com")
        await manager.spool.enqueue("", ["alice@example.net"], MESSAGE)  # a bounce we relay
        await manager.idle()
        [(sender, recipients, _)] = self.bounces.sent
        self.assertEqual((sender, recipients), ("", ["postmaster@example.com"]))
        self.assertIn("postmaster copy", self.bounces.parsed()["Subject"])

    async def test_failed_postmaster_notice_is_not_bounced_again(self) -> None:
        self.relay.script["postmaster@example.com"] = [REFUSED]
        manager = await self.started(postmaster="postmaster@example.com")
        await manager.spool.enqueue("", ["postmaster@example.com"], MESSAGE)
        await manager.idle()
        self.assertEqual(self.bounces.sent, [])
        self.assertEqual(self.entries(), [])

    async def test_failed_report_of_ours_is_dropped_not_reported_again(self) -> None:
        """No bounce loop: postmaster aliased to a remote host that refuses our report."""
        self.relay.script["admin@example.net"] = [REFUSED]
        manager = await self.started(postmaster="postmaster@example.com")
        report = (b"From: MAILER-DAEMON@mx.example.com (Mail Delivery System)\nAuto-Submitted: auto-replied\n"
                  b"Subject: Undelivered Mail Returned to Sender\n\nreport\n")
        await manager.spool.enqueue("", ["admin@example.net"], report)
        await manager.idle()
        self.assertEqual(self.bounces.sent, [])
        self.assertEqual(self.entries(), [])

    async def test_bounce_refused_for_good_goes_to_postmaster(self) -> None:
        self.relay.script["bob@example.org"] = [REFUSED]
        self.bounces.errors = [MailError(550, "5.1.1", "no such user")]
        manager = await self.started(postmaster="postmaster@example.com")
        await manager.spool.enqueue("gone@example.com", ["bob@example.org"], MESSAGE)
        await manager.idle()
        self.assertEqual([r for _, r, _ in self.bounces.sent], [["postmaster@example.com"]])
        self.assertEqual(self.entries(), [])

    async def test_bounce_handover_failure_retried(self) -> None:
        self.relay.script["bob@example.org"] = [REFUSED]
        self.bounces.errors = [MailError(451, "4.3.0", "disk full")]
        manager = await self.started()
        await manager.spool.enqueue("alice@example.com", ["bob@example.org"], MESSAGE)
        await manager.idle()
        [entry] = self.entries()
        self.assertEqual(entry.recipients[0].status, BOUNCED)
        self.assertFalse(entry.recipients[0].notified)
        await self.advance(manager, 300)
        self.assertEqual(len(self.bounces.sent), 1)
        self.assertEqual(len(self.relay.calls), 1)  # bounced recipients are not tried again
        self.assertEqual(self.entries(), [])


class RestartTests(ManagerTestCase):
    async def test_queue_survives_restart(self) -> None:
        self.relay.script["bob@example.org"] = [LATER]
        first = await self.started()
        await first.spool.enqueue("alice@example.com", ["bob@example.org"], MESSAGE)
        await first.idle()
        first.stopService()
        self.relay = FakeRelay()
        second = await self.started()
        await self.advance(second, 300)
        self.assertEqual(self.relay.calls, [("alice@example.com", ["bob@example.org"])])
        self.assertEqual(self.entries(), [])

    async def test_message_left_in_active_is_delivered_after_crash(self) -> None:
        directory = SpoolDirectory(self.path)
        queue_id = directory.store("alice@example.com", ["bob@example.org"], MESSAGE, self.clock.seconds())
        directory.activate(queue_id)  # the process died mid-delivery
        self.assertEqual([e.state for e in directory.entries()], [ACTIVE])
        await self.started()
        self.assertEqual(self.relay.calls, [("alice@example.com", ["bob@example.org"])])
        self.assertEqual(self.entries(), [])

    async def test_stopped_manager_does_not_attempt(self) -> None:
        manager = await self.started()
        manager.stopService()
        await manager.spool.enqueue("alice@example.com", ["bob@example.org"], MESSAGE)
        self.clock.advance(10_000)
        self.assertEqual(self.relay.calls, [])
        self.assertEqual(len(self.entries()), 1)


class FlushTests(ManagerTestCase):
    async def test_flush_trigger_file(self) -> None:
        self.relay.script["bob@example.org"] = [LATER, OK]
        manager = await self.started(flush_check_interval=5)
        await manager.spool.enqueue("alice@example.com", ["bob@example.org"], MESSAGE)
        await manager.idle()
        await manager.check_flush_request()
        self.assertEqual(len(self.relay.calls), 1)  # no trigger, no flush
        SpoolDirectory(self.path).request_flush()  # what "mailserver queue flush" does
        await manager.check_flush_request()  # what the manager does every 5 seconds
        await manager.idle()
        self.assertEqual(len(self.relay.calls), 2)
        self.assertEqual(self.entries(), [])
        self.assertFalse(os.path.exists(os.path.join(self.path, "flush")))

    async def test_flush_method(self) -> None:
        self.relay.script["bob@example.org"] = [LATER, OK]
        manager = await self.started()
        await manager.spool.enqueue("alice@example.com", ["bob@example.org"], MESSAGE)
        await manager.idle()
        await manager.flush()
        self.assertEqual(self.entries(), [])


class EndToEndTests(ManagerTestCase):
    """The real relay against a scripted ESMTP server on loopback."""

    def setUp(self) -> None:
        super().setUp()
        self.server = ScriptedESMTPFactory()
        self.listening = reactor.listenTCP(0, self.server, interface="127.0.0.1")
        self.addCleanup(self.listening.stopListening)
        self.addCleanup(lambda: self.server.wait_closed())
        resolver = FakeResolver(mx={"example.org": [(10, "mx.example.org")]}, a={"mx.example.org": ["127.0.0.1"]})
        self.real_relay = Relay(
            reactor, resolver, helo_name="mx.example.com", port=self.listening.getHost().port,
            tls_security_level="none",
        )

    async def test_deferred_then_delivered_then_bounced(self) -> None:
        self.server.script("bob@example.org", b"450 4.2.0 Greylisted", b"250 2.1.5 Ok")
        self.server.script("carol@example.org", b"550 5.1.1 <carol@example.org>: User unknown")
        manager = await self.started(relay=self.real_relay)
        await manager.spool.enqueue(
            "alice@example.com", ["bob@example.org", "carol@example.org", "dan@example.org"], MESSAGE
        )
        await manager.idle()
        self.assertEqual(self.server.connections, 1)
        self.assertEqual(self.server.delivered[0].recipients, [b"dan@example.org"])
        dsn = self.bounces.parsed()
        block = dsn.get_payload(1).get_payload()[1]
        self.assertEqual(block["Final-Recipient"], "rfc822; carol@example.org")
        self.assertEqual(block["Remote-MTA"], "dns; mx.example.org")
        self.assertEqual(block["Diagnostic-Code"], "smtp; 550 5.1.1 <carol@example.org>: User unknown")
        [entry] = self.entries()
        self.assertEqual([r.status for r in entry.recipients], [PENDING, BOUNCED, DELIVERED])
        await self.advance(manager, 300)
        self.assertEqual(self.server.delivered[1].recipients, [b"bob@example.org"])
        self.assertEqual(self.entries(), [])
        self.assertEqual(len(self.bounces.sent), 1)
