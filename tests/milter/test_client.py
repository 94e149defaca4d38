"""The milter session on a StringTransport and task.Clock, against a scripted milter."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.error import ConnectionLost
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from mailserver.milter import codec
from mailserver.milter.client import (
    ACCEPT, CONTINUE, DISCARD, OFFERED_PROTOCOL, REJECT, SHUTDOWN, TEMPFAIL, MilterSession,
    Verdict, family_of, reply_error,
)  # fmt: skip
from tests.milter.fakes import ScriptedMilter, settings

MACROS = {"j": "mx.example.com", "{daemon_name}": "mx", "v": "mailserver"}


class Started:
    """A session that went through connect (with negotiation) and HELO."""

    def start(self, actions: int = codec.SMFIF_ALL, protocol: int = 0, **changes: Any) -> tuple[ScriptedMilter, MilterSession]:
        milter = ScriptedMilter()
        session = milter.session(**changes)
        d = session.connect(MACROS, "client.example.com", codec.FAMILY_INET, 4567, "192.0.2.1")
        milter.negotiate(actions, protocol)
        milter.reply(codec.Continue())
        self.assertEqual(self.successResultOf(d).action, CONTINUE)  # type: ignore[attr-defined]
        milter.commands()
        return milter, session

    def message(self, milter: ScriptedMilter, session: MilterSession) -> None:
        """MAIL, RCPT, DATA, one header, EOH, body answered with continue."""
        for call in (
            lambda: session.mail_from(["<a@example.com>"], {"i": "Q1"}),
            lambda: session.rcpt(["<b@example.org>"]),
            lambda: session.data(),
            lambda: session.header("Subject", " hi"),
            lambda: session.eoh(),
            lambda: session.body(b"hello\r\n"),
        ):
            d = call()
            milter.reply(codec.Continue())
            self.assertEqual(self.successResultOf(d).action, CONTINUE)  # type: ignore[attr-defined]
        milter.commands()


class NegotiationTests(Started, SynchronousTestCase):
    def test_optneg_and_connect(self) -> None:
        """The session offers v6, every action and the steps it can skip, then sends macros and connect."""
        milter = ScriptedMilter()
        session = milter.session()
        d = session.connect(MACROS, "client.example.com", codec.FAMILY_INET, 4567, "192.0.2.1")
        self.assertEqual(milter.commands(), [codec.OptNeg(6, codec.SMFIF_ALL, OFFERED_PROTOCOL)])
        self.assertNoResult(d)
        milter.negotiate()
        self.assertEqual(
            milter.commands(),
            [
                codec.Macro(b"C", (("j", "mx.example.com"), ("{daemon_name}", "mx"))),
                codec.Connect("client.example.com", codec.FAMILY_INET, 4567, "192.0.2.1"),
            ],
        )
        milter.reply(codec.Continue())
        self.assertEqual(self.successResultOf(d), Verdict())

    def test_symbol_list_overrides_macros(self) -> None:
        """Macro lists from the milter's negotiation replace the configured ones."""
        milter = ScriptedMilter()
        session = milter.session()
        d = session.connect(MACROS, "h", codec.FAMILY_UNKNOWN)
        milter.negotiate(macros=((codec.SMFIM_CONNECT, "v"),))
        self.assertEqual(milter.commands()[1], codec.Macro(b"C", (("v", "mailserver"),)))
        milter.reply(codec.Continue())
        self.successResultOf(d)

    def test_version_too_high(self) -> None:
        """A milter answering with a newer version gets the default action (tempfail)."""
        milter = ScriptedMilter()
        session = milter.session()
        d = session.connect(MACROS, "h")
        milter.reply(codec.OptNeg(7, 0, 0))
        verdict = self.successResultOf(d)
        self.assertEqual((verdict.action, verdict.error.code, verdict.default), (TEMPFAIL, 451, True))
        self.assertTrue(milter.transport.disconnecting)

    def test_unoffered_protocol_step(self) -> None:
        """Asking for a protocol step we did not offer (SMFIP_RCPT_REJ) is a failed milter."""
        milter = ScriptedMilter()
        session = milter.session(default_action="reject")
        d = session.connect(MACROS, "h")
        milter.negotiate(protocol=codec.SMFIP_RCPT_REJ)
        verdict = self.successResultOf(d)
        self.assertEqual((verdict.action, str(verdict.error)), (REJECT, "550 5.5.0 Service unavailable"))

    def test_skipped_steps_and_no_reply(self) -> None:
        """SMFIP_NO* steps are not sent; SMFIP_NR_* steps are sent without waiting."""
        milter, session = self.start(protocol=codec.SMFIP_NOHELO | codec.SMFIP_NR_MAIL | codec.SMFIP_NR_HDR)
        self.assertEqual(self.successResultOf(session.helo("x")), Verdict())
        self.assertEqual(milter.commands(), [])
        self.assertEqual(self.successResultOf(session.mail_from(["<a@b>"], {"i": "Q"})).action, CONTINUE)
        self.assertEqual(milter.commands(), [codec.Macro(b"M", (("i", "Q"),)), codec.Mail(("<a@b>",))])
        self.successResultOf(session.header("Subject", " x"))
        self.assertEqual(milter.commands(), [codec.Header("Subject", "x")])

    def test_leading_space(self) -> None:
        """With SMFIP_HDR_LEADSPC header values go and come back as they are."""
        milter, session = self.start(protocol=codec.SMFIP_HDR_LEADSPC)
        d = session.header("Subject", " hi")
        self.assertEqual(milter.commands(), [codec.Header("Subject", " hi")])
        milter.reply(codec.Continue())
        self.successResultOf(d)
        d = session.eom()
        milter.reply(codec.AddHeader("X-A", "\tb"), codec.Continue())
        self.assertEqual(self.successResultOf(d).modifications, (codec.AddHeader("X-A", "\tb"),))


