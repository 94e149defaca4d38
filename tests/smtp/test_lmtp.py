"""LMTP (RFC 2033) sessions on StringTransport: LHLO, local recipients only, one reply per recipient."""

from __future__ import annotations

from twisted.internet.address import UNIXAddress
from twisted.internet.defer import fail, succeed
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase

from mailserver.delivery.pipeline import DeliveryAgent
from mailserver.errors import MailError
from mailserver.quota_rule import QuotaLimits, Usage
from mailserver.smtp.lmtp import LMTPFactory, LMTPPolicy
from tests.fakes import MemoryQuota, MemoryStore, build_core
from tests.smtp.test_server import Session

LOCAL = frozenset({"example.com", "mx.example.com", "localhost"})


class LMTPTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.store = MemoryStore()
        self.quota = MemoryQuota()
        self.core = build_core(self.clock, store=self.store, quota=self.quota)
        self.policy = LMTPPolicy(hostname="mx.example.com", banner="mx.example.com LMTP mailserver",
                                 local_domains=LOCAL)
        self.factory = LMTPFactory(DeliveryAgent(self.core, None), self.policy, self.clock)

    def session(self, ip: str = "127.0.0.1") -> Session:
        s = Session(self.factory, ip)
        self.assertEqual(s.replies(), ["220 mx.example.com LMTP mailserver"])
        return s

    def test_lhlo_lists_extensions_without_auth(self) -> None:
        replies = self.session().send(b"LHLO mta.example.com\r\n")
        self.assertEqual(replies[0], "250-mx.example.com")
        self.assertIn("250-PIPELINING", replies)
        self.assertIn("250-ENHANCEDSTATUSCODES", replies)
        self.assertFalse([r for r in replies if "AUTH" in r or "STARTTLS" in r], replies)

    def test_ehlo_and_helo_refused(self) -> None:
        s = self.session()
        self.assertEqual(s.send(b"EHLO mta.example.com\r\n"), ["500 5.5.1 Error: this is LMTP, send LHLO"])
        self.assertEqual(s.send(b"HELO mta.example.com\r\n"), ["500 5.5.1 Error: this is LMTP, send LHLO"])
        self.assertEqual(s.send(b"MAIL FROM:<a@b.example>\r\n"), ["503 5.5.1 Error: send HELO/EHLO first"])

    def test_auth_not_a_command(self) -> None:
        s = self.session()
        s.send(b"LHLO mta\r\n")
        self.assertEqual(s.send(b"AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n"), ["502 5.5.2 Error: command not recognized"])

    def test_one_reply_per_recipient_after_data(self) -> None:
        s = self.session()
        replies = s.send(
            b"LHLO mta\r\nMAIL FROM:<sender@remote.example>\r\n"
            b"RCPT TO:<alice@example.com>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n"
            b"Subject: hi\r\n\r\nbody\r\n.\r\n"
        )
        finals = replies[-2:]
        self.assertTrue(finals[0].startswith("250 2.0.0 Ok: queued as ") and finals[0].endswith("<alice@example.com>"), finals)
        self.assertTrue(finals[1].endswith("<bob@example.com>"), finals)
        self.assertEqual(len(self.store.delivered), 2)  # one delivery, two copies

    def test_unknown_and_remote_recipients_refused_at_rcpt(self) -> None:
        s = self.session()
        s.send(b"LHLO mta\r\nMAIL FROM:<s@remote.example>\r\n")
        self.assertTrue(s.send(b"RCPT TO:<nobody@example.com>\r\n")[0].startswith("550 5.1.1"))
        remote = s.send(b"RCPT TO:<someone@remote.example>\r\n")
        self.assertTrue(remote[0].startswith("550 5.1.2"), remote)
        self.assertEqual(s.send(b"RCPT TO:<alice@example.com>\r\n"), ["250 2.1.5 Ok"])
        replies = s.send(b"DATA\r\nSubject: x\r\n\r\nx\r\n.\r\n")
        self.assertEqual(len([r for r in replies if r.startswith("250 ")]), 1, replies)

    def test_data_without_recipients_is_503(self) -> None:
        s = self.session()
        s.send(b"LHLO mta\r\nMAIL FROM:<s@remote.example>\r\nRCPT TO:<nobody@example.com>\r\n")
        self.assertEqual(s.send(b"DATA\r\n"), ["503 5.5.1 Error: no valid recipients"])

    def test_recipient_over_quota_refused_at_rcpt(self) -> None:
        self.quota.limits["bob@example.com"] = QuotaLimits(storage=1000)
        self.quota.used["bob@example.com"] = Usage(1001, 3)
        s = self.session()
        s.send(b"LHLO mta\r\nMAIL FROM:<s@remote.example>\r\n")
        reply = s.send(b"RCPT TO:<bob@example.com>\r\n")
        self.assertEqual(reply, ["552 5.2.2 <bob@example.com>: Mailbox full, over quota"])

    def test_per_recipient_quota_at_end_of_data(self) -> None:
        """The message fits alice, not bob: 250 for alice, 552 5.2.2 for bob, alice gets it."""
        self.quota.limits["alice@example.com"] = QuotaLimits(storage=10**6)
        self.quota.limits["bob@example.com"] = QuotaLimits(storage=1000)
        self.quota.used["bob@example.com"] = Usage(990, 3)
        s = self.session()
        replies = s.send(
            b"LHLO mta\r\nMAIL FROM:<s@remote.example>\r\n"
            b"RCPT TO:<alice@example.com>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n"
            b"Subject: big\r\n\r\n" + b"x" * 100 + b"\r\n.\r\n"
        )
        self.assertTrue(replies[-2].startswith("250 2.0.0") and replies[-2].endswith("<alice@example.com>"), replies)
        self.assertEqual(replies[-1], "552 5.2.2 <bob@example.com>: Mailbox full, over quota")
        self.assertEqual([m for m, _ in self.store.delivered], ["/mail/example.com/alice"])
        # alice's warning level is checked from the usage read at end of data; bob got nothing.
        self.assertEqual([(user, before) for user, before, _ in self.quota.warned], [("alice@example.com", Usage())])

    def test_store_failure_reported_for_every_recipient(self) -> None:
        self.store.error = MailError(451, "4.3.0", "Error: mail store write error")
        s = self.session()
        replies = s.send(
            b"LHLO mta\r\nMAIL FROM:<s@remote.example>\r\n"
            b"RCPT TO:<alice@example.com>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\nx\r\n.\r\n"
        )
        self.assertEqual(replies[-2:], ["451 4.3.0 <alice@example.com> Error: mail store write error",
                                        "451 4.3.0 <bob@example.com> Error: mail store write error"])

    def test_pipelined_transactions_answered_in_order(self) -> None:
        s = self.session()
        replies = s.send(
            b"LHLO mta\r\n"
            b"MAIL FROM:<s@remote.example>\r\nRCPT TO:<alice@example.com>\r\nDATA\r\none\r\n.\r\n"
            b"MAIL FROM:<s@remote.example>\r\nRCPT TO:<bob@example.com>\r\nRCPT TO:<alice@example.com>\r\n"
            b"DATA\r\ntwo\r\n.\r\nQUIT\r\n"
        )
        codes = [r[:3] for r in replies if not r.startswith("250-")]
        self.assertEqual(codes, ["250", "250", "250", "354", "250", "250", "250", "250", "354", "250", "250", "221"])
        self.assertEqual(len(self.store.delivered), 3)

    def test_unix_socket_client_is_local(self) -> None:
        transport = StringTransport(peerAddress=UNIXAddress(None))
        protocol = self.factory.buildProtocol(None)
        protocol.makeConnection(transport)
        protocol.dataReceived(b"LHLO mta\r\nMAIL FROM:<>\r\nRCPT TO:<alice@example.com>\r\nDATA\r\nx\r\n.\r\n")
        self.assertIn(b"250 2.0.0 Ok: queued as", transport.value())
        self.assertIn(b"Received: from mta (unknown [127.0.0.1])", self.store.delivered[0][1])

    def test_unreadable_quota_is_451_for_every_recipient(self) -> None:
        class Broken(MemoryQuota):
            """RCPT answered from an earlier read; the end-of-data read fails."""

            def check(self, user, maildir, size):
                return succeed(None)

            def usage(self, user, maildir):
                return fail(PermissionError(13, "Permission denied", maildir))

        self.core.quota = Broken()
        for user in ("alice@example.com", "bob@example.com"):  # only limited mailboxes are read
            self.core.quota.limits[user] = QuotaLimits(storage=10**6)
        s = self.session()
        replies = s.send(
            b"LHLO mta\r\nMAIL FROM:<s@remote.example>\r\nRCPT TO:<alice@example.com>\r\n"
            b"RCPT TO:<bob@example.com>\r\nDATA\r\nx\r\n.\r\n"
        )
        self.assertEqual(replies[-2:], ["451 4.3.0 Error: quota lookup failed, try again later"] * 2)
        self.assertEqual(self.store.delivered, [])


