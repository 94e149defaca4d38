"""
Per-message work skipped when it cannot matter (issue 15): quota reads for
unlimited mailboxes, inbound mail authentication for trusted clients, the
Deferred machinery of MAIL and RCPT commands that never wait.
"""

from __future__ import annotations

import ipaddress

from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from mailserver import quota_rule
from mailserver.address import parse_mailbox
from mailserver.delivery import quota_gate
from mailserver.delivery.filters import FilterResult, content_work, skips
from mailserver.delivery.pipeline import DeliveryPipeline
from mailserver.delivery import trusted_origin as module
from mailserver.delivery.trusted_origin import TrustedOrigin
from mailserver.envelope import Client, LocalMailbox, Recipient
from mailserver.quota_rule import LimitsByRecord, QuotaLimits, Usage
from mailserver.smtp import coroutines
from mailserver.smtp.factory import SMTPFactory
from mailserver.smtp.server import SMTPPolicy
from mailserver.tables.passwd import UserRecord
from tests.fakes import MemoryQuota, MemoryStore, anonymous_portal, build_core
from tests.harness import RunningServer, write_users
from tests.smtp.test_server import Session

MESSAGE = b"MAIL FROM:<s@remote.example>\r\nRCPT TO:<alice@example.com>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\nx\r\n.\r\n"


def calls(testcase: SynchronousTestCase, where: object, name: str) -> list[tuple]:
    """Patch C{where.name} to record the arguments of each call (and still do its work); the record."""
    real, seen = getattr(where, name), []

    def recording(*args: object) -> object:
        seen.append(args)
        return real(*args)

    testcase.patch(where, name, recording)
    return seen