class ReplyTests(Started, SynchronousTestCase):
    def test_every_final_reply_at_rcpt(self) -> None:
        """reject/tempfail/replycode/discard/accept/shutdown map to verdicts with Postfix's texts."""
        cases = [
            (codec.Reject(), REJECT, "550 5.7.1 Command rejected"),
            (codec.Tempfail(), TEMPFAIL, "451 4.7.1 Service unavailable - try again later"),
            (codec.ReplyCode("554 5.7.1 Spam message rejected"), REJECT, "554 5.7.1 Spam message rejected"),
            (codec.ReplyCode("450 4.2.0 Greylisted"), TEMPFAIL, "450 4.2.0 Greylisted"),
            (codec.Shutdown(), SHUTDOWN, "421 4.7.0 Server closing connection"),
            (codec.Discard(), DISCARD, None),
            (codec.Accept(), ACCEPT, None),
        ]
        for reply, action, text in cases:
            milter, session = self.start()
            self.successResultOf(_answered(milter, session.mail_from(["<a@b>"]), codec.Continue()))
            verdict = self.successResultOf(_answered(milter, session.rcpt(["<c@d>"]), reply))
            self.assertEqual(verdict.action, action, reply)
            self.assertEqual(str(verdict.error) if verdict.error else None, text)

    def test_rcpt_reject_is_per_recipient(self) -> None:
        """After one recipient is rejected the next one is still sent."""
        milter, session = self.start()
        self.successResultOf(_answered(milter, session.mail_from(["<a@b>"]), codec.Continue()))
        self.assertEqual(self.successResultOf(_answered(milter, session.rcpt(["<x@d>"]), codec.Reject())).action, REJECT)
        milter.commands()
        d = session.rcpt(["<y@d>"])
        self.assertEqual(milter.commands(), [codec.Rcpt(("<y@d>",))])
        milter.reply(codec.Continue())
        self.assertEqual(self.successResultOf(d).action, CONTINUE)

    def test_accept_skips_rest_of_message(self) -> None:
        """After accept at MAIL the milter hears nothing more until the next message."""
        milter, session = self.start()
        self.successResultOf(_answered(milter, session.mail_from(["<a@b>"]), codec.Accept()))
        milter.commands()
        self.assertEqual(self.successResultOf(session.rcpt(["<c@d>"])), Verdict())
        self.assertEqual(self.successResultOf(session.eom()), Verdict())
        self.assertEqual(milter.commands(), [])
        session.abort()
        d = session.mail_from(["<a@b>"])
        self.assertEqual(milter.commands(), [codec.Abort(), codec.Mail(("<a@b>",))])
        milter.reply(codec.Continue())
        self.successResultOf(d)

    def test_accept_at_connect_skips_connection(self) -> None:
        milter = ScriptedMilter()
        session = milter.session()
        d = session.connect(MACROS, "h")
        milter.negotiate()
        milter.reply(codec.Accept())
        self.assertEqual(self.successResultOf(d).action, ACCEPT)
        milter.commands()
        self.assertEqual(self.successResultOf(session.helo("h")), Verdict())
        self.assertEqual(self.successResultOf(session.mail_from(["<a@b>"])), Verdict())
        self.assertEqual(milter.commands(), [])

    def test_eom_modifications(self) -> None:
        """Every modification reply before the final one is in the verdict, values with a space."""
        milter, session = self.start()
        self.message(milter, session)
        d = session.eom({"i": "Q1"})
        self.assertEqual(milter.commands(), [codec.EndOfMessage()])
        milter.reply(
            codec.AddHeader("X-Spam", "Yes"),
            codec.InsertHeader(1, "Authentication-Results", "mx; none"),
            codec.ChangeHeader(1, "Subject", "[SPAM] hi"),
            codec.AddRecipient("<c@example.net>"),
            codec.AddRecipientPar("<d@example.net>", "NOTIFY=NEVER"),
            codec.DeleteRecipient("<b@example.org>"),
            codec.ChangeFrom("<s@example.com>"),
            codec.ReplaceBody(b"new\r\n"),
            codec.Quarantine("looks bad"),
            codec.Progress(),
            codec.Accept(),
        )
        verdict = self.successResultOf(d)
        self.assertEqual(verdict.action, ACCEPT)
        self.assertEqual(verdict.quarantine, "looks bad")
        self.assertEqual(
            verdict.modifications,
            (
                codec.AddHeader("X-Spam", " Yes"),
                codec.InsertHeader(1, "Authentication-Results", " mx; none"),
                codec.ChangeHeader(1, "Subject", " [SPAM] hi"),
                codec.AddRecipient("<c@example.net>"),
                codec.AddRecipientPar("<d@example.net>", "NOTIFY=NEVER"),
                codec.DeleteRecipient("<b@example.org>"),
                codec.ChangeFrom("<s@example.com>"),
                codec.ReplaceBody(b"new\r\n"),
            ),
        )

    def test_unnegotiated_modification(self) -> None:
        """A change the milter did not ask for in negotiation fails the milter (default action)."""
        milter, session = self.start(actions=codec.SMFIF_ADDHDRS)
        self.message(milter, session)
        d = session.eom()
        milter.reply(codec.ChangeFrom("<x@y>"), codec.Continue())
        verdict = self.successResultOf(d)
        self.assertEqual((verdict.action, verdict.default), (TEMPFAIL, True))

    def test_modification_before_eom(self) -> None:
        milter, session = self.start()
        d = session.mail_from(["<a@b>"])
        milter.reply(codec.AddHeader("X", "y"), codec.Continue())
        self.assertEqual(self.successResultOf(d).default, True)

    def test_skip_stops_body(self) -> None:
        """SMFIR_SKIP to a body chunk: no more chunks are sent, end of message still is."""
        milter, session = self.start(protocol=codec.SMFIP_SKIP)
        for call in (lambda: session.mail_from(["<a@b>"]), lambda: session.eoh()):
            self.successResultOf(_answered(milter, call(), codec.Continue()))
        milter.commands()
        d = session.body(b"x" * 200000)
        self.assertEqual(len(milter.commands()), 1)
        milter.reply(codec.Skip())
        self.assertEqual(self.successResultOf(d).action, CONTINUE)
        self.assertEqual(milter.commands(), [])
        self.assertEqual(self.successResultOf(session.body(b"more")), Verdict(skip_body=False))
        self.assertEqual(milter.commands(), [])
        d = session.eom()
        self.assertEqual(milter.commands(), [codec.EndOfMessage()])
        milter.reply(codec.Continue())
        self.successResultOf(d)

    def test_body_chunked(self) -> None:
        """A large body goes in 65535-byte chunks, each answered."""
        milter, session = self.start()
        d = session.body(b"y" * 70000)
        self.assertEqual(milter.commands(), [codec.Body(b"y" * 65535)])
        milter.reply(codec.Continue())
        self.assertEqual(milter.commands(), [codec.Body(b"y" * 4465)])
        milter.reply(codec.Continue())
        self.successResultOf(d)

    def test_unknown_command(self) -> None:
        """SMFIC_UNKNOWN carries the command line; a milter may answer it with its own reply."""
        milter, session = self.start()
        d = session.unknown("XFOO bar")
        self.assertEqual(milter.commands(), [codec.Unknown("XFOO bar")])
        milter.reply(codec.ReplyCode("502 5.5.2 No"))
        self.assertEqual(str(self.successResultOf(d).error), "502 5.5.2 No")

    def test_bad_replycode(self) -> None:
        """A SMFIR_REPLYCODE that is not a 4xx/5xx reply fails the milter."""
        milter, session = self.start()
        d = session.helo("x")
        milter.reply(codec.ReplyCode("250 fine"))
        self.assertTrue(self.successResultOf(d).default)

    def test_reply_error_parsing(self) -> None:
        self.assertEqual(str(reply_error("550 5.7.1 No")), "550 5.7.1 No")
        self.assertEqual(str(reply_error("550 No way")), "550 5.7.1 No way")
        self.assertEqual(str(reply_error("421-4.7.0 a\r\n421 4.7.0 b")), "421 4.7.0 a b")
        self.assertEqual(str(reply_error("450 5.7.1 mixed")), "450 4.7.1 mixed")
        self.assertIsNone(reply_error("hello"))
        self.assertIsNone(reply_error("250 ok"))

    def test_family_of(self) -> None:
        self.assertEqual(family_of("192.0.2.1"), codec.FAMILY_INET)
        self.assertEqual(family_of("2001:db8::1"), codec.FAMILY_INET6)
        self.assertEqual(family_of("unknown"), codec.FAMILY_UNKNOWN)


