"""The policy objects service.py builds: sender login, trusted origin, hold/file/command targets."""

from __future__ import annotations

import ipaddress
from types import SimpleNamespace

from twisted.trial.unittest import SynchronousTestCase

from mailserver.address import parse_mailbox
from mailserver.envelope import Client, Envelope
from mailserver.delivery.local_mailboxes import LocalMailboxes
from mailserver.delivery.sender_login import SenderLogin
from mailserver.delivery.targets import LocalTargets
from mailserver.delivery.trusted_origin import TrustedOrigin
from tests.fakes import StaticUsers


class SyncPool:
    """A thread pool that runs the call at once (no threads in unit tests)."""

    def callInThreadWithCallback(self, on_result, f, *args, **kwargs):
        on_result(True, f(*args, **kwargs))


class SyncReactor:
    def getThreadPool(self):
        return SyncPool()

    def callFromThread(self, f, *args, **kwargs):
        f(*args, **kwargs)


class FakeExpander:
    """Expands every address to C{targets}; counts its calls."""

    def __init__(self, *targets: str) -> None:
        self.targets = [parse_mailbox(t) for t in targets]
        self.calls = 0

    def expand(self, address, delimiter):
        self.calls += 1
        return SimpleNamespace(targets=self.targets)


def sender_login(expander: FakeExpander) -> SenderLogin:
    users = StaticUsers("alice@example.com", "bob@example.com")
    mailboxes = LocalMailboxes(users, frozenset(), "+", "Maildir/", "/mail")
    return SenderLogin(users, expander, mailboxes, {"example.com"}.__contains__, "+", SyncReactor())


class SenderLoginTests(SynchronousTestCase):
    def test_own_address_and_extension_without_expanding(self) -> None:
        expander = FakeExpander()
        login = sender_login(expander)
        self.assertTrue(self.successResultOf(login.owned_by("alice@example.com", parse_mailbox("Alice@example.com"))))
        self.assertTrue(self.successResultOf(login.owned_by("alice@example.com", parse_mailbox("alice+x@example.com"))))
        self.assertEqual(expander.calls, 0)

    def test_alias_leading_to_user(self) -> None:
        login = sender_login(FakeExpander("alice@example.com"))
        self.assertTrue(self.successResultOf(login.owned_by("alice@example.com", parse_mailbox("sales@example.com"))))

    def test_alias_leading_elsewhere(self) -> None:
        login = sender_login(FakeExpander("bob@example.com"))
        self.assertFalse(self.successResultOf(login.owned_by("alice@example.com", parse_mailbox("sales@example.com"))))


def client(ip: str = "192.0.2.1", **kw) -> Client:
    return Client(ip=ip, **kw)


class TrustedOriginTests(SynchronousTestCase):
    def test_trusted(self) -> None:
        trusted = TrustedOrigin((ipaddress.ip_network("10.0.0.0/8"),))
        self.assertTrue(trusted(client("10.1.2.3")))
        self.assertTrue(trusted(client(sasl_user="alice@example.com")))
        self.assertTrue(trusted(client(trusted=True)))
        self.assertFalse(trusted(client()))


class RecordingHold:
    def __init__(self) -> None:
        self.held: list = []

    def hold(self, record, message):
        self.held.append((record, message))
        return "H1"


class LocalTargetsTests(SynchronousTestCase):
    def test_hold_records_envelope(self) -> None:
        area = RecordingHold()
        targets = LocalTargets(SyncReactor(), area, lambda c: c.sasl_user is not None, "nobody", 10.0)
        envelope = Envelope(client(sasl_user="alice@example.com"), parse_mailbox("alice@example.com"), queue_id="Q1")
        self.assertEqual(self.successResultOf(targets.hold(envelope, b"m", "spam")), "H1")
        record, message = area.held[0]
        self.assertEqual((record["sender"], record["reason"], record["trusted"], message),
                         ("alice@example.com", "spam", True, b"m"))