class AskedQuota(MemoryQuota):
    """Records the mailboxes whose usage was asked (its check asks it too), and whose limits."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[str] = []
        self.limits_asked: list[str] = []

    def usage(self, user, maildir):
        self.asked.append(user)
        return super().usage(user, maildir)

    def limits_of(self, user):
        self.limits_asked.append(user)
        return super().limits_of(user)


class Filter:
    """An end-of-DATA filter and MAIL FROM check for untrusted clients only, counting its calls."""

    name = "counting"
    untrusted_only = True

    def __init__(self) -> None:
        self.calls = 0

    @staticmethod
    def is_trusted(client: Client) -> bool:
        return client.ip.startswith("10.")

    def filter(self, envelope, message):
        self.calls += 1
        return succeed(FilterResult(message))

    async def check(self, envelope) -> None:
        self.calls += 1


class FastPathTests(SynchronousTestCase):
    def setUp(self) -> None:
        clock = MemoryReactorClock()
        self.store = MemoryStore()
        self.quota = AskedQuota()
        self.filter = Filter()
        self.core = build_core(clock, store=self.store, quota=self.quota, filters=[self.filter],
                               sender_checks=[self.filter])
        self.factory = SMTPFactory(anonymous_portal(self.core), SMTPPolicy(hostname="mx.example.com", banner="mx ESMTP"), clock)

    def session(self, ip: str = "192.0.2.1") -> Session:
        session = Session(self.factory, ip)
        session.send(b"EHLO c.example\r\n")
        return session

    def test_regression_unlimited_mailboxes_cost_no_quota_read(self) -> None:
        """Only limited mailboxes are asked about, at RCPT and at end of DATA; the outcome is unchanged."""
        replies = self.session().send(MESSAGE)
        self.assertTrue(replies[-1].startswith("250 2.0.0 Ok: queued as"), replies)
        self.assertEqual(self.quota.asked, [])
        self.quota.limits["bob@example.com"] = QuotaLimits(storage=1000)
        replies = self.session().send(MESSAGE)
        self.assertTrue(replies[-1].startswith("250 2.0.0 Ok: queued as"), replies)
        self.assertEqual(self.quota.asked, ["bob@example.com", "bob@example.com"])  # RCPT check, DATA read
        self.quota.used["bob@example.com"] = Usage(1000, 1)
        self.assertEqual(self.session().send(MESSAGE)[2], "552 5.2.2 <bob@example.com>: Mailbox full, over quota")

    def test_regression_limits_looked_up_once_per_recipient(self) -> None:
        """Issue 15: limits were looked up at RCPT and again at end of DATA; now at RCPT only."""
        replies = self.session().send(MESSAGE)
        self.assertTrue(replies[-1].startswith("250 2.0.0 Ok: queued as"), replies)
        self.assertEqual(self.quota.limits_asked, ["alice@example.com", "bob@example.com"])

    def test_limits_of_the_rcpt_kept_to_the_end_of_data(self) -> None:
        """
        A limit that appears between RCPT and the end of DATA (a passwd-file
        reload) applies from the next message on; one that was there at RCPT
        is checked at the end of DATA as before.
        """
        session = self.session()
        envelope = MESSAGE[: MESSAGE.index(b"DATA")]
        self.assertEqual(session.send(envelope), ["250 2.1.0 Ok", "250 2.1.5 Ok", "250 2.1.5 Ok"])
        self.quota.limits["bob@example.com"] = QuotaLimits(storage=1000)
        self.quota.used["bob@example.com"] = Usage(1000, 1)
        self.assertTrue(session.send(b"DATA\r\nx\r\n.\r\n")[-1].startswith("250 2.0.0 Ok: queued as"))
        self.assertEqual(len(self.store.delivered), 2)
        self.assertEqual(session.send(MESSAGE)[2], "552 5.2.2 <bob@example.com>: Mailbox full, over quota")
        self.assertEqual(len(self.store.delivered), 3)  # to alice alone
        self.assertEqual(session.send(b"RSET\r\n" + envelope), ["250 2.0.0 Ok", "250 2.1.0 Ok", "250 2.1.5 Ok",
                                                                 "552 5.2.2 <bob@example.com>: Mailbox full, over quota"])
        self.quota.used["bob@example.com"] = Usage(0, 0)
        self.assertEqual(session.send(b"RSET\r\n" + envelope)[-1], "250 2.1.5 Ok")
        self.quota.used["bob@example.com"] = Usage(1000, 1)  # full again before DATA: refused there
        self.assertTrue(session.send(b"DATA\r\nx\r\n.\r\n")[-1].startswith("452 4.2.2"))
        self.assertEqual(len(self.store.delivered), 3)

    def test_limited_trusts_the_rcpt_answer_and_looks_up_the_rest(self) -> None:
        """C{limited} goes by L{Recipient.quota_limited} when a RCPT set it, else by the limits now."""
        self.quota.limits["bob@example.com"] = QuotaLimits(storage=1000)
        bob = LocalMailbox("bob@example.com", "/mail/bob")
        made = Recipient(parse_mailbox("bob@example.com"), (bob,))  # a REDIRECT's: never looked up
        self.assertIsNone(made.quota_limited)
        self.assertTrue(quota_gate.limited(self.quota, [made]))
        pipeline = DeliveryPipeline(self.core)
        envelope = pipeline.begin(Client(ip="192.0.2.1"), None)
        for address, limited in (("bob@example.com", True), ("alice@example.com", False)):
            routed = Deferred.fromCoroutine(pipeline.check_recipient(envelope, parse_mailbox(address)))
            self.assertIs(self.successResultOf(routed).quota_limited, limited)
        carried = envelope.recipients[0]
        self.assertEqual(carried, Recipient(parse_mailbox("bob@example.com"), carried.destinations))
        self.assertIsNone(quota_gate.checker(None))
        self.quota.limits.clear()
        self.assertTrue(quota_gate.limited(self.quota, [carried]))  # the RCPT's answer
        self.assertFalse(quota_gate.limited(self.quota, [made]))
        self.assertFalse(quota_gate.limited(None, [carried]))

    def test_regression_one_client_per_session_state(self) -> None:
        """
        Issue 15: a L{Client} was made for every MAIL; now one per HELO name,
        TLS and SASL state, so the pipeline's per-client answers hold for the
        session's messages.
        """
        session = self.session()
        protocol = session.protocol
        first = protocol._client()
        self.assertIs(protocol._client(), first)
        self.assertEqual(first, Client(ip="192.0.2.1", helo="c.example", protocol="ESMTP"))
        session.send(b"EHLO other.example\r\n")
        second = protocol._client()
        self.assertEqual(second, Client(ip="192.0.2.1", helo="other.example", protocol="ESMTP"))
        protocol.sasl_user = "alice@example.com"
        self.assertEqual(protocol._client(), Client(ip="192.0.2.1", helo="other.example", sasl_user="alice@example.com",
                                                    protocol="ESMTPA"))
        protocol.startedTLS = True
        self.assertEqual(protocol._client().protocol, "ESMTPSA")

    def test_end_of_data_reply_that_fails_is_an_internal_error(self) -> None:
        """The end of DATA's reply step raising (here: a commit firing with no text) still answers 451, logged."""
        from mailserver.delivery.transaction import Transaction

        self.patch(Transaction, "commit", lambda transaction: succeed(42))
        session = self.session()
        replies = session.send(MESSAGE)
        self.assertEqual(replies[-1], "451 4.3.0 Error: internal error, try again later")
        self.assertEqual(len(self.flushLoggedErrors(AttributeError)), 1)
        self.assertEqual(session.send(b"NOOP\r\n"), ["250 2.0.0 Ok"])  # the session goes on

    def test_command_methods_as_before(self) -> None:
        """lookupMethod's remembered names give the methods the former lookup gave, for every spelling."""
        from mailserver.smtp import server as server_module

        self.patch(server_module, "_METHOD_NAMES", {})
        protocol = self.session().protocol

        def former(command: bytes):
            name = command.decode("ascii").upper()
            if name in ("AUTH", "STARTTLS"):
                return getattr(protocol, "ext_" + name, None)
            return getattr(protocol, "do_" + name, None)

        verbs = [b"MAIL", b"mail", b"Rcpt", b"DATA", b"AUTH", b"auth", b"STARTTLS", b"StartTLS", b"NOOP", b"XYZZY",
                 b"ext", b"EHLO", b"QUIT"]
        for _ in range(2):  # looked up, then remembered
            for verb in verbs:
                self.assertEqual(protocol.lookupMethod(verb), former(verb), verb)

    def test_content_idle_remembered_per_client(self) -> None:
        """The pipeline asks the filters about a L{Client} once, and again for another one."""
        asked = calls(self, self.filter, "is_trusted")
        pipeline = DeliveryPipeline(self.core)
        trusted, outside = Client(ip="10.0.0.1"), Client(ip="192.0.2.1")
        for client in (trusted, trusted, outside, outside, trusted):
            envelope = pipeline.begin(client, parse_mailbox("s@remote.example"))
            self.assertEqual(pipeline.open_transaction(envelope)._content_idle, client is trusted)
        self.assertEqual([a[0] for a in asked], [trusted, outside, trusted])
        self.assertEqual(content_work([], [self.filter], trusted), (True, None))
        self.assertEqual(content_work([object()], [self.filter], trusted), (False, None))  # a content check

    def test_quick_filter_chosen_by_its_interface(self) -> None:
        """
        Only a filter that declares L{IImmediateFilter} is committed in
        callback style; one that merely has a C{filter_now} attribute goes
        the general way.
        """
        from zope.interface import alsoProvides
        from zope.interface.verify import verifyObject

        from mailserver.delivery.authentication import InboundAuthentication
        from mailserver.interfaces import IImmediateFilter

        outside = Client(ip="192.0.2.1")
        self.filter.filter_now = lambda envelope, message: FilterResult(message)
        self.assertEqual(content_work([], [self.filter], outside), (False, None))
        alsoProvides(self.filter, IImmediateFilter)
        self.assertEqual(content_work([], [self.filter], outside), (False, self.filter))
        self.assertEqual(content_work([], [self.filter, Filter()], outside), (False, None))  # two with work
        self.assertTrue(verifyObject(IImmediateFilter, InboundAuthentication(None, lambda client: False, None)))

    def test_regression_untrusted_only_steps_skipped_for_trusted_clients(self) -> None:
        """A step marked C{untrusted_only} is not called for a client its C{is_trusted} vouches for."""
        self.session("10.0.0.1").send(MESSAGE)
        self.assertEqual(self.filter.calls, 0)
        self.session("192.0.2.1").send(MESSAGE)
        self.assertEqual(self.filter.calls, 2)  # MAIL FROM check and end-of-DATA filter
        self.assertEqual(len(self.store.delivered), 4)  # two messages, two copies each

    def test_skips(self) -> None:
        trusted, outside = Client(ip="10.1.1.1"), Client(ip="192.0.2.1")
        self.assertTrue(skips(self.filter, trusted))
        self.assertFalse(skips(self.filter, outside))
        self.assertFalse(skips(object(), trusted))  # no declaration: always run

    def test_regression_mail_and_rcpt_make_no_deferred_when_nothing_waits(self) -> None:
        """MAIL and RCPT answered by in-memory stages run their coroutines to the end at once."""
        resumed = calls(self, coroutines, "_resume")
        session = self.session()
        replies = session.send(b"MAIL FROM:<s@remote.example>\r\nRCPT TO:<alice@example.com>\r\n"
                               b"RCPT TO:<nobody@example.com>\r\n")
        self.assertEqual(replies[:2], ["250 2.1.0 Ok", "250 2.1.5 Ok"])
        self.assertTrue(replies[2].startswith("550 5.1.1"), replies)
        self.assertEqual(resumed, [])