class FailureTests(Started, SynchronousTestCase):
    def test_connect_timeout(self) -> None:
        """No connection within milter_connect_timeout: the default action."""
        milter = ScriptedMilter()
        session = MilterSession(settings(), milter.clock, milter.never_connect)
        d = session.connect(MACROS, "h")
        milter.clock.advance(29)
        self.assertNoResult(d)
        milter.clock.advance(1)
        verdict = self.successResultOf(d)
        self.assertEqual((verdict.action, verdict.default), (TEMPFAIL, True))
        self.assertIn("connect timed out", session.failed)

    def test_negotiation_timeout(self) -> None:
        """Option negotiation is bounded by milter_connect_timeout too."""
        milter = ScriptedMilter()
        session = milter.session(connect_timeout=5.0)
        d = session.connect(MACROS, "h")
        milter.clock.advance(5)
        self.assertTrue(self.successResultOf(d).default)
        self.assertTrue(milter.transport.disconnected or milter.transport.disconnecting)

    def test_connection_refused(self) -> None:
        milter = ScriptedMilter()
        session = MilterSession(settings(default_action="accept"), milter.clock,
                                lambda: defer.fail(ConnectionRefusedErrorish()))  # fmt: skip
        verdict = self.successResultOf(session.connect(MACROS, "h"))
        self.assertEqual(verdict, Verdict(CONTINUE, default=True))

    def test_command_timeout(self) -> None:
        """milter_command_timeout bounds MAIL; the connection is dropped; later stages get the default."""
        milter, session = self.start(command_timeout=30.0)
        d = session.mail_from(["<a@b>"])
        milter.clock.advance(29.9)
        self.assertNoResult(d)
        milter.clock.advance(0.1)
        self.assertEqual(self.successResultOf(d).action, TEMPFAIL)
        self.assertTrue(milter.transport.disconnecting or milter.transport.disconnected)
        milter.commands()
        verdict = self.successResultOf(session.rcpt(["<c@d>"]))
        self.assertEqual((verdict.action, verdict.default), (TEMPFAIL, True))
        self.assertEqual(milter.commands(), [])

    def test_progress_restarts_content_timeout(self) -> None:
        """SMFIR_PROGRESS restarts milter_content_timeout at end of message."""
        milter, session = self.start()
        d = session.eom()
        milter.clock.advance(299)
        milter.reply(codec.Progress())
        milter.clock.advance(299)
        self.assertNoResult(d)
        milter.reply(codec.Continue())
        self.assertEqual(self.successResultOf(d), Verdict())
        self.assertEqual(milter.clock.getDelayedCalls(), [])

    def test_content_timeout(self) -> None:
        milter, session = self.start()
        d = session.eom()
        milter.clock.advance(300)
        self.assertEqual(self.successResultOf(d).action, TEMPFAIL)

    def test_connection_lost_mid_message(self) -> None:
        """The milter going away while a body chunk is pending: default action, no exception."""
        for action, expected in (("tempfail", TEMPFAIL), ("reject", REJECT), ("accept", CONTINUE)):
            milter, session = self.start(default_action=action)
            d = session.body(b"x")
            milter.protocol.connectionLost(Failure(ConnectionLost()))
            verdict = self.successResultOf(d)
            self.assertEqual((verdict.action, verdict.default), (expected, True))
            self.assertEqual(self.successResultOf(session.eom()).action, expected)

    def test_quarantine_default_action(self) -> None:
        """default_action = quarantine: continue, and the end of message carries the hold reason."""
        milter, session = self.start(default_action="quarantine")
        d = session.mail_from(["<a@b>"])
        milter.protocol.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(self.successResultOf(d).action, CONTINUE)
        verdict = self.successResultOf(session.eom())
        self.assertEqual(verdict.action, CONTINUE)
        self.assertIn("unavailable", verdict.quarantine)

    def test_garbage_from_milter(self) -> None:
        """An oversized or unknown packet is a protocol error: default action, connection closed."""
        milter, session = self.start()
        d = session.helo("x")
        milter.protocol.dataReceived(b"\xff\xff\xff\xff")
        self.assertTrue(self.successResultOf(d).default)
        self.assertTrue(milter.transport.disconnecting)

    def test_unsolicited_reply(self) -> None:
        """A reply with nothing pending closes the connection; the next stage gets the default."""
        milter, session = self.start()
        milter.reply(codec.Continue())
        self.assertTrue(milter.transport.disconnecting)
        milter.protocol.connectionLost(Failure(ConnectionLost()))
        self.assertTrue(self.successResultOf(session.helo("x")).default)

    def test_quit(self) -> None:
        milter, session = self.start()
        session.quit()
        self.assertEqual(milter.commands(), [codec.Quit()])
        self.assertTrue(milter.transport.disconnecting)


