"""Applying milter modifications to a message and its envelope (pure)."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from mailserver.errors import MailError
from mailserver.milter import codec
from mailserver.milter.actions import apply, milter_body, milter_headers, outcome
from mailserver.milter.client import Verdict

MESSAGE = (
    b"Received: from client by mx\n\tfor <b@example.org>\n"
    b"From: a@example.com\n"
    b"Subject: one\n"
    b"Subject: two\n"
    b"\n"
    b"Body line\n"
)


def headers(message: bytes) -> list[str]:
    return [f"{name}:{value}" for name, value in milter_headers(message)]


class SplitTests(SynchronousTestCase):
    def test_headers_and_body(self) -> None:
        """Headers keep their leading space and folding (LF); the body is sent with CRLF."""
        self.assertEqual(
            milter_headers(MESSAGE),
            [("Received", " from client by mx\n\tfor <b@example.org>"), ("From", " a@example.com"),
             ("Subject", " one"), ("Subject", " two")],
        )  # fmt: skip
        self.assertEqual(milter_body(MESSAGE), b"Body line\r\n")
        crlf = MESSAGE.replace(b"\n", b"\r\n")
        self.assertEqual(milter_headers(crlf), milter_headers(MESSAGE))
        self.assertEqual(milter_body(crlf), b"Body line\r\n")

    def test_no_body(self) -> None:
        self.assertEqual(milter_body(b"Subject: x\n"), b"")
        self.assertEqual(milter_headers(b"Subject: x\n"), [("Subject", " x")])

    def test_unchanged(self) -> None:
        """No modification gives the same bytes, LF or CRLF."""
        self.assertEqual(apply(MESSAGE, "a", ["b"], ()).message, MESSAGE)
        crlf = MESSAGE.replace(b"\n", b"\r\n")
        self.assertEqual(apply(crlf, "a", ["b"], ()).message, crlf)


class HeaderTests(SynchronousTestCase):
    def test_add_header_appends(self) -> None:
        result = apply(MESSAGE, "a", ["b"], [codec.AddHeader("X-Spam", " Yes")])
        self.assertEqual(headers(result.message)[-1], "X-Spam: Yes")
        self.assertTrue(result.message.endswith(b"X-Spam: Yes\n\nBody line\n"))

    def test_insert_header_index(self) -> None:
        """SMFIR_INSHEADER: 0 is the top, 1 after the first header (our Received), past the end appends."""
        result = apply(MESSAGE, "a", ["b"], [
            codec.InsertHeader(1, "Authentication-Results", " mx; none"),
            codec.InsertHeader(0, "X-Top", " 1"),
            codec.InsertHeader(99, "X-End", " 2"),
        ])  # fmt: skip
        names = [h.split(":")[0] for h in headers(result.message)]
        self.assertEqual(
            names, ["X-Top", "Received", "Authentication-Results", "From", "Subject", "Subject", "X-End"]
        )

    def test_change_header_index(self) -> None:
        """SMFIR_CHGHEADER counts same-name headers from 1; empty value deletes; missing adds."""
        result = apply(MESSAGE, "a", ["b"], [codec.ChangeHeader(2, "subject", " TWO")])
        self.assertEqual(headers(result.message)[2:], ["Subject: one", "Subject: TWO"])
        result = apply(MESSAGE, "a", ["b"], [codec.ChangeHeader(1, "Subject", "")])
        self.assertEqual(headers(result.message)[2:], ["Subject: two"])
        result = apply(MESSAGE, "a", ["b"], [codec.ChangeHeader(3, "Subject", "")])
        self.assertEqual(result.message, MESSAGE)
        result = apply(MESSAGE, "a", ["b"], [codec.ChangeHeader(1, "X-New", " v")])
        self.assertEqual(headers(result.message)[-1], "X-New: v")

    def test_folded_value_and_crlf(self) -> None:
        """Folded values take the message's line end; a continuation without indent gets a tab."""
        crlf = MESSAGE.replace(b"\n", b"\r\n")
        result = apply(crlf, "a", ["b"], [codec.AddHeader("X-Spamd-Result", " default: False\n\tA(1)\nB(2)")])
        self.assertIn(b"X-Spamd-Result: default: False\r\n\tA(1)\r\n\tB(2)\r\n\r\nBody", result.message)

    def test_milter_cannot_end_header_section(self) -> None:
        """A header value with blank lines cannot inject a body or further headers."""
        result = apply(MESSAGE, "a", ["b"], [codec.AddHeader("X-Evil", " a\n\nInjected: yes\n")])
        self.assertEqual(headers(result.message)[-1], "X-Evil: a\n\tInjected: yes")
        self.assertTrue(result.message.endswith(b"\n\nBody line\n"))


