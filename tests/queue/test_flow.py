"""
Local submission to a remote host, every piece of this package together:
sendmail -> maildrop -> pickup -> spool -> queue manager -> relay -> remote.
The lead's pipeline sits between pickup and spool in the daemon; here the
inject callable enqueues directly.
"""

from __future__ import annotations

import io
import os
from types import SimpleNamespace

from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from mailserver.cli.sendmail import EX_OK, deliver, parse_arguments
from mailserver.queue.manager import QueueManager
from mailserver.queue.pickup import PickupService
from mailserver.queue.relay import Relay
from mailserver.queue.spool import Spool, SpoolDirectory
from tests.queue.remote import FakeResolver, ScriptedESMTPFactory, self_signed_tls_options


class LocalToRemoteTests(TestCase):
    async def test_sendmail_to_remote_host(self) -> None:
        data = os.path.abspath(self.mktemp())
        os.mkdir(data)
        config = SimpleNamespace(data_directory=data, myorigin="example.com", myhostname="mx.example.com")
        server = ScriptedESMTPFactory(tls_options=self_signed_tls_options())
        listening = reactor.listenTCP(0, server, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        self.addCleanup(lambda: server.wait_closed())

        # The daemon is down: sendmail still works.
        message = b"To: bob@example.org\nBcc: secret@example.org\nSubject: hello\n\n.hidden dot\nbye\n"
        status = deliver(
            parse_arguments(["-t", "-oi", "-F", "Alice"]), config, io.BytesIO(message), io.StringIO(),
            login=("alice", ""),
        )  # fmt: skip
        self.assertEqual(status, EX_OK)

        # The daemon starts.
        clock = Clock()
        spool = Spool(os.path.join(data, "queue"), reactor, clock=clock)
        resolver = FakeResolver(mx={"example.org": [(10, "mx.example.org")]}, a={"mx.example.org": ["127.0.0.1"]})
        relay = Relay(reactor, resolver, helo_name="mx.example.com", port=listening.getHost().port)
        bounces = []
        manager = QueueManager(
            spool, relay, clock, inject_bounce=lambda *a: bounces.append(a), myhostname="mx.example.com"
        )
        pickup = PickupService(
            os.path.join(data, "maildrop"), reactor, lambda s, r, m, x: spool.enqueue(s, r, m), clock=clock
        )
        manager.startService()
        self.addCleanup(manager.stopService)
        await manager.ready
        pickup.startService()
        self.addCleanup(pickup.stopService)
        await pickup.ready
        await manager.idle()

        [transaction] = server.delivered
        self.assertTrue(transaction.tls)
        self.assertTrue(transaction.mail_from.startswith(b"<alice@example.com>"))
        self.assertEqual(sorted(transaction.recipients), [b"bob@example.org", b"secret@example.org"])
        self.assertIn(b"\r\n.hidden dot\r\nbye\r\n", transaction.data)
        self.assertIn(b"From: Alice <alice@example.com>\r\n", transaction.data)
        self.assertNotIn(b"secret@", transaction.data)
        self.assertEqual(SpoolDirectory(os.path.join(data, "queue")).entries(), [])
        self.assertEqual(os.listdir(os.path.join(data, "maildrop")), ["corrupt"])
        self.assertEqual(bounces, [])