class TrustedOriginTests(SynchronousTestCase):
    def test_answers_remembered_per_address(self) -> None:
        origin = TrustedOrigin((ipaddress.ip_network("10.0.0.0/8"),))
        asked: list[str] = []

        def in_networks(ip, networks):
            asked.append(ip)
            return ip.startswith("10.")

        self.patch(module, "in_networks", in_networks)
        answers = [origin(Client(ip=ip)) for ip in ("10.0.0.1", "10.0.0.1", "192.0.2.1", "192.0.2.1")]
        self.assertEqual(answers, [True, True, False, False])
        self.assertEqual(asked, ["10.0.0.1", "192.0.2.1"])
        self.assertTrue(origin(Client(ip="192.0.2.1", sasl_user="alice")))
        self.assertTrue(origin(Client(ip="192.0.2.1", trusted=True)))


class LimitsByRecordTests(SynchronousTestCase):
    def test_parsed_once_per_record_and_a_new_record_is_noticed(self) -> None:
        parsed = calls(self, quota_rule, "user_limits")
        limits = LimitsByRecord(QuotaLimits(storage=100))
        old = UserRecord("bob@example.com", "PLAIN", "x", extra={"userdb_quota_rule": "*:storage=1k"})
        self.assertEqual([limits("bob@example.com", old) for _ in range(3)], [QuotaLimits(storage=1024)] * 3)
        self.assertEqual(len(parsed), 1)
        new = UserRecord("bob@example.com", "PLAIN", "x", extra={"userdb_quota_rule": "*:messages=5"})
        self.assertEqual(limits("bob@example.com", new), QuotaLimits(messages=5))  # the reloaded file's record
        self.assertEqual(limits("nobody@example.com", None), QuotaLimits(storage=100))
        bad = UserRecord("carol@example.com", "PLAIN", "x", extra={"userdb_quota_rule": "lots"})
        self.assertRaises(ValueError, limits, "carol@example.com", bad)