class ConnectionRefusedErrorish(Exception):
    """Stands for any connection error an endpoint reports."""


def _answered(milter: ScriptedMilter, d: defer.Deferred[Verdict], *replies: Any) -> defer.Deferred[Verdict]:
    milter.reply(*replies)
    return d


class ConcurrencyTests(Started, SynchronousTestCase):
    def test_regression_concurrent_calls_share_one_connection(self) -> None:
        """
        Stages called before the previous one is answered queue up in order
        over one milter connection (each used to open its own connection).
        """
        milter = ScriptedMilter()
        session = milter.session()
        first = session.connect(MACROS, "h")
        second = session.helo("h")
        third = session.mail_from(["<a@b>"])
        self.assertEqual(milter.connects, 1)
        milter.negotiate()
        self.assertEqual([type(c) for c in milter.commands()], [codec.OptNeg, codec.Macro, codec.Connect])
        milter.reply(codec.Continue())
        self.assertEqual(milter.commands(), [codec.Helo("h")])
        milter.reply(codec.Continue())
        self.assertEqual(milter.commands(), [codec.Mail(("<a@b>",))])
        milter.reply(codec.Reject())
        self.assertEqual(
            [self.successResultOf(d).action for d in (first, second, third)], [CONTINUE, CONTINUE, REJECT]
        )
        self.assertEqual(milter.connects, 1)


