"""Tests for mailserver.delivery.checks: Postfix cleanup-style content checks."""

from __future__ import annotations

import base64
import os

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from mailserver.delivery.checks import CheckEvent, ContentChecks, ContentVerdict, MimeErrorEvent
from mailserver.delivery.mime import Header, HeaderKind, walk
from mailserver.errors import MailError
from mailserver.interfaces import IContentCheck
from mailserver.tables.regexp import RuleTable, compile_regexp_table

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CORPUS = os.path.join(os.path.dirname(REPO), "shared", "corpus", "mail-fixtures")


def rules(text: str, name: str = "/etc/mailserver/header_checks") -> RuleTable:
    return compile_regexp_table(text, name)


def sample(name: str) -> RuleTable:
    path = os.path.join(REPO, "etc", name)
    with open(path, encoding="utf-8") as f:
        return compile_regexp_table(f.read(), path)


def inspect(message: bytes, header: str | None = None, body: str | None = None, mime: str | None = None,
            nested: str | None = None, **options) -> ContentVerdict:
    checks = ContentChecks(
        rules(header) if header is not None else None,
        rules(mime, "mime") if mime is not None else None,
        rules(nested, "nested") if nested is not None else None,
        rules(body, "body") if body is not None else None,
        **options,
    )
    return checks.inspect(None, message)


PLAIN = b"From: alice@example.org\nTo: bob@example.net\nSubject: hello\nX-Folded: one\n two\n\nline one\nline two\n"


def attachment(name_parameter: str) -> bytes:
    return (
        b"From: alice@example.org\nSubject: files\nMIME-Version: 1.0\n"
        b'Content-Type: multipart/mixed; boundary="=_b"\n\n'
        b"--=_b\nContent-Type: text/plain\n\nsee attached\n"
        b"--=_b\nContent-Type: application/octet-stream; " + name_parameter.encode() + b"\n"
        b"Content-Transfer-Encoding: base64\n\nTVqQAAMAAAAEAAAA\n--=_b--\n"
    )


class InterfaceTests(SynchronousTestCase):
    def test_provides_icontentcheck(self) -> None:
        checks = ContentChecks(None, None, None, None, 51200, True)
        self.assertTrue(verifyObject(IContentCheck, checks))
        self.assertEqual(checks.name, "cleanup")

    def test_no_tables_returns_the_message_itself(self) -> None:
        verdict = ContentChecks(None, None, None, None, 51200, True).inspect(None, PLAIN)
        self.assertIs(verdict.message, PLAIN)
        self.assertEqual(verdict, ContentVerdict(PLAIN))