class ReloadedLimitsTests(TestCase):
    @inlineCallbacks
    def test_regression_changed_quota_rule_noticed_at_passwd_reload(self):
        """Limits parsed once per passwd record still change when the passwd-file is edited and reloaded."""
        server = RunningServer(self, user_extra={"bob@example.com": "userdb_quota_rule=*:storage=1M"})
        parts = server.service.server
        self.assertEqual(parts.quota_limits("bob@example.com"), QuotaLimits(storage=1 << 20))
        self.assertEqual(parts.quota_limits("bob@example.com"), QuotaLimits(storage=1 << 20))
        write_users(server.directory, {"alice@example.com": "secret", "bob@example.com": "hunter2"},
                    {"bob@example.com": "userdb_quota_rule=*:messages=7"})
        swapped = yield parts.users.reload(force=True)
        self.assertTrue(swapped)
        self.assertEqual(parts.quota_limits("bob@example.com"), QuotaLimits(messages=7))
        self.assertEqual(parts.quota_limits("alice@example.com"), parts.config.quota_rule)


class QueueIdTests(SynchronousTestCase):
    def test_same_text_as_before(self) -> None:
        """new_queue_id's %-format gives the text of the former f-string (hex microseconds, counter)."""
        import itertools

        from mailserver.delivery import pipeline

        for now, start in ((0.0, 0), (1_764_950_000.123456, 4095), (1_099_511.627776, 4096), (2e9 + 0.5, 123)):
            self.patch(pipeline, "_queue_counter", itertools.count(start))
            former = f"{int(now * 1_000_000) & 0xFFFFFFFFFF:010X}{start & 0xFFF:03X}"
            self.assertEqual(pipeline.new_queue_id(now), former)