class VersionTests(SynchronousTestCase):
    def test_older_milter(self) -> None:
        """milter_protocol = 2 offers only version-2 steps; DATA and unknown commands are not sent."""
        milter = ScriptedMilter()
        session = milter.session(protocol=2)
        d = session.connect(MACROS, "h")
        self.assertEqual(milter.commands(), [codec.OptNeg(2, codec.SMFIF_ALL, 0x7F)])
        milter.reply(codec.OptNeg(2, codec.SMFIF_ADDHDRS, 0))
        milter.commands()
        milter.reply(codec.Continue())
        self.successResultOf(d)
        self.assertEqual(self.successResultOf(session.data()), Verdict())
        self.assertEqual(self.successResultOf(session.unknown("XFOO")), Verdict())
        self.assertEqual(milter.commands(), [])

    def test_version_6_offer_to_older_milter(self) -> None:
        """A version-2 milter answering our version-6 offer is used at version 2."""
        milter = ScriptedMilter()
        session = milter.session()
        d = session.connect(MACROS, "h")
        milter.reply(codec.OptNeg(2, codec.SMFIF_ADDHDRS, codec.SMFIP_NOHELO))
        milter.commands()
        milter.reply(codec.Continue())
        self.successResultOf(d)
        self.assertEqual(self.successResultOf(session.data()), Verdict())
        self.assertEqual(milter.commands(), [])


