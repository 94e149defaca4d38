"""
What one accepted message costs the reactor thread at end of DATA: thread
trips, Sieve and the store sharing one (issue 15, SMTP CPU per message).
"""

from __future__ import annotations

import ipaddress
import os

from twisted.trial.unittest import SynchronousTestCase

from mailserver.address import parse_mailbox
from mailserver.delivery import quota_gate, relay_policy
from mailserver.envelope import Client, Envelope, LocalMailbox, Recipient
from mailserver.delivery.sieve_filter import SieveFilter
from mailserver.delivery.transaction import Committer, Transaction
from mailserver.quota_rule import QuotaLimits
from mailserver.sieve.scripts import ACTIVE_LINK
from mailserver.store.maildir import MaildirStore
from tests.fakes import MemoryQueue, MemoryQuota, build_core
from tests.reactors import ThreadedClock

MESSAGE = b"Subject: hi\nFrom: <a@example.org>\n\nbody\n"


class SieveInStoreTripTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = ThreadedClock()
        self.base = os.path.abspath(self.mktemp())
        os.makedirs(self.base)
        self.notified: list[list[str]] = []
        self.store = MaildirStore(self.reactor, "mx.example.com", on_delivered=self.notified.append)
        self.queue = MemoryQueue()
        self.core = build_core(self.reactor)
        self.core.committer = Committer(store=self.store, queue=self.queue, sieve=SieveFilter(self.store))

    def _commit(self, *users: str) -> str:
        recipients = [
            Recipient(parse_mailbox(f"{user}@example.com"), (LocalMailbox(
                f"{user}@example.com", os.path.join(self.base, user, "Maildir"), os.path.join(self.base, user),
            ),))
            for user in users
        ]
        envelope = Envelope(Client(ip="192.0.2.1", helo="c.example"), parse_mailbox("a@example.org"), recipients,
                            queue_id="Q1")
        transaction = Transaction(self.core, envelope)
        transaction.write(MESSAGE)
        return self.successResultOf(transaction.commit())

    def _new(self, user: str) -> list[str]:
        return os.listdir(os.path.join(self.base, user, "Maildir", "new"))

    def test_regression_sieve_and_store_share_one_thread_trip(self) -> None:
        """
        With Sieve configured, a message to two local users costs one
        thread-pool call: Sieve runs in the store's writer thread just before
        the copies are written (it was one call per mailbox plus the store's).
        """
        self.assertEqual(self._commit("alice", "bob"), "2.0.0 Ok: queued as Q1")
        self.assertEqual(len(self.reactor.pool.calls), 1)
        self.assertEqual((len(self._new("alice")), len(self._new("bob"))), (1, 1))
        self.assertEqual(len(self.notified), 1)

    def test_sieve_script_still_decides_the_copies(self) -> None:
        """A user's script (discard, redirect) is applied from the store's thread: nothing stored, one queued."""
        home = os.path.join(self.base, "alice")
        os.makedirs(home)
        with open(os.path.join(home, ACTIVE_LINK), "w") as handle:
            handle.write('require "fileinto";\nredirect "carol@example.net";\ndiscard;\n')
        self._commit("alice")
        self.assertEqual(len(self.reactor.pool.calls), 1)
        self.assertFalse(os.path.exists(os.path.join(home, "Maildir", "new")) and self._new("alice"))
        self.assertEqual([(q[0], q[1]) for q in self.queue.queued], [("a@example.org", ["carol@example.net"])])
        self.assertEqual(self.notified, [])

    def test_regression_no_quota_warning_step_without_limits(self) -> None:
        """Mailboxes without a quota limit cost no quota-warning coroutine after the delivery."""
        called: list[object] = []

        async def warn(*args: object) -> None:
            called.append(args)

        self.patch(quota_gate, "warn", warn)
        self.core.quota = MemoryQuota()
        self._commit("alice")
        self.assertEqual(called, [])
        self.core.quota.limits["alice@example.com"] = QuotaLimits(storage=10**6)
        self._commit("alice")
        self.assertEqual(len(called), 1)


class ClientAddressTests(SynchronousTestCase):
    def test_regression_client_address_parsed_once(self) -> None:
        """The relay policy and the trusted-origin check parse a client's address once, not per question."""
        networks = [ipaddress.ip_network("192.0.2.0/24")]
        relay_policy._client_address.cache_clear()
        answers = [relay_policy.in_networks(ip, networks) for ip in ("192.0.2.7", "192.0.2.7", "::ffff:192.0.2.7",
                                                                     "198.51.100.1", "not an address")]
        self.assertEqual(answers, [True, True, True, False, False])
        self.assertEqual(relay_policy._client_address.cache_info().misses, 4)
        self.assertEqual(relay_policy._client_address.cache_info().hits, 1)
