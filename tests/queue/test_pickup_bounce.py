"""PickupDelivery: locally submitted mail refused for good comes back to its sender as a DSN."""

from __future__ import annotations

from dataclasses import dataclass

from twisted.internet.defer import fail, succeed
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from mailserver.errors import MailError
from mailserver.queue.pickup_bounce import PickupDelivery

UNKNOWN = MailError(550, "5.1.1", "<root@mx.example.com>: Recipient address rejected: User unknown")
MESSAGE = b"From: alice@example.com\nSubject: hi\n\nbody\n"


@dataclass(frozen=True)
class Outcome:
    queue_id: str
    delivered: tuple
    refused: tuple


class PickupDeliveryTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.bounces: list[tuple[str, list, bytes]] = []
        self.refuse: dict[str, MailError] = {}
        self.outcome = Outcome("0123456789ABCD", ("bob@example.com",), (("root@mx.example.com", UNKNOWN),))

    def bounce(self, sender, recipients, message):
        self.bounces.append((sender, recipients, message))
        error = self.refuse.get(recipients[0])
        return fail(error) if error else succeed("QID")

    def deliver(self, sender: str, outcome=None):
        result = outcome or self.outcome
        delivery = PickupDelivery(
            lambda s, r, m: fail(result) if isinstance(result, MailError) else succeed(result),
            self.bounce, Clock(), myhostname="mx.example.com", postmaster="postmaster@example.com",
        )
        return delivery(sender, ["root", "bob@example.com"], MESSAGE, False)

    def test_refused_recipient_bounces_to_sender(self) -> None:
        self.successResultOf(self.deliver("alice@example.com"))
        [(sender, to, dsn)] = self.bounces
        self.assertEqual((sender, to), ("", ["alice@example.com"]))
        self.assertIn(b"Final-Recipient: rfc822; root@mx.example.com", dsn)
        self.assertIn(b"Status: 5.1.1", dsn)
        self.assertIn(b"Diagnostic-Code: smtp; 550 5.1.1", dsn)
        self.assertIn(b"Subject: hi", dsn)

    def test_nothing_refused_no_bounce(self) -> None:
        self.successResultOf(self.deliver("alice@example.com", Outcome("Q", ("bob@example.com",), ())))
        self.assertEqual(self.bounces, [])

    def test_null_sender_reports_to_postmaster(self) -> None:
        self.successResultOf(self.deliver(""))
        [(_, to, dsn)] = self.bounces
        self.assertEqual(to, ["postmaster@example.com"])
        self.assertIn(b"postmaster copy", dsn)

    def test_sender_refusing_the_bounce_goes_to_postmaster(self) -> None:
        self.refuse["nobody@mx.example.com"] = UNKNOWN
        self.successResultOf(self.deliver("nobody@mx.example.com"))
        self.assertEqual([b[1] for b in self.bounces], [["nobody@mx.example.com"], ["postmaster@example.com"]])

    def test_nobody_to_report_to_is_logged_as_an_error(self) -> None:
        self.refuse["nobody@mx.example.com"] = UNKNOWN
        self.refuse["postmaster@example.com"] = UNKNOWN
        with capturedLogs() as events:
            self.successResultOf(self.deliver("nobody@mx.example.com"))
        errors = [e for e in events if e["log_level"].name == "error"]
        self.assertEqual(len(errors), 1)
        self.assertIn("undeliverable", errors[0]["log_format"])

    def test_no_report_about_postmaster_to_postmaster(self) -> None:
        outcome = Outcome("Q", (), (("postmaster@example.com", UNKNOWN),))
        with capturedLogs():
            self.successResultOf(self.deliver("", outcome))
        self.assertEqual(self.bounces, [])

    def test_temporary_bounce_failure_with_nothing_delivered_retries_the_file(self) -> None:
        self.refuse["alice@example.com"] = MailError(451, "4.3.0", "try later")
        outcome = Outcome("Q", (), (("root@mx.example.com", UNKNOWN),))
        self.failureResultOf(self.deliver("alice@example.com", outcome), MailError)

    def test_temporary_refusal_reaches_the_pickup_service(self) -> None:
        self.failureResultOf(self.deliver("alice@example.com", MailError(451, "4.3.0", "later")), MailError)
        self.assertEqual(self.bounces, [])
