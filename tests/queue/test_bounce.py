"""RFC 3464 delivery status notifications, parsed back with the email package."""

from __future__ import annotations

import email
import email.policy
import os

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from mailserver.queue.bounce import DELAYED, FAILED, RecipientReport, build_dsn, original_headers

ORIGINAL = (
    b"From: Alice <alice@example.com>\n"
    b"To: bob@example.org\n"
    b"Subject: hello\n"
    b"Message-ID: <1@example.com>\n"
    b"\n"
    b"Secret body text\n"
)

CORPUS = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    "..",
    "shared",
    "corpus",
    "mail-fixtures",
)


def failed(recipient="bob@example.org", **kw) -> RecipientReport:
    values = dict(
        recipient=recipient,
        action=FAILED,
        status="5.1.1",
        text="host mx.example.org[192.0.2.1] said: 550 5.1.1 <bob@example.org>: User unknown "
        "(in reply to RCPT TO command)",
        remote_mta="mx.example.org",
        diagnostic="550 5.1.1 <bob@example.org>: User unknown",
        last_attempt=1_700_000_100.0,
    )
    values.update(kw)
    return RecipientReport(**values)


def dsn(reports=None, original=ORIGINAL, **kw) -> bytes:
    values = dict(
        reporting_mta="mx.example.com",
        queue_id="0A1B2C3D4E5F",
        sender="alice@example.com",
        to="alice@example.com",
        arrival=1_700_000_000.0,
        now=1_700_000_200.0,
        reports=[failed()] if reports is None else reports,
        original=original,
    )
    values.update(kw)
    return build_dsn(**values)


def parse(data: bytes):
    return email.message_from_bytes(data, policy=email.policy.compat32)


