"""
The milter client against OpenDKIM, a libmilter milter (the protocol's
reference implementation): the signature it inserts, applied by our
actions, verifies.  Skipped where OpenDKIM is not installed.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from mailserver.milter import codec
from mailserver.milter.actions import apply
from mailserver.milter.client import ACCEPT, CONTINUE, MilterSession, check_message, endpoint_connector
from mailserver.milter.settings import MilterSettings, parse_address
from tests.milter import opendkim

MACROS = {"j": "mx.example.com", "{daemon_name}": "mx.example.com", "i": "4AB12C0002"}
MESSAGE = (
    b"Received: from localhost ([127.0.0.1]) by mx.example.com (mailserver) with ESMTP\n"
    b"\tid 4AB12C0002; Fri, 4 Dec 2026 16:00:00 +0000\n"
    b"From: Alice <alice@example.com>\nTo: bob@example.org\nSubject: Signed\n"
    b"Message-ID: <4AB12C0002@example.com>\nDate: Fri, 4 Dec 2026 16:00:00 +0000\n\n"
    b"Hello Bob,\n\nthis message is signed by OpenDKIM through the milter.\n"
)


class OpenDKIMTests(TestCase):
    timeout = 120

    def setUp(self) -> Any:
        if opendkim.OPENDKIM is None or opendkim.GENKEY is None:
            raise self.skipTest("OpenDKIM is not installed (apt-get install opendkim opendkim-tools)")
        if importlib.util.find_spec("dkim") is None:
            raise self.skipTest("dkimpy is not installed")
        d = opendkim.shared(reactor)
        d.addCallback(lambda server: setattr(self, "server", server))
        return d

    @defer.inlineCallbacks
    def test_signature_inserted_and_valid(self) -> Any:
        """OpenDKIM's DKIM-Signature (SMFIR_INSHEADER at 0) goes on top and verifies."""
        import dkim

        spec = parse_address(self.server.address)
        settings = MilterSettings(spec, macros={b"C": ("j", "{daemon_name}"), b"M": ("i",), b"E": ("i",)})
        session = MilterSession(settings, reactor, endpoint_connector(spec, reactor))
        self.addCleanup(session.quit)
        for stage in (
            lambda: session.connect(MACROS, "localhost", codec.FAMILY_INET, 40001, "127.0.0.1"),
            lambda: session.helo("localhost"),
            lambda: session.mail_from(["<alice@example.com>"], MACROS),
            lambda: session.rcpt(["<bob@example.org>"], MACROS),
            lambda: session.data(MACROS),
        ):
            verdict = yield stage()
            self.assertEqual(verdict.action, CONTINUE, session.failed)
        verdict = yield defer.Deferred.fromCoroutine(check_message(session, MESSAGE, MACROS))
        self.assertEqual(verdict.action, ACCEPT, session.failed)
        self.assertEqual([type(m) for m in verdict.modifications], [codec.InsertHeader])
        self.assertEqual(verdict.modifications[0].index, 0)
        signed = apply(MESSAGE, "alice@example.com", ["bob@example.org"], verdict.modifications).message
        self.assertTrue(signed.startswith(b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.com;"))
        public_key = self.server.public_key.encode()
        self.assertTrue(dkim.verify(signed, dnsfunc=lambda name, timeout=5: public_key))
        self.assertFalse(dkim.verify(signed.replace(b"signed by", b"forged by"),
                                     dnsfunc=lambda name, timeout=5: public_key))  # fmt: skip