class MoreReplyTests(Started, SynchronousTestCase):
    def test_quarantine_needs_negotiation(self) -> None:
        """SMFIR_QUARANTINE without SMFIF_QUARANTINE fails the milter like any other change."""
        milter, session = self.start(actions=codec.SMFIF_ADDHDRS)
        d = session.eom()
        milter.reply(codec.Quarantine("x"), codec.Accept())
        self.assertTrue(self.successResultOf(d).default)

    def test_regression_header_name_injection(self) -> None:
        """
        A header name with a line break, space or colon (which would write
        extra header lines or end the header section) fails the milter
        instead of reaching the message.
        """
        for name in ("X-A\nInjected: yes", "X A", "X:A", "", "X-\u00e9"):
            milter, session = self.start()
            d = session.eom()
            milter.reply(codec.AddHeader(name, "v"), codec.Accept())
            verdict = self.successResultOf(d)
            self.assertEqual((verdict.action, verdict.default), (TEMPFAIL, True), name)
            self.assertEqual(verdict.modifications, ())

    def test_regression_envelope_injection(self) -> None:
        """
        Recipients, senders and their arguments with line breaks or bad
        syntax (which could smuggle commands into a later SMTP relay) fail
        the milter; the null sender is a valid new sender.
        """
        bad = [
            codec.AddRecipient("<a@b>\r\nRCPT TO:<x@y>"), codec.AddRecipient("<a b@c>"),
            codec.AddRecipientPar("<a@b>", "NOTIFY=NEVER\r\nDATA"), codec.DeleteRecipient("<\x01@b>"),
            codec.ChangeFrom("<s@x>\nRSET"), codec.ChangeFrom("<s@x>", "SIZE=1\r"),
        ]  # fmt: skip
        for change in bad:
            milter, session = self.start()
            d = session.eom()
            milter.reply(change, codec.Accept())
            self.assertTrue(self.successResultOf(d).default, change)
        milter, session = self.start()
        d = session.eom()
        milter.reply(codec.ChangeFrom("<>"), codec.AddRecipient("b@example.org"), codec.Accept())
        self.assertEqual(len(self.successResultOf(d).modifications), 2)

    def test_regression_reply_text_control_characters(self) -> None:
        """A SMFIR_REPLYCODE with a bare CR or other control character is refused."""
        self.assertIsNone(reply_error("550 5.7.1 a\rb"))
        self.assertIsNone(reply_error("550 5.7.1 a\x00b"))

    def test_shutdown_ends_the_connection_for_the_milter(self) -> None:
        milter, session = self.start()
        self.assertEqual(self.successResultOf(_answered(milter, session.helo("h"), codec.Shutdown())).action, SHUTDOWN)
        milter.commands()
        self.assertEqual(self.successResultOf(session.mail_from(["<a@b>"])), Verdict())
        self.assertEqual(milter.commands(), [])