class SeedScenarioTests(SynchronousTestCase):
    """The issue's scenarios, with the sample tables shipped in etc/."""

    def setUp(self) -> None:
        self.checks = ContentChecks(
            sample("header_checks"), sample("mime_header_checks"), None, sample("body_checks"), 51200, True
        )

    def test_lottery_subject_rejected_with_the_rule_text(self) -> None:
        verdict = self.checks.inspect(None, PLAIN.replace(b"Subject: hello", b"Subject: Win the LOTTERY now"))
        self.assertEqual((verdict.error.code, verdict.error.enhanced), (550, "5.7.1"))
        self.assertEqual(verdict.error.text, "No lottery spam, thank you")
        event = verdict.events[-1]
        with open(os.path.join(REPO, "etc", "header_checks"), encoding="utf-8") as f:
            line = 1 + [l.startswith("/^Subject:.*") for l in f].index(True)
        self.assertEqual((event.table, event.line, event.action), ("header_checks", line, "REJECT"))
        self.assertTrue(event.file.endswith(os.path.join("etc", "header_checks")))

    def test_encoded_lottery_subject_caught_only_with_decode(self) -> None:
        encoded = base64.b64encode("Gagnez à la lottery!".encode()).decode()
        message = PLAIN.replace(b"Subject: hello", f"Subject: =?utf-8?b?{encoded}?=".encode())
        verdict = self.checks.inspect(None, message)
        self.assertEqual(verdict.error.text, "No lottery spam, thank you")
        self.assertTrue(verdict.events[-1].decoded)
        undecoded = ContentChecks(
            sample("header_checks"), sample("mime_header_checks"), None, sample("body_checks"), 51200, False
        )
        self.assertIsNone(undecoded.inspect(None, message).error)

    def test_i_love_you_body_rejected(self) -> None:
        verdict = self.checks.inspect(None, PLAIN + b"I LOVE YOU\nbye\n")
        self.assertEqual(verdict.error.reply(), "5.7.1 message content rejected")
        self.assertEqual(verdict.events[-1].table, "body_checks")
        self.assertIsNone(self.checks.inspect(None, PLAIN + b"I love you too, Harry\n").error)

    def test_exe_attachment_rejected_pdf_passes(self) -> None:
        verdict = self.checks.inspect(None, attachment('name="setup.exe"'))
        self.assertEqual(verdict.error.code, 550)
        self.assertEqual(verdict.error.text, "Attachment setup.exe refused: executables are not accepted")
        self.assertEqual(verdict.events[-1].table, "mime_header_checks")
        passed = self.checks.inspect(None, attachment('name="report.pdf"'))
        self.assertIsNone(passed.error)
        self.assertEqual(passed.events, ())

    def test_encoded_exe_names_are_caught_when_decoding(self) -> None:
        encoded = base64.b64encode(b"setup.exe").decode()
        for parameter in (f'name="=?utf-8?b?{encoded}?="', "name*=utf-8''setup%2Eexe"):
            verdict = self.checks.inspect(None, attachment(parameter))
            self.assertIsNotNone(verdict.error, parameter)
            self.assertTrue(verdict.events[-1].decoded)


