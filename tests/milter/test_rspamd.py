"""
The milter client against a real rspamd (proxy worker in milter mode,
started by L{tests.milter.rspamd}).  Skipped where rspamd is not installed.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet import defer, reactor, threads
from twisted.trial.unittest import TestCase

from mailserver.milter import codec
from mailserver.milter.actions import apply, outcome, spam_folder
from mailserver.milter.client import ACCEPT, CONTINUE, REJECT, MilterSession, Verdict, check_message, endpoint_connector
from mailserver.milter.settings import MilterSettings, parse_address
from mailserver.store.folders import Folders, ensure_maildir
from mailserver.store.maildir import MaildirStore
from tests.milter import rspamd

MACROS = {
    "j": "mx.example.com", "{daemon_name}": "mx.example.com", "v": "mailserver",
    "i": "4AB12C0001", "{mail_addr}": "alice@example.com", "{rcpt_addr}": "bob@example.org",
}  # fmt: skip


def message(body: str, subject: str = "Lunch") -> bytes:
    return (
        "Received: from client.example.com ([192.0.2.10]) by mx.example.com"
        " (mailserver) with ESMTP id 4AB12C0001 for <bob@example.org>;"
        " Fri, 4 Dec 2026 16:00:00 +0000\n"
        "From: Alice <alice@example.com>\nTo: Bob <bob@example.org>\n"
        f"Subject: {subject}\nMessage-ID: <4AB12C0001@example.com>\n"
        "Date: Fri, 4 Dec 2026 16:00:00 +0000\nMIME-Version: 1.0\n"
        "Content-Type: text/plain; charset=us-ascii\n\n" + body
    ).encode()


class RspamdTests(TestCase):
    timeout = 120

    def setUp(self) -> Any:
        if rspamd.RSPAMD is None:
            raise self.skipTest("rspamd is not installed (apt-get install rspamd)")
        d = rspamd.shared(reactor)
        d.addCallback(lambda server: setattr(self, "server", server))
        return d

    async def _scan(self, msg: bytes) -> tuple[MilterSession, Verdict]:
        spec = parse_address(self.server.address)
        settings = MilterSettings(spec, macros={b"C": ("j", "{daemon_name}", "v"), b"M": ("i", "{mail_addr}"),
                                               b"R": ("{rcpt_addr}",), b"E": ("i",)})  # fmt: skip
        session = MilterSession(settings, reactor, endpoint_connector(spec, reactor))
        self.addCleanup(session.quit)
        for d in (
            session.connect(MACROS, "client.example.com", codec.FAMILY_INET, 40000, "192.0.2.10"),
            session.helo("client.example.com"),
            session.mail_from(["<alice@example.com>"], MACROS),
            session.rcpt(["<bob@example.org>"], MACROS),
            session.data(MACROS),
        ):
            verdict = await d
            self.assertEqual(verdict.action, CONTINUE, session.failed)
        return session, await check_message(session, msg, MACROS)

    @defer.inlineCallbacks
    def test_gtube_rejected_with_rspamds_text(self) -> Any:
        """GTUBE: a reject verdict carrying rspamd's own reply text."""
        _, verdict = yield defer.Deferred.fromCoroutine(self._scan(message(rspamd.GTUBE + "\n")))
        self.assertEqual(verdict.action, REJECT)
        self.assertEqual(verdict.error.code, 554)
        self.assertEqual(verdict.error.enhanced, "5.7.1")
        self.assertIn("Gtube pattern", verdict.error.text)
        self.assertFalse(verdict.default)

    @defer.inlineCallbacks
    def test_clean_message_gets_headers(self) -> Any:
        """A clean message is accepted; rspamd's headers are added through the actions."""
        msg = message("Shall we have lunch at noon tomorrow?\n")
        session, verdict = yield defer.Deferred.fromCoroutine(self._scan(msg))
        self.assertIn(verdict.action, (ACCEPT, CONTINUE))
        self.assertFalse(verdict.default)
        result = apply(msg, "alice@example.com", ["bob@example.org"], verdict.modifications)
        head = result.message.split(b"\n\n", 1)[0].decode()
        self.assertIn("\nX-Spamd-Result: default: False [", head)
        self.assertIn("\nX-Rspamd-Queue-Id: 4AB12C0001", head)
        # Authentication-Results lands right after our Received header (rspamd inserts at 1).
        self.assertRegex(head, r"^Received: [^\n]*\nAuthentication-Results: ")
        self.assertNotIn("X-Spam: Yes", head)
        self.assertIsNone(spam_folder(verdict.modifications, "Junk"))
        self.assertTrue(result.message.endswith(b"\n\nShall we have lunch at noon tomorrow?\n"))

    @defer.inlineCallbacks
    def test_add_header_verdict_files_into_junk(self) -> Any:
        """rspamd's "add header" action -> X-Spam: Yes -> the message is delivered into Junk."""
        msg = message(f"Cheap offer {rspamd.ADD_HEADER_MARK}\n", subject="Offer")
        _, verdict = yield defer.Deferred.fromCoroutine(self._scan(msg))
        self.assertIn(verdict.action, (ACCEPT, CONTINUE))
        result = outcome(verdict, msg, "alice@example.com", ["bob@example.org"], "Junk")
        self.assertEqual((result.error, result.discard, result.hold, result.folder), (None, False, None, "Junk"))
        folder = result.folder
        result = result.applied
        self.assertIn(b"\nX-Spam: Yes\n", result.message)
        self.assertIn(b"MAILSERVER_TEST_SPAMMY(8.00)", result.message)
        # Delivery into the user's spam folder through the real store.
        maildir = os.path.join(self.mktemp(), "Maildir")
        path = Folders(maildir).path(folder)
        yield threads.deferToThread(lambda: (ensure_maildir(maildir), ensure_maildir(path)))
        store = MaildirStore(reactor, "mx.example.com")
        names = yield store.deliver(result.message, [(path, b"")])
        self.assertEqual(len(names), 1)
        self.assertEqual(len(os.listdir(os.path.join(path, "new"))), 1)
        self.assertEqual(os.listdir(os.path.join(maildir, "new")), [])

    @defer.inlineCallbacks
    def test_many_messages_one_connection(self) -> Any:
        """Several messages over one milter connection (abort between them), each scanned."""
        spec = parse_address(self.server.address)
        session = MilterSession(MilterSettings(spec), reactor, endpoint_connector(spec, reactor))
        self.addCleanup(session.quit)
        verdict = yield session.connect(MACROS, "client.example.com", codec.FAMILY_INET, 1, "192.0.2.10")
        self.assertEqual(verdict.action, CONTINUE)
        actions = []
        for body in ("hello\n", rspamd.GTUBE + "\n", "hello again\n"):
            yield session.mail_from(["<alice@example.com>"], MACROS)
            yield session.rcpt(["<bob@example.org>"], MACROS)
            verdict = yield defer.Deferred.fromCoroutine(check_message(session, message(body), MACROS))
            actions.append(verdict.action)
            session.abort()
        self.assertEqual([a == REJECT for a in actions], [False, True, False])
        self.assertIsNone(session.failed)
