"""
Outbound DKIM signing wired by service.py: mail submitted with SASL and
relayed to a (loopback) remote MX arrives signed, and the signatures verify
with dkimpy and our verifier against the loopback DNS server.
"""

from __future__ import annotations

import os
import smtplib

import dkim
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks, succeed
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from mailserver.envelope import Client
from mailserver.interfaces import IOutboundQueue
from mailserver.mailauth.dkim_keys import KeyStore
from mailserver.mailauth.dkim_sign import DKIMSigner, SigningQueue
from mailserver.mailauth.dkim_verify import DKIMVerifier
from mailserver.mailauth.dns import DNSLookup
from tests.dns import DNSTestServer
from tests.fakes import MemoryQueue
from tests.harness import RunningServer
from tests.mailauth.support import MESSAGE, key_records, keys
from tests.queue.remote import FakeResolver, ScriptedESMTPFactory


class SigningQueueTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.store = KeyStore(self.mktemp())
        self.store.save(keys()[1])
        self.queue = MemoryQueue()
        signer = DKIMSigner(self.store, "mail", ["example.com"], reactor)
        signer.sign = lambda message, sender="": succeed(signer.sign_blocking(message, sender))
        self.outbound = SigningQueue(self.queue, signer, lambda client: client.sasl_user is not None or client.trusted)

    def test_provides_the_queue_interface(self) -> None:
        verifyObject(IOutboundQueue, self.outbound)

    def test_trusted_signed_untrusted_not(self) -> None:
        self.successResultOf(self.outbound.enqueue("a@example.com", ["x@remote"], MESSAGE,
                                                   client=Client(ip="192.0.2.1", sasl_user="alice@example.com")))
        self.successResultOf(self.outbound.enqueue("a@example.com", ["x@remote"], MESSAGE,
                                                   client=Client(ip="192.0.2.1")))
        self.successResultOf(self.outbound.enqueue("", ["x@remote"], MESSAGE,
                                                   client=Client(ip="127.0.0.1", protocol="local", trusted=True)))
        self.successResultOf(self.outbound.enqueue("a@example.com", ["x@remote"], MESSAGE))
        signed = [message.startswith(b"DKIM-Signature:") for _s, _r, message in self.queue.queued]
        self.assertEqual(signed, [True, False, True, False])
        self.assertEqual(self.queue.queued[0][2].split(b"\n\t", 1)[0][:40], b"DKIM-Signature: v=1; a=ed25519-sha256; c")


class SubmissionSignedTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def setUp(self):
        self.rsa, self.ed = keys()
        self.dns = DNSTestServer({"example.com": key_records(self.rsa, self.ed)})
        yield self.dns.start(self)
        self.remote = ScriptedESMTPFactory()
        self.port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(self.remote)
        self.addCleanup(self.port.stopListening)
        resolver = FakeResolver(mx={"remote.example": [(10, "mx.remote.example")]},
                                a={"mx.remote.example": ["127.0.0.1"]})
        checks = os.path.abspath(self.mktemp())
        with open(checks, "w") as handle:
            handle.write("/^Subject: hold me/ HOLD held for review\n")
        self.server = RunningServer(self, listeners=("smtpd_listen", "submission_listen"), resolver=resolver,
                                    relay_port=self.port.getHost().port, extra=f"header_checks = regexp:{checks}\n")
        store = KeyStore(self.server.config.dkim_key_directory)
        store.save(self.rsa)
        store.save(self.ed)
        yield self.server.start()
        self.manager = self.server.service.server.queue_manager

    def send(self, listener: str, login: bool, message: bytes, to: str = "carol@remote.example"):
        def run():
            with smtplib.SMTP("127.0.0.1", self.server.ports[listener], timeout=30) as client:
                client.ehlo("client.example")
                if login:
                    client.login("alice@example.com", "secret")
                return client.sendmail("alice@example.com", [to], message)

        return deferToThread(run)

    @inlineCallbacks
    def delivered(self):
        yield self.manager.flush()
        yield self.remote.wait_closed()
        [transaction] = self.remote.delivered
        return transaction.data

    @inlineCallbacks
    def test_submitted_mail_arrives_signed_and_verifies(self):
        yield self.send("submission_listen", True, MESSAGE.replace(b"\n", b"\r\n"))
        data = yield self.delivered()
        self.assertTrue(data.startswith(b"DKIM-Signature: v=1; a=rsa-sha256;"), data[:200])
        self.assertEqual(data.count(b"DKIM-Signature:"), 2)
        results = yield DKIMVerifier(DNSLookup(self.dns.resolver), reactor).verify(data)
        self.assertEqual([(r.result, r.algorithm) for r in results.dkim],
                         [("pass", "rsa-sha256"), ("pass", "ed25519-sha256")])
        records = {k.dns_name.encode() + b".": k.txt_value.encode() for k in (self.rsa, self.ed)}
        for index in (0, 1):
            self.assertTrue(dkim.DKIM(data).verify(idx=index, dnsfunc=lambda name, timeout=5: records.get(name)))

    @inlineCallbacks
    def test_regression_released_submission_is_signed(self):
        """Mail released from the hold area was relayed unsigned: the hold record lacked the SASL user."""
        message = MESSAGE.replace(b"Subject: Hello  there", b"Subject: hold me").replace(b"\n", b"\r\n")
        yield self.send("submission_listen", True, message)
        area = self.server.service.server.hold_area
        [held] = area.list()
        self.assertEqual((held.envelope["sasl_user"], held.envelope["trusted"]), ("alice@example.com", True))
        area.mark_released(held.id)
        from mailserver.service import HoldReleaser

        yield next(s for s in self.server.service if isinstance(s, HoldReleaser)).run()
        data = yield self.delivered()
        self.assertEqual(data.count(b"DKIM-Signature:"), 2)
        results = yield DKIMVerifier(DNSLookup(self.dns.resolver), reactor).verify(data)
        self.assertEqual([r.result for r in results.dkim], ["pass", "pass"])

    @inlineCallbacks
    def test_released_outside_mail_stays_unsigned(self):
        message = MESSAGE.replace(b"Subject: Hello  there", b"Subject: hold me").replace(b"\n", b"\r\n")
        yield self.send("smtpd_listen", False, message, to="bob@example.com")
        area = self.server.service.server.hold_area
        [held] = area.list()
        self.assertEqual((held.envelope["sasl_user"], held.envelope["trusted"]), (None, False))