class ActionTests(SynchronousTestCase):
    def test_reject_stops_scanning(self) -> None:
        verdict = inspect(PLAIN, header="/^To:/ REJECT go away\n/^Subject:/ WARN later\n")
        self.assertEqual(verdict.error.reply(), "5.7.1 go away")
        self.assertEqual([e.action for e in verdict.events], ["REJECT"])

    def test_reject_status_in_the_text(self) -> None:
        self.assertEqual(inspect(PLAIN, header="/^To:/ REJECT 5.7.0 policy\n").error.reply(), "5.7.0 policy")
        error = inspect(PLAIN, header="/^To:/ REJECT 4.7.1 try later\n").error
        self.assertEqual((error.code, error.reply(), error.temporary), (451, "4.7.1 try later", True))

    def test_reject_text_from_the_message_is_made_printable(self) -> None:
        message = PLAIN.replace(b"Subject: hello", "Subject: caf\u00e9 lottery".encode())
        error = inspect(message, header="/^Subject: (.*)/ REJECT bad subject $1\n").error
        self.assertEqual(error.text, "bad subject caf? lottery")

    def test_discard(self) -> None:
        verdict = inspect(PLAIN, header="/^To:/ DISCARD\n/^Subject:/ REJECT\n")
        self.assertTrue(verdict.discard)
        self.assertIsNone(verdict.error)

    def test_hold_continues_scanning(self) -> None:
        verdict = inspect(PLAIN, header="/^To:/ HOLD suspicious\n/^X-Folded:/ WARN seen\n")
        self.assertTrue(verdict.hold)
        self.assertEqual(verdict.hold_reason, "suspicious")
        self.assertEqual([e.action for e in verdict.events], ["HOLD", "WARN"])
        rejected = inspect(PLAIN, header="/^To:/ HOLD\n/^Subject:/ REJECT\n")
        self.assertTrue(rejected.hold)
        self.assertIsNotNone(rejected.error)

    def test_warn_only_logs(self) -> None:
        verdict = inspect(PLAIN, header="/^Subject: (.*)/ WARN subject is $1\n")
        self.assertIs(verdict.message, PLAIN)
        self.assertEqual((verdict.error, verdict.discard, verdict.hold), (None, False, False))
        event = verdict.events[0]
        self.assertEqual(
            (event.table, event.file, event.line, event.rule, event.action, event.text, event.matched),
            ("header_checks", "/etc/mailserver/header_checks", 1, "/^Subject: (.*)/ WARN subject is $1",
             "WARN", "subject is hello", "Subject: hello"),
        )
        self.assertEqual(
            str(event),
            "header_checks /etc/mailserver/header_checks:1: WARN subject is hello: matched 'Subject: hello'; "
            "rule: /^Subject: (.*)/ WARN subject is $1",
        )

    def test_ignore_removes_a_folded_header(self) -> None:
        verdict = inspect(PLAIN, header="/^X-Folded:/ IGNORE\n")
        self.assertEqual(verdict.message, PLAIN.replace(b"X-Folded: one\n two\n", b""))

    def test_prepend_and_replace_headers_keep_line_ends(self) -> None:
        crlf = PLAIN.replace(b"\n", b"\r\n")
        verdict = inspect(crlf, header="/^To:/ PREPEND X-Checked: yes\n/^Subject: (.*)/ REPLACE Subject: [tag] $1\n")
        self.assertEqual(
            verdict.message,
            crlf.replace(b"To:", b"X-Checked: yes\r\nTo:").replace(b"Subject: hello", b"Subject: [tag] hello"),
        )

    def test_prepend_text_that_is_not_a_header_is_ignored(self) -> None:
        verdict = inspect(PLAIN, header="/^To:/ PREPEND not a header\n")
        self.assertIs(verdict.message, PLAIN)
        self.assertIn("not a header line", verdict.events[0].note)

    def test_body_ignore_prepend_replace(self) -> None:
        verdict = inspect(PLAIN, body="/^line one$/ REPLACE first line\n/^line two$/ PREPEND inserted\n")
        self.assertEqual(verdict.message, PLAIN.replace(b"line one\nline two\n", b"first line\ninserted\nline two\n"))
        removed = inspect(PLAIN, body="/^line one$/ IGNORE\n")
        self.assertEqual(removed.message, PLAIN.replace(b"line one\n", b""))

    def test_redirect_last_wins_and_bcc_accumulates(self) -> None:
        verdict = inspect(
            PLAIN,
            header="/^From:/ REDIRECT first@example.com\n/^To:/ REDIRECT second@example.com\n"
            "/^Subject:/ BCC audit@example.com\n/^X-Folded:/ BCC audit@example.com\n",
            body="/^line/ BCC other@example.com\n",
        )
        self.assertEqual(verdict.redirect, "second@example.com")
        self.assertEqual(verdict.bcc, ("audit@example.com", "other@example.com"))
        self.assertIs(verdict.message, PLAIN)

    def test_redirect_with_a_bad_substituted_address_is_ignored(self) -> None:
        verdict = inspect(PLAIN, header="/^Subject: (.*)/ REDIRECT $1@@bad\n")
        self.assertIsNone(verdict.redirect)
        self.assertIn("bad address", verdict.events[0].note)

    def test_dunno_and_ok_stop_the_table_for_that_line(self) -> None:
        for action in ("DUNNO", "OK"):
            verdict = inspect(PLAIN, header=f"/^Subject: hello/ {action}\n/^Subject:/ REJECT\n")
            self.assertIsNone(verdict.error, action)
            self.assertEqual(verdict.events, ())

    def test_raw_match_wins_over_decoded_match(self) -> None:
        message = PLAIN.replace(b"Subject: hello", b"Subject: =?utf-8?q?lottery?=")
        verdict = inspect(message, header="/^Subject: =\\?utf-8/ DUNNO\n/lottery/ REJECT\n")
        self.assertIsNone(verdict.error)

    def test_header_size_limit_bounds_the_matched_text(self) -> None:
        message = b"Subject: " + b"x" * 200 + b" lottery\n\nbody\n"
        self.assertIsNotNone(inspect(message, header="/lottery/ REJECT\n").error)
        self.assertIsNone(inspect(message, header="/lottery/ REJECT\n", header_size_limit=100).error)