class LMTPRefusalLogTests(LMTPTestCase):
    """LMTP refusals are logged with proto=LMTP; a unix-socket client as Postfix logs a local one."""

    def setUp(self) -> None:
        super().setUp()
        from twisted.logger import globalLogPublisher

        self.events: list[dict] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def lines(self) -> list[str]:
        return [e["reject_line"] for e in self.events if "reject_line" in e]

    def test_regression_lmtp_unix_refusal_logged_as_lmtp_from_localhost(self) -> None:
        """Was C{unknown[127.0.0.1] ... proto=ESMTP}: Postfix logs a unix-socket client as localhost[127.0.0.1]."""
        transport = StringTransport(peerAddress=UNIXAddress(None))
        protocol = self.factory.buildProtocol(None)
        protocol.makeConnection(transport)
        protocol.dataReceived(b"LHLO mta\r\nMAIL FROM:<s@remote.example>\r\nRCPT TO:<nobody@example.com>\r\n")
        [line] = self.lines()
        self.assertTrue(line.startswith("NOQUEUE: reject: RCPT from localhost[127.0.0.1]: 550 5.1.1 "), line)
        self.assertTrue(line.endswith("; from=<s@remote.example> to=<nobody@example.com> proto=LMTP helo=<mta>"), line)

    def test_regression_lmtp_tcp_refusal_logged_as_lmtp(self) -> None:
        """Was proto=ESMTP; and a non-local recipient (550 5.1.2) was not logged at all."""
        s = self.session("192.0.2.7")
        s.send(b"LHLO mta\r\nMAIL FROM:<s@remote.example>\r\nRCPT TO:<x@remote.example>\r\n")
        [line] = self.lines()
        self.assertTrue(line.startswith("NOQUEUE: reject: RCPT from unknown[192.0.2.7]: 550 5.1.2 "), line)
        self.assertTrue(line.endswith(" proto=LMTP helo=<mta>"), line)
