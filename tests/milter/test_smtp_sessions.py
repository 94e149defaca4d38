"""
Milters wired into real SMTP sessions on loopback: rspamd (skipped where it
is not installed), a milter address nobody listens on, and a scripted milter
for the end-of-message actions (quarantine, recipients, sender, body).
"""

from __future__ import annotations

import os
import smtplib
import socket
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.threads import deferToThread
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import TestCase

from mailserver.milter import codec
from tests.harness import RunningServer
from tests.milter import rspamd
from tests.milter.scripted import ScriptedMilterFactory

MESSAGE = (
    "From: Sender <sender@remote.example>\r\nTo: Alice <alice@example.com>\r\nSubject: {subject}\r\n"
    "Message-ID: <m1@remote.example>\r\nDate: Fri, 4 Dec 2026 16:00:00 +0000\r\n\r\n{body}\r\n"
)


def send(port: int, body: str, subject: str = "Lunch", rcpts=("alice@example.com",),
         sender: str = "sender@remote.example") -> Any:  # fmt: skip
    """One message over SMTP; (refused recipients, None) or (None, SMTP error)."""
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
        client.ehlo("client.remote.example")
        try:
            return client.sendmail(sender, list(rcpts), MESSAGE.format(subject=subject, body=body).encode()), None
        except smtplib.SMTPException as error:
            return None, error


def free_port() -> int:
    """A loopback port nobody listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LogCapture:
    def __init__(self, testcase: TestCase) -> None:
        self.events: list[dict] = []
        globalLogPublisher.addObserver(self.events.append)
        testcase.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def lines(self, key: str) -> list[str]:
        return [e[key] for e in self.events if key in e]


class MilterSessionBase(TestCase):
    timeout = 120

    def start_server(self, milters: str, extra: str = "") -> defer.Deferred:
        self.server = RunningServer(self, extra=f"smtpd_milters = {milters}\n{extra}")
        return self.server.start()

    def send(self, *args: Any, **kw: Any) -> defer.Deferred:
        return deferToThread(send, self.server.ports["smtpd_listen"], *args, **kw)

    def junk(self, user: str = "alice") -> list[bytes]:
        new = os.path.join(self.server.maildir(user), ".Junk", "new")
        out = []
        for name in sorted(os.listdir(new)) if os.path.isdir(new) else []:
            with open(os.path.join(new, name), "rb") as f:
                out.append(f.read())
        return out


class RspamdSessionTests(MilterSessionBase):
    """rspamd in the SMTP path (its proxy worker in milter mode)."""

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        if rspamd.RSPAMD is None:
            raise self.skipTest("rspamd is not installed (apt-get install rspamd)")
        server = yield rspamd.shared(reactor)
        yield self.start_server(server.address)

    @defer.inlineCallbacks
    def test_gtube_rejected_with_rspamds_text(self) -> Any:
        logs = LogCapture(self)
        refused, error = yield self.send(rspamd.GTUBE)
        self.assertIsInstance(error, smtplib.SMTPDataError)
        self.assertEqual(error.smtp_code, 554)
        self.assertIn(b"5.7.1", error.smtp_error)
        self.assertIn(b"Gtube pattern", error.smtp_error)
        self.assertEqual(self.server.messages_any("alice"), [])
        self.assertTrue(any("status=reject" in line and "Gtube" in line for line in logs.lines("delivery_line")))

    @defer.inlineCallbacks
    def test_clean_message_delivered_with_rspamd_headers(self) -> Any:
        refused, error = yield self.send("Shall we have lunch at noon tomorrow?")
        self.assertEqual((refused, error), ({}, None))
        [message] = self.server.messages("alice")
        head = message.split(b"\n\n", 1)[0]
        self.assertIn(b"\nX-Spamd-Result: default: False [", head)
        self.assertIn(b"\nX-Rspamd-Server: ", head)
        self.assertIn(b"\nX-Rspamd-Queue-Id: ", head)
        self.assertNotIn(b"X-Spam: Yes", head)
        self.assertTrue(message.endswith(b"\n\nShall we have lunch at noon tomorrow?\n"))
        self.assertEqual(self.junk(), [])

    @defer.inlineCallbacks
    def test_add_header_verdict_lands_in_junk(self) -> Any:
        refused, error = yield self.send(f"Cheap offer {rspamd.ADD_HEADER_MARK}", subject="Offer")
        self.assertEqual((refused, error), ({}, None))
        self.assertEqual(self.server.messages("alice"), [])
        [message] = self.junk()
        self.assertIn(b"\nX-Spam: Yes\n", message)
        self.assertIn(b"MAILSERVER_TEST_SPAMMY", message)


class DeadMilterTests(MilterSessionBase):
    @defer.inlineCallbacks
    def test_refused_connection_tempfails_and_delivers_nothing(self) -> Any:
        """milter_default_action = tempfail (the default): MAIL gets Postfix's 451 4.3.5; nothing is lost or delivered."""
        logs = LogCapture(self)
        yield self.start_server(f"inet:127.0.0.1:{free_port()}")
        refused, error = yield self.send("hello")
        self.assertIsInstance(error, smtplib.SMTPSenderRefused)
        self.assertEqual(error.smtp_code, 451)
        self.assertEqual(error.smtp_error, b"4.3.5 Server configuration problem - try again later")
        self.assertEqual(self.server.messages_any("alice"), [])
        [line] = [l for l in logs.lines("reject_line") if "MAIL from" in l]
        self.assertIn("NOQUEUE: reject: MAIL from unknown[127.0.0.1]: 451 4.3.5 Server configuration problem", line)

    @defer.inlineCallbacks
    def test_default_action_accept_delivers(self) -> Any:
        yield self.start_server(f"inet:127.0.0.1:{free_port()}", "milter_default_action = accept\n")
        refused, error = yield self.send("hello")
        self.assertEqual((refused, error), ({}, None))
        self.assertEqual(len(self.server.messages("alice")), 1)