class BodyAndEnvelopeTests(SynchronousTestCase):
    def test_replace_body(self) -> None:
        """SMFIR_REPLBODY chunks are joined, CRLF converted to the message's line end."""
        result = apply(MESSAGE, "a", ["b"], [codec.ReplaceBody(b"new\r\n"), codec.ReplaceBody(b"body\r\n")])
        self.assertTrue(result.message.endswith(b"Subject: two\n\nnew\nbody\n"))
        self.assertTrue(result.body_replaced)

    def test_recipients_and_sender(self) -> None:
        result = apply(MESSAGE, "a@example.com", ["b@example.org", "c@example.org"], [
            codec.AddRecipient("<d@example.net>"),
            codec.AddRecipientPar("<e@example.net>", "NOTIFY=NEVER"),
            codec.AddRecipient("<B@EXAMPLE.ORG>"),
            codec.DeleteRecipient("<b@example.org>"),
            codec.ChangeFrom("<bounces@example.com>", "SIZE=100"),
            codec.Quarantine("held"),
        ])  # fmt: skip
        self.assertEqual(result.recipients, ("c@example.org", "d@example.net", "e@example.net"))
        self.assertEqual(result.added, (("d@example.net", ""), ("e@example.net", "NOTIFY=NEVER")))
        self.assertEqual(result.deleted, ("b@example.org",))
        self.assertEqual((result.sender, result.sender_args), ("bounces@example.com", "SIZE=100"))
        self.assertEqual(result.quarantine, "held")
        self.assertEqual(result.message, MESSAGE)

    def test_not_a_modification(self) -> None:
        self.assertRaises(TypeError, apply, MESSAGE, "a", ["b"], [codec.Continue()])


class OutcomeTests(SynchronousTestCase):
    def test_outcomes(self) -> None:
        """Refuse, discard, hold, spam folder or plain delivery from an end-of-message verdict."""
        error = MailError(554, "5.7.1", "Spam")
        self.assertEqual(outcome(Verdict("reject", error), MESSAGE, "a", ["b"], "Junk").error, error)
        self.assertTrue(outcome(Verdict("discard"), MESSAGE, "a", ["b"], "Junk").discard)
        held = outcome(Verdict("accept", quarantine="looks bad"), MESSAGE, "a", ["b"], "Junk")
        self.assertEqual((held.hold, held.folder, held.applied.message), ("looks bad", None, MESSAGE))
        spam = outcome(Verdict("accept", modifications=(codec.AddHeader("X-Spam", " Yes"),)),
                       MESSAGE, "a", ["b"], "Junk")  # fmt: skip
        self.assertEqual((spam.folder, spam.hold), ("Junk", None))
        self.assertIn(b"X-Spam: Yes", spam.applied.message)
        self.assertIsNone(outcome(Verdict("accept", modifications=(codec.AddHeader("X-Spam", " Yes"),)),
                                  MESSAGE, "a", ["b"], "").folder)  # fmt: skip
        self.assertIsNone(outcome(Verdict(), MESSAGE, "a", ["b"], "Junk").folder)
