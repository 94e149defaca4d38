"""
The pregreet wrapper around the project's own SMTP listener, over loopback
(the wiring itself comes with the SMTP rewrite; here the test swaps the
listener's factory).
"""

from __future__ import annotations

import smtplib
import socket

from twisted.internet import reactor
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from mailserver.policy.pregreet import PregreetFactory
from tests.harness import RunningServer


class PregreetSessionTests(TestCase):
    timeout = 60

    def start(self, wait: float, action: str) -> object:
        self.server = RunningServer(self)
        [listener] = [s for s in self.server.service if (s.name or "").startswith("smtpd_listen ")]
        listener.factory = PregreetFactory(listener.factory, reactor, "mx.example.com ESMTP", wait, action)
        return self.server.start()

    def test_regression_patient_client_delivers_with_starttls(self):
        """
        A client that waits for the whole greeting (220- then 220) delivers,
        and STARTTLS is still offered (the wrapper used to hide the
        transport's ITLSTransport from the SMTP session).
        """

        def send():
            with smtplib.SMTP("127.0.0.1", self.server.ports["smtpd_listen"], timeout=30) as client:
                code, _ = client.ehlo("client.example")
                features = dict(client.esmtp_features)
                refused = client.sendmail("sender@remote.example", ["alice@example.com"],
                                          b"Subject: hi\r\n\r\nhello\r\n")  # fmt: skip
                return code, features, refused

        def check(result):
            code, features, refused = result
            self.assertEqual((code, refused), (250, {}))
            self.assertIn("starttls", features)
            [message] = self.server.messages("alice")
            self.assertTrue(message.endswith(b"\n\nhello\n"))

        d = self.start(0.05, "drop")
        return d.addCallback(lambda _: deferToThread(send)).addCallback(check)

    def test_talker_dropped(self):
        """A client that talks at once gets 521 and the connection closes; nothing is delivered."""

        def talk():
            with socket.create_connection(("127.0.0.1", self.server.ports["smtpd_listen"]), timeout=30) as sock:
                sock.sendall(b"EHLO bot\r\nMAIL FROM:<a@b.example>\r\n")
                received = b""
                while True:  # bounded: the server closes the connection
                    chunk = sock.recv(4096)
                    if not chunk:
                        return received
                    received += chunk

        def check(received):
            self.assertEqual(received, b"220-mx.example.com ESMTP\r\n521 5.5.1 Protocol error\r\n")
            self.assertEqual(self.server.messages_any("alice"), [])

        d = self.start(30, "drop")
        return d.addCallback(lambda _: deferToThread(talk)).addCallback(check)