class DSNTests(SynchronousTestCase):
    def test_structure(self) -> None:
        message = parse(dsn())
        self.assertEqual(message.get_content_type(), "multipart/report")
        self.assertEqual(message.get_param("report-type"), "delivery-status")
        parts = message.get_payload()
        self.assertEqual(
            [p.get_content_type() for p in parts],
            ["text/plain", "message/delivery-status", "text/rfc822-headers"],
        )
        self.assertEqual(message.defects, [])

    def test_from_mailer_daemon(self) -> None:
        message = parse(dsn())
        self.assertIn("MAILER-DAEMON@mx.example.com", message["From"])
        self.assertEqual(message["To"], "alice@example.com")
        self.assertEqual(message["Auto-Submitted"], "auto-replied")
        self.assertTrue(message["Message-ID"].endswith("@mx.example.com>"))
        self.assertEqual(message["Subject"], "Undelivered Mail Returned to Sender")

    def test_report_fields_quote_the_remote_reply(self) -> None:
        status = parse(dsn()).get_payload(1)
        per_message, per_recipient = status.get_payload()
        self.assertEqual(per_message["Reporting-MTA"], "dns; mx.example.com")
        self.assertIn("Nov 2023", per_message["Arrival-Date"])
        self.assertEqual(per_recipient["Final-Recipient"], "rfc822; bob@example.org")
        self.assertEqual(per_recipient["Action"], "failed")
        self.assertEqual(per_recipient["Status"], "5.1.1")
        self.assertEqual(per_recipient["Remote-MTA"], "dns; mx.example.org")
        self.assertEqual(per_recipient["Diagnostic-Code"], "smtp; 550 5.1.1 <bob@example.org>: User unknown")
        self.assertIsNotNone(per_recipient["Last-Attempt-Date"])

    def test_several_recipients(self) -> None:
        reports = [failed(), failed("carol@example.org", diagnostic="554 5.7.1 no", status="5.7.1")]
        blocks = parse(dsn(reports)).get_payload(1).get_payload()
        self.assertEqual(
            [b["Final-Recipient"] for b in blocks[1:]],
            ["rfc822; bob@example.org", "rfc822; carol@example.org"],
        )
        self.assertEqual(blocks[2]["Status"], "5.7.1")

    def test_human_part_names_recipient_and_reason(self) -> None:
        text = parse(dsn()).get_payload(0).get_payload()
        self.assertIn("<bob@example.org>", text)
        self.assertIn("550 5.1.1", text)
        self.assertIn("mx.example.com", text)

    def test_headers_only_no_body(self) -> None:
        data = dsn()
        headers = parse(data).get_payload(2).get_payload()
        self.assertIn("Subject: hello", headers)
        self.assertIn("Message-ID: <1@example.com>", headers)
        self.assertNotIn(b"Secret body text", data)

    def test_non_smtp_failure_uses_own_diagnostic_type(self) -> None:
        report = failed(diagnostic="", remote_mta="", text="Host or domain name not found", status="5.1.2")
        block = parse(dsn([report])).get_payload(1).get_payload()[1]
        self.assertEqual(block["Diagnostic-Code"], "X-Mailserver; Host or domain name not found")
        self.assertIsNone(block["Remote-MTA"])

    def test_long_diagnostic_is_folded_and_unfolds_intact(self) -> None:
        reply = "550 5.7.1 " + " ".join(["word"] * 60)
        data = dsn([failed(diagnostic=reply)])
        self.assertTrue(all(len(line) <= 78 for line in data.split(b"\n")[:60] if b"word" in line))
        block = parse(data).get_payload(1).get_payload()[1]
        self.assertEqual(" ".join(block["Diagnostic-Code"].split()), f"smtp; {reply}")

    def test_control_characters_cannot_inject_fields(self) -> None:
        data = dsn([failed(diagnostic="550 bad\r\nAction: delivered")])
        block = parse(data).get_payload(1).get_payload()[1]
        self.assertEqual(block["Action"], "failed")
        self.assertIn("Action: delivered", block["Diagnostic-Code"])

    def test_delayed_warning(self) -> None:
        report = failed(action=DELAYED, status="4.4.1", will_retry_until=1_700_400_000.0)
        message = parse(dsn([report]))
        self.assertEqual(message["Subject"], "Delayed Mail (still being retried)")
        block = message.get_payload(1).get_payload()[1]
        self.assertEqual(block["Action"], "delayed")
        self.assertIsNotNone(block["Will-Retry-Until"])

    def test_postmaster_copy(self) -> None:
        message = parse(dsn(to="postmaster@example.com", sender="", postmaster_copy=True))
        self.assertIn("postmaster copy", message["Subject"])
        per_message = message.get_payload(1).get_payload()[0]
        self.assertEqual(per_message["X-Mailserver-Sender"], "rfc822;")

    def test_bad_reports_refused(self) -> None:
        self.assertRaises(ValueError, dsn, [])
        self.assertRaises(ValueError, dsn, [failed(action="relayed")])

    def test_boundary_not_in_content(self) -> None:
        evil = b"X-Trap: --0A1B2C3D4E5F.1700000200/mx.example.com\n\nbody\n"
        message = parse(dsn(original=evil))
        self.assertEqual(len(message.get_payload()), 3)
        self.assertIn("X-Trap", message.get_payload(2).get_payload())

    def test_eight_bit_headers_marked(self) -> None:
        data = dsn(original="Subject: Grüße\n\nx\n".encode())
        self.assertIn(b"Content-Transfer-Encoding: 8bit", data)
        self.assertIn("Grüße".encode(), data)


class OriginalHeadersTests(SynchronousTestCase):
    def test_crlf_and_continuations(self) -> None:
        self.assertEqual(
            original_headers(b"A: 1\r\n  more\r\nB: 2\r\n\r\nbody\r\n"), b"A: 1\n  more\nB: 2\n"
        )

    def test_no_header(self) -> None:
        self.assertEqual(original_headers(b"just a body line\n"), b"")
        self.assertEqual(original_headers(b""), b"")

    def test_header_without_body(self) -> None:
        self.assertEqual(original_headers(b"A: 1"), b"A: 1\n")


class CorpusTests(SynchronousTestCase):
    def test_every_corpus_message_gives_a_parseable_dsn(self) -> None:
        if not os.path.isdir(CORPUS):
            raise SkipTest("corpus not present")
        count = 0
        for root, _dirs, files in os.walk(CORPUS):
            for name in files:
                if name.startswith(".") or name == "LICENSE":
                    continue
                with open(os.path.join(root, name), "rb") as f:
                    original = f.read()
                message = parse(dsn(original=original))
                parts = message.get_payload()
                self.assertEqual(len(parts), 3, name)
                block = parts[1].get_payload()[1]
                self.assertEqual(block["Status"], "5.1.1", name)
                headers = original_headers(original)
                self.assertNotIn(b"\r", headers, name)
                count += 1
        self.assertGreater(count, 90)