class RoutingTests(SynchronousTestCase):
    """Which table sees which header, as Postfix's cleanup decides."""

    MESSAGE = (
        b"Subject: outer\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b\n\n"
        b"--b\nContent-Type: text/plain\nX-Part: inner\n\nbody\n"
        b"--b\nContent-Type: message/rfc822\n\nSubject: nested\nContent-Type: text/plain\n\nnested body\n--b--\n"
    )

    def tables_seen(self, **tables: str | None) -> list[tuple[str, str]]:
        verdict = inspect(self.MESSAGE, **tables)
        return [(e.table, e.matched) for e in verdict.events]

    def test_every_table_set(self) -> None:
        seen = self.tables_seen(header="/^/ WARN\n", mime="/^/ WARN\n", nested="/^/ WARN\n")
        # "^" matches the empty string, so matched is "" everywhere: look at tables.
        self.assertEqual(
            [t for t, _ in seen],
            ["header_checks", "mime_header_checks", "mime_header_checks", "mime_header_checks", "mime_header_checks",
             "mime_header_checks", "nested_header_checks", "mime_header_checks"],
        )

    def test_without_mime_header_checks(self) -> None:
        verdict = inspect(self.MESSAGE, header="/^(.*)$/ WARN $1\n", nested="/^(.*)$/ WARN $1\n")
        self.assertEqual(
            [(e.table, e.text) for e in verdict.events],
            [
                ("header_checks", "Subject: outer"),
                ("header_checks", "MIME-Version: 1.0"),
                ("header_checks", "Content-Type: multipart/mixed; boundary=b"),
                ("nested_header_checks", "Subject: nested"),
                ("nested_header_checks", "Content-Type: text/plain"),
            ],
        )

    def test_body_checks_skip_headers_of_parts(self) -> None:
        verdict = inspect(self.MESSAGE, body="/^(.*)$/ WARN $1\n")
        self.assertEqual(
            [e.text for e in verdict.events],
            ["--b", "body", "--b", "nested body", "--b--"],
        )


class BodyLimitTests(SynchronousTestCase):
    def test_lines_after_the_limit_are_not_checked(self) -> None:
        message = b"Subject: x\n\n" + b"filler line\n" * 10 + b"i love you\n"
        self.assertIsNotNone(inspect(message, body="/i love you/ REJECT\n").error)
        self.assertIsNone(inspect(message, body="/i love you/ REJECT\n", body_checks_size_limit=100).error)
        self.assertIsNotNone(inspect(message, body="/i love you/ REJECT\n", body_checks_size_limit=121).error)

    def test_long_lines_are_checked_in_pieces_up_to_the_limit(self) -> None:
        message = b"Subject: x\n\n" + b"a" * 3000 + b" i love you " + b"b" * 3000 + b"\n"
        self.assertIsNotNone(inspect(message, body="/i love you/ REJECT\n").error)
        self.assertIsNone(inspect(message, body="/i love you/ REJECT\n", body_checks_size_limit=2048).error)

    def test_the_limit_applies_to_each_attachment(self) -> None:
        message = (
            b"Subject: x\nContent-Type: multipart/mixed; boundary=b\n\n--b\n\n" + b"filler line\n" * 10
            + b"--b\n\ni love you\n--b--\n"
        )
        self.assertIsNotNone(inspect(message, body="/i love you/ REJECT\n", body_checks_size_limit=100).error)