class ScriptedMilterSessionTests(MilterSessionBase):
    """End-of-message actions of a scripted milter, applied to real deliveries."""

    @defer.inlineCallbacks
    def serve(self, replies: dict | None = None, **kw: Any) -> Any:
        self.milter = ScriptedMilterFactory(replies, **kw)
        port = reactor.listenTCP(0, self.milter, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        yield self.start_server(f"inet:127.0.0.1:{port.getHost().port}")

    @defer.inlineCallbacks
    def test_quarantine_goes_to_hold_area(self) -> Any:
        yield self.serve({codec.EndOfMessage: [codec.Quarantine("suspicious"), codec.Continue()]})
        refused, error = yield self.send("hold me")
        self.assertEqual((refused, error), ({}, None))
        self.assertEqual(self.server.messages_any("alice"), [])
        hold_dir = os.path.join(self.server.config.data_directory, "hold")
        files = [os.path.join(root, n) for root, _, names in os.walk(hold_dir) for n in names]
        contents = b"".join(open(path, "rb").read() for path in files)
        self.assertIn(b"suspicious", contents)
        self.assertIn(b"hold me", contents)

    @defer.inlineCallbacks
    def test_add_recipient_change_sender_replace_body(self) -> Any:
        yield self.serve({codec.EndOfMessage: [
            codec.AddRecipient("<bob@example.com>"), codec.ChangeFrom("<bounces@example.com>", ""),
            codec.ReplaceBody(b"replaced\r\nbody\r\n"), codec.AddHeader("X-Scripted", "yes"), codec.Accept(),
        ]})  # fmt: skip
        refused, error = yield self.send("original body")
        self.assertEqual((refused, error), ({}, None))
        [to_alice] = self.server.messages("alice")
        [to_bob] = self.server.messages("bob")
        for message in (to_alice, to_bob):
            self.assertTrue(message.startswith(b"Return-Path: <bounces@example.com>\n"), message[:200])
            self.assertIn(b"\nX-Scripted: yes\n", message)
            self.assertTrue(message.endswith(b"\n\nreplaced\nbody\n"), message[-100:])
            self.assertNotIn(b"original body", message)

    @defer.inlineCallbacks
    def test_delete_recipient(self) -> Any:
        yield self.serve({codec.EndOfMessage: [codec.DeleteRecipient("<bob@example.com>"), codec.Continue()]})
        refused, error = yield self.send("x", rcpts=("alice@example.com", "bob@example.com"))
        self.assertEqual((refused, error), ({}, None))
        self.assertEqual(len(self.server.messages("alice")), 1)
        self.assertEqual(self.server.messages("bob"), [])

    @defer.inlineCallbacks
    def test_rcpt_refusal_is_per_recipient_and_logged(self) -> Any:
        logs = LogCapture(self)
        yield self.serve(rcpt_reject="bob@")
        refused, error = yield self.send("x", rcpts=("alice@example.com", "bob@example.com"))
        self.assertEqual(error, None)
        self.assertEqual(refused, {"bob@example.com": (550, b"5.7.1 Not this one")})
        self.assertEqual(len(self.server.messages("alice")), 1)
        self.assertEqual(self.server.messages("bob"), [])
        self.assertIn(
            "NOQUEUE: reject: RCPT from unknown[127.0.0.1]: 550 5.7.1 Not this one; from=<sender@remote.example>"
            " to=<bob@example.com> proto=ESMTP helo=<client.remote.example>",
            logs.lines("reject_line"),
        )

    @defer.inlineCallbacks
    def test_mail_reject_with_milter_text(self) -> Any:
        yield self.serve({codec.Mail: [codec.ReplyCode("550 5.7.1 Go away")]})
        refused, error = yield self.send("x")
        self.assertIsInstance(error, smtplib.SMTPSenderRefused)
        self.assertEqual((error.smtp_code, error.smtp_error), (550, b"5.7.1 Go away"))

    @defer.inlineCallbacks
    def test_discard(self) -> Any:
        yield self.serve({codec.EndOfMessage: [codec.Discard()]})
        refused, error = yield self.send("x")
        self.assertEqual((refused, error), ({}, None))
        self.assertEqual(self.server.messages_any("alice"), [])

    @defer.inlineCallbacks
    def test_large_message_streamed(self) -> Any:
        """A message past the spill threshold reaches the milter whole, in body chunks of at most 65535 bytes."""
        yield self.serve({codec.EndOfMessage: [codec.AddHeader("X-Scripted", "big"), codec.Continue()]})
        line = "x" * 76
        body = "\r\n".join([line] * 30000)  # about 2.3 MB
        refused, error = yield self.send(body)
        self.assertEqual((refused, error), ({}, None))
        chunks = [c.chunk for c in self.milter.seen if isinstance(c, codec.Body)]
        self.assertGreater(len(chunks), 30)
        self.assertTrue(all(len(c) <= 65535 for c in chunks))
        self.assertEqual(b"".join(chunks), (body + "\r\n").encode())
        [message] = self.server.messages("alice")
        self.assertIn(b"\nX-Scripted: big\n", message)
        self.assertTrue(message.endswith(((line + "\n") * 30000).encode()))


class NonSmtpdMilterTests(TestCase):
    """non_smtpd_milters: mail from sendmail/pickup gets the whole conversation with the local macros."""

    timeout = 60

    @defer.inlineCallbacks
    def test_pickup_mail_goes_through_non_smtpd_milters(self) -> Any:
        milter = ScriptedMilterFactory({codec.EndOfMessage: [codec.AddHeader("X-Scripted", "local"), codec.Accept()]})
        port = reactor.listenTCP(0, milter, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        server = RunningServer(self, extra=f"non_smtpd_milters = inet:127.0.0.1:{port.getHost().port}\n")
        yield server.start()
        injected = yield server.service.server.injector.inject_reporting(
            "root@example.com", ["alice@example.com"], b"Subject: cron\n\nreport\n"
        )
        self.assertEqual(injected.delivered, ("alice@example.com",))
        [message] = server.messages("alice")
        self.assertIn(b"\nX-Scripted: local\n", message)
        kinds = [type(c) for c in milter.seen if not isinstance(c, (codec.Macro, codec.OptNeg))]
        self.assertEqual(kinds[:4], [codec.Connect, codec.Helo, codec.Mail, codec.Rcpt])
        self.assertIn(codec.Body, kinds)
        connect = next(c for c in milter.seen if isinstance(c, codec.Connect))
        self.assertEqual(connect.hostname, "localhost")

    @defer.inlineCallbacks
    def test_smtp_mail_does_not_use_non_smtpd_milters(self) -> Any:
        milter = ScriptedMilterFactory()
        port = reactor.listenTCP(0, milter, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        server = RunningServer(self, extra=f"non_smtpd_milters = inet:127.0.0.1:{port.getHost().port}\n")
        yield server.start()
        refused, error = yield deferToThread(send, server.ports["smtpd_listen"], "hi")
        self.assertEqual((refused, error), ({}, None))
        self.assertEqual(milter.seen, [])


def raw_session(port: int, lines: list[bytes]) -> bytes:
    """Send each line after reading the previous reply; everything the server said until it closed."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        reader = sock.makefile("rb")
        out = reader.readline()
        for line in lines:
            sock.sendall(line)
            while True:  # bounded: multi-line replies end with "NNN "
                reply = reader.readline()
                out += reply
                if not reply or reply[3:4] != b"-":
                    break
            if not reply:
                break
        return out + reader.read()


class ConnectAndShutdownTests(MilterSessionBase):
    @defer.inlineCallbacks
    def serve(self, replies: dict) -> Any:
        self.milter = ScriptedMilterFactory(replies)
        port = reactor.listenTCP(0, self.milter, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        yield self.start_server(f"inet:127.0.0.1:{port.getHost().port}")

    @defer.inlineCallbacks
    def test_connect_reject_refuses_mail_not_ehlo(self) -> Any:
        """As Postfix: a milter's reject at connect is the reply to every MAIL; EHLO is answered."""
        yield self.serve({codec.Connect: [codec.ReplyCode("554 5.7.1 Not welcome")]})
        out = yield deferToThread(raw_session, self.server.ports["smtpd_listen"], [
            b"EHLO client.example\r\n", b"MAIL FROM:<a@remote.example>\r\n", b"QUIT\r\n"])  # fmt: skip
        self.assertIn(b"\r\n250 ", out)
        self.assertIn(b"554 5.7.1 Not welcome\r\n221 ", out)

    @defer.inlineCallbacks
    def test_shutdown_at_mail_closes_with_421(self) -> Any:
        yield self.serve({codec.Mail: [codec.Shutdown()]})
        out = yield deferToThread(raw_session, self.server.ports["smtpd_listen"], [
            b"EHLO client.example\r\n", b"MAIL FROM:<a@remote.example>\r\n", b"RCPT TO:<alice@example.com>\r\n"])
        self.assertTrue(out.endswith(b"421 4.7.0 Server closing connection\r\n"), out)
        self.assertEqual(self.server.messages_any("alice"), [])
