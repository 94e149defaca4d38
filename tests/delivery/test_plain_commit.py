"""
The plain commit path (issue 15): a message in memory with nothing to check
is committed with one Deferred instead of the coroutines; it must do and log
exactly what the general path does.
"""

from __future__ import annotations

import os

from twisted.internet.defer import Deferred, fail
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from mailserver.address import parse_mailbox
from mailserver.delivery.incoming import IncomingSpool
from mailserver.delivery.sieve_filter import SieveFilter
from mailserver.delivery.transaction import Committer, Transaction
from mailserver.envelope import Client, CommandTarget, Envelope, LocalMailbox, Recipient, RemoteAddress
from mailserver.errors import MailError
from mailserver.sieve.scripts import ACTIVE_LINK
from tests.fakes import MemoryQueue, MemoryStore, build_core

#: Event keys that differ between two runs (times, the logger, the legacy bridge's additions).
_VARYING = {"log_time", "log_logger", "time", "format", "message", "system", "isError", "log_legacy"}

MESSAGE = b"Subject: hi\nFrom: <a@example.org>\n\nbody\n"


def _local(user: str) -> Recipient:
    return Recipient(parse_mailbox(f"{user}@example.com"), (LocalMailbox(f"{user}@example.com", f"/mail/{user}"),))


def _remote(address: str) -> Recipient:
    return Recipient(parse_mailbox(address), (RemoteAddress(parse_mailbox(address)),))


def _command(user: str) -> Recipient:
    return Recipient(parse_mailbox(f"{user}@example.com"), (CommandTarget("cat >/dev/null"),))


CASES: dict[str, tuple[list, dict]] = {
    "one local": ([_local("alice")], {}),
    "two local, submitted": ([_local("alice"), _local("bob")], {"sasl_user": "alice"}),
    "local and remote": ([_local("alice"), _remote("x@remote.example")], {}),
    "command target, not enabled": ([_command("alice")], {}),
    "nobody": ([], {}),
}


class PlanThenFail(MemoryStore):
    """A store whose failure (C{error}) comes after Sieve's plan ran in its "writer thread"."""

    def deliver(self, message, copies):
        if self.error is not None and callable(copies):
            copies()
            return fail(self.error)
        return super().deliver(message, copies)


class PlainCommitTests(SynchronousTestCase):
    def _commit(
        self, recipients: list, client: dict, plain: bool, store_error: MailError | None = None, spool: bool = False,
        sieve: bool = False, store_class: type = MemoryStore,
    ):
        """Commit one message by the plain or the general path: (outcome, stored, queued, log events)."""
        clock = MemoryReactorClock()
        clock.advance(1_700_000_000)
        store, queue = store_class(), MemoryQueue()
        store.error = store_error
        core = build_core(clock, store=store, queue=queue)
        core.committer = Committer(store=store, queue=queue, sieve=SieveFilter(store) if sieve else None)
        if spool:  # an incoming spool the message stays below the threshold of
            core.spool = IncomingSpool(self.mktemp(), clock, threshold=1000, high_water=2000)
        envelope = Envelope(Client(ip="192.0.2.1", helo="c.example", **client), parse_mailbox("a@example.org"),
                            list(recipients), queue_id="Q1", started=clock.seconds() - 1)
        transaction = Transaction(core, envelope)
        transaction.write(MESSAGE)
        self.assertTrue(transaction._plain())
        if plain:  # the plain path starts no coroutine
            self.patch(transaction, "_commit_all", None)
        events: list[dict] = []
        observer = events.append
        globalLogPublisher.addObserver(observer)
        try:
            d = transaction.commit() if plain else Deferred.fromCoroutine(transaction._commit_all())
            outcome: object = self.successResultOf(d) if store_error is None and not any(
                isinstance(d, CommandTarget) for r in recipients for d in r.destinations
            ) else self.failureResultOf(d, MailError).value.reply()
        finally:
            globalLogPublisher.removeObserver(observer)
        logged = [
            {k: v for k, v in e.items() if k not in _VARYING}
            for e in events if e.get("log_namespace") == "mailserver.delivery"
        ]
        return outcome, store.delivered, queue.queued, logged

    def test_same_as_general_path(self) -> None:
        """Each case: the same reply, stored and queued bytes, and the same delivery log events."""
        for name, (recipients, client) in CASES.items():
            with self.subTest(name):
                fast, slow = self._commit(recipients, client, True), self._commit(recipients, client, False)
                self.assertEqual(fast, slow)
                self.assertTrue(fast[3])  # the delivery line was logged

    def test_same_as_general_path_with_spool(self) -> None:
        """With an incoming spool, a message that never spilled takes the plain path, with the same outcome."""
        for name, (recipients, client) in CASES.items():
            with self.subTest(name):
                fast = self._commit(recipients, client, True, spool=True)
                self.assertEqual(fast, self._commit(recipients, client, False, spool=True))
                self.assertEqual(fast, self._commit(recipients, client, True))

    def test_same_as_general_path_with_sieve_events(self) -> None:
        """
        Sieve's events (a script that files into a folder and redirects) are
        logged where the general path logs them, before the delivery line,
        and also when the store fails.
        """
        home = os.path.abspath(self.mktemp())
        os.makedirs(home)
        with open(os.path.join(home, ACTIVE_LINK), "w") as handle:
            handle.write('require "fileinto";\nfileinto "Lists";\nredirect "carol@remote.example";\n')
        user = Recipient(parse_mailbox("alice@example.com"),
                         (LocalMailbox("alice@example.com", os.path.join(home, "Maildir"), home),))
        for error in (None, MailError(451, "4.3.0", "Error: disk")):
            with self.subTest(error=error):
                fast = self._commit([user, _local("bob")], {}, True, error, sieve=True, store_class=PlanThenFail)
                self.assertEqual(fast, self._commit([user, _local("bob")], {}, False, error, sieve=True,
                                                    store_class=PlanThenFail))
                lines = [e.get("delivery_line") or e["log_format"] for e in fast[3]]
                self.assertEqual(len(lines), 3, lines)  # two Sieve events, then the delivery line
                self.assertTrue(lines[-1].startswith("Q1: from=<a@example.org>"), lines)

    def test_store_failure_same_as_general_path(self) -> None:
        for error in (MailError(451, "4.3.0", "Error: disk"), MailError(550, "5.1.1", "no")):
            with self.subTest(error.reply()):
                fast = self._commit([_local("alice")], {}, True, error)
                self.assertEqual(fast, self._commit([_local("alice")], {}, False, error))
                self.assertEqual(fast[3][0]["status"], "deferred" if error.temporary else "bounced")

    def test_delivery_event_as_logger_info_builds_it(self) -> None:
        """The delivery line's event has the keys and values Logger.info would give it."""
        *_, logged = self._commit([_local("alice")], {}, True)
        self.assertEqual(logged[0]["log_format"], "{delivery_line}")
        self.assertIs(logged[0]["log_level"], LogLevel.info)
        self.assertIsNone(logged[0]["log_source"])
        self.assertRegex(
            logged[0]["delivery_line"],
            r"^Q1: from=<a@example.org>, to=<alice@example.com>, client=\[192.0.2.1\], size=\d+, "
            r"status=delivered \(delivered to alice@example.com\)$",
        )