class CorpusTests(SynchronousTestCase):
    def test_corpus_passes_unchanged(self) -> None:
        if not os.path.isdir(CORPUS):
            raise self.skipTest(f"corpus not found at {CORPUS}")
        checks = ContentChecks(
            rules("/^X-Never-Seen:/ REJECT\n!/./ WARN empty header\n/^Subject:.*zzqqxx/ REJECT\n"),
            rules("/^Content-Type:.*name=\"?zzqqxx/ REJECT\n", "mime"),
            rules("/^Subject:.*zzqqxx/ REJECT\n", "nested"),
            rules("/zzqqxx/ REJECT\n/^i love you from zzqqxx$/ REJECT\n", "body"),
            51200,
            True,
        )
        count = 0
        for directory, _, names in os.walk(CORPUS):
            for name in sorted(names):
                with open(os.path.join(directory, name), "rb") as f:
                    message = f.read()
                verdict = checks.inspect(None, message)
                self.assertIsNone(verdict.error, name)
                self.assertEqual(verdict.message, message, name)
                self.assertIs(verdict.message, message, name)
                count += 1
        self.assertGreaterEqual(count, 100)

    def test_corpus_with_modifying_rules_never_raises(self) -> None:
        if not os.path.isdir(CORPUS):
            raise self.skipTest(f"corpus not found at {CORPUS}")
        checks = ContentChecks(
            rules("/^Received:/ IGNORE\n/^Subject: (.*)/ REPLACE Subject: [x] $1\n/^From:/ PREPEND X-A: 1\n"),
            rules("/^Content-Type: (.*)/ WARN $1\n", "mime"),
            rules("/^Subject:/ HOLD\n", "nested"),
            rules("/^-- $/ REPLACE --\n/^>/ IGNORE\n", "body"),
            51200,
            True,
        )
        for directory, _, names in os.walk(CORPUS):
            for name in names:
                with open(os.path.join(directory, name), "rb") as f:
                    message = f.read()
                verdict = checks.inspect(None, message)
                self.assertIsInstance(verdict.message, bytes)
                primary = [e.name for e in walk(verdict.message) if isinstance(e, Header) and e.kind is HeaderKind.PRIMARY]
                self.assertNotIn("Received", primary, name)
                for event in verdict.events:
                    self.assertIsInstance(event, CheckEvent)
                    str(event)


class ErrorTypeTests(SynchronousTestCase):
    def test_verdict_error_is_a_mail_error(self) -> None:
        self.assertIsInstance(inspect(PLAIN, header="/^To:/ REJECT\n").error, MailError)


def nested_exe(levels: int, crlf: bool = False) -> bytes:
    """An C{.exe} attachment inside C{levels} nested multiparts (the issue's probe)."""
    head = [b"From: alice@example.org\nSubject: nested\nMIME-Version: 1.0\n"]
    for level in range(levels):
        head.append(b'Content-Type: multipart/mixed; boundary="b%d"\n\n--b%d\n' % (level, level))
    head.append(b'Content-Type: application/octet-stream; name="evil.exe"\n\nTVqQAAMAAAAEAAAA\n')
    for level in reversed(range(levels)):
        head.append(b"--b%d--\n" % level)
    message = b"".join(head)
    return message.replace(b"\n", b"\r\n") if crlf else message


class NestingLimitTests(SynchronousTestCase):
    """Issue 16 item 1: the attachment filter could be skipped by nesting past 100 levels."""

    def test_regression_mime_nesting_beyond_limit_refused(self) -> None:
        checks = ContentChecks(mime_header_checks=sample("mime_header_checks"))
        for levels in (1, 50, 100):
            verdict = checks.inspect(None, nested_exe(levels))
            self.assertEqual((verdict.error.code, verdict.error.enhanced), (550, "5.7.1"), levels)
            self.assertIn("evil.exe", verdict.error.text)
        for levels in (101, 200, 1000, 5000):
            verdict = checks.inspect(None, nested_exe(levels))
            self.assertEqual(
                (verdict.error.code, verdict.error.enhanced, verdict.error.text),
                (550, "5.6.0", "MIME nesting exceeds safety limit"),
                levels,
            )
            [event] = verdict.events
            self.assertIsInstance(event, MimeErrorEvent)
            self.assertEqual(
                str(event), 'reject: mime-error MIME nesting exceeds safety limit: '
                'Content-Type: multipart/mixed; boundary="b100"'
            )

    def test_attached_messages_count_as_levels(self) -> None:
        message = b"Subject: a\n" + b"Content-Type: message/rfc822\n\nSubject: b\n" * 3 + b"\nbody\n"
        verdict = inspect(message, header="/^X-Never:/ REJECT\n", mime_nesting_limit=2)
        self.assertEqual(verdict.error.enhanced, "5.6.0")
        self.assertIsNone(inspect(message, header="/^X-Never:/ REJECT\n", mime_nesting_limit=3).error)

    def test_enforced_with_any_table_configured(self) -> None:
        message = nested_exe(101)
        for tables in ({"header": "/^X-Never:/ WARN\n"}, {"body": "/^never$/ REJECT\n"}, {"nested": "/^X/ WARN\n"}):
            self.assertEqual(inspect(message, **tables).error.enhanced, "5.6.0", tables)

    def test_not_enforced_without_checks(self) -> None:
        verdict = ContentChecks().inspect(None, nested_exe(101))
        self.assertIsNone(verdict.error)

    def test_configured_limit(self) -> None:
        checks = ContentChecks(mime_header_checks=sample("mime_header_checks"), mime_nesting_limit=10)
        self.assertEqual(checks.inspect(None, nested_exe(10)).error.enhanced, "5.7.1")
        self.assertEqual(checks.inspect(None, nested_exe(11)).error.enhanced, "5.6.0")


def exe_in_multipart(boundary: bytes, padding: bytes = b"") -> bytes:
    """An C{.exe} attachment in a multipart with this boundary (and C{padding} parameters before it)."""
    return (
        b"Subject: files\nMIME-Version: 1.0\nContent-Type: multipart/mixed; " + padding + b'boundary="' + boundary
        + b'"\n\n--' + boundary + b'\nContent-Type: application/octet-stream; name="evil.exe"\n\nTVqQ\n--'
        + boundary + b"--\n"
    )


class ContentTypeLimitTests(SynchronousTestCase):
    """Found while documenting Postfix's other MIME limits: two more ways around an attachment filter."""

    def setUp(self) -> None:
        self.checks = ContentChecks(mime_header_checks=sample("mime_header_checks"))

    def test_regression_long_boundary_still_splits_parts(self) -> None:
        # A boundary over 2048 bytes (Postfix's mime_boundary_length_limit)
        # made the multipart one opaque body: the .exe header went unchecked.
        for length in (70, 2048, 2049, 5000, 60000):
            verdict = self.checks.inspect(None, exe_in_multipart(b"b" * length))
            self.assertEqual((verdict.error.enhanced, "evil.exe" in verdict.error.text), ("5.7.1", True), length)

    def test_regression_padded_content_type_still_splits_parts(self) -> None:
        # Only the first 16 KB of a Content-Type were parsed: a boundary
        # parameter after 16 KB of padding was never seen.
        verdict = self.checks.inspect(None, exe_in_multipart(b"b1", b'x="' + b"a" * 16400 + b'"; '))
        self.assertEqual(verdict.error.enhanced, "5.7.1")
        self.assertIn("evil.exe", verdict.error.text)

    def test_regression_content_type_past_header_size_limit_refused(self) -> None:
        # Past header_size_limit (102400) the boundary cannot be looked for:
        # refused with Postfix's text rather than passed unchecked.
        verdict = self.checks.inspect(None, exe_in_multipart(b"b1", b'x="' + b"a" * 102400 + b'"; '))
        self.assertEqual((verdict.error.code, verdict.error.enhanced, verdict.error.text),
                         (550, "5.6.0", "message header length exceeds safety limit"))
        self.assertTrue(str(verdict.events[0]).startswith(
            "reject: mime-error message header length exceeds safety limit: Content-Type: multipart/mixed;"))

    def test_long_plain_content_type_is_not_refused(self) -> None:
        message = b"Content-Type: text/plain; x=" + b"a" * 200000 + b"\n\nbody\n"
        self.assertIsNone(self.checks.inspect(None, message).error)
