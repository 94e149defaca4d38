"""Tests for mailserver.auth.checker.PasswordChecker."""

from __future__ import annotations

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm, Portal
from twisted.logger import LogLevel, capturedLogs
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import Interface, implementer
from zope.interface.verify import verifyObject

from mailserver.auth import checker as checker_module
from mailserver.auth.checker import DUMMY_HASH, FixedFailureDelay, IFailurePolicy, PasswordChecker
from mailserver.auth.schemes import DEFAULT_PARAMETERS, hash_password, verify
from mailserver.auth.userdb import MemoryUserDatabase
from mailserver.tables.passwd import split_password
from tests.reactors import ThreadedClock
from tests.auth.test_schemes import FAST


def record(name: str, password: bytes, scheme: str = "ARGON2ID"):
    from mailserver.tables.passwd import UserRecord

    return UserRecord(name, *split_password(hash_password(scheme, password, FAST)))


CHEAP_DUMMY = split_password(hash_password("ARGON2ID", b"nobody knows", FAST))


class CheckerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = ThreadedClock()
        self.users = MemoryUserDatabase([record("alice@example.com", b"right"), record("Bob", b"bobs", "SHA512-CRYPT")])
        self.checker = PasswordChecker(self.users, self.reactor, dummy=CHEAP_DUMMY)

    def test_provides_interface(self) -> None:
        self.assertTrue(verifyObject(ICredentialsChecker, self.checker))
        self.assertTrue(verifyObject(IFailurePolicy, FixedFailureDelay(1.0)))

    def test_success_returns_record_name_as_bytes(self) -> None:
        d = self.checker.requestAvatarId(UsernamePassword(b"Alice@Example.COM", b"right"))
        self.assertEqual(self.successResultOf(d), b"alice@example.com")
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_str_credentials(self) -> None:
        d = self.checker.requestAvatarId(UsernamePassword("bob", "bobs"))
        self.assertEqual(self.successResultOf(d), b"Bob")

    def test_verification_runs_in_thread_pool(self) -> None:
        self.reactor.pool.synchronous = False
        d = self.checker.requestAvatarId(UsernamePassword(b"alice@example.com", b"right"))
        self.assertNoResult(d)
        self.assertEqual([func for func, _ in self.reactor.pool.calls], [verify])
        self.reactor.pool.run()
        self.assertEqual(self.successResultOf(d), b"alice@example.com")

    def test_verification_uses_its_own_pool_when_given(self) -> None:
        from tests.reactors import QueuedThreadPool

        hashing = QueuedThreadPool()
        checker = PasswordChecker(self.users, self.reactor, dummy=CHEAP_DUMMY, threadpool=hashing)
        d = checker.requestAvatarId(UsernamePassword(b"alice@example.com", b"right"))
        self.assertEqual(self.successResultOf(d), b"alice@example.com")
        self.assertEqual([func for func, _ in hashing.calls], [verify])
        self.assertEqual(self.reactor.pool.calls, [])  # the mail pool was not used

    def test_wrong_password_fails_after_delay(self) -> None:
        with capturedLogs() as events:
            d = self.checker.requestAvatarId(UsernamePassword(b"alice@example.com", b"wrong"))
        self.assertNoResult(d)
        self.reactor.advance(1.99)
        self.assertNoResult(d)
        self.reactor.advance(0.01)
        self.failureResultOf(d, UnauthorizedLogin)
        failures = [e for e in events if e.get("reason")]
        self.assertEqual(len(failures), 1)
        # The guard (auth/throttle.py) writes the line fail2ban reads.
        self.assertEqual(failures[0]["log_level"], LogLevel.debug)
        self.assertEqual(failures[0]["user"], "alice@example.com")
        self.assertEqual(failures[0]["reason"], "password mismatch")

    def test_unknown_user_costs_the_same(self) -> None:
        with capturedLogs() as events:
            d = self.checker.requestAvatarId(UsernamePassword(b"mallory@example.com", b"right"))
        # A hash was verified, against the dummy, as for a real user.
        self.assertEqual(self.reactor.pool.calls, [(verify, (*CHEAP_DUMMY, b"right"))])
        self.assertNoResult(d)
        self.reactor.advance(2.0)
        self.failureResultOf(d, UnauthorizedLogin)
        self.assertEqual([e["reason"] for e in events if e.get("reason")], ["unknown user"])

    def test_dummy_password_does_not_log_in_unknown_user(self) -> None:
        d = self.checker.requestAvatarId(UsernamePassword(b"mallory", b"nobody knows"))
        self.reactor.advance(2.0)
        self.failureResultOf(d, UnauthorizedLogin)

    def test_default_dummy_matches_default_cost(self) -> None:
        scheme, stored = DUMMY_HASH
        p = DEFAULT_PARAMETERS
        self.assertEqual(scheme, "ARGON2ID")
        self.assertIn(f"$m={p.argon2_memory_cost},t={p.argon2_time_cost},p={p.argon2_parallelism}$", stored)

    def test_failure_delay_parameter(self) -> None:
        checker = PasswordChecker(self.users, self.reactor, failure_delay=5.0, dummy=CHEAP_DUMMY)
        d = checker.requestAvatarId(UsernamePassword(b"alice@example.com", b"wrong"))
        self.reactor.advance(4.9)
        self.assertNoResult(d)
        self.reactor.advance(0.1)
        self.failureResultOf(d, UnauthorizedLogin)

    def test_policy_seam(self) -> None:
        @implementer(IFailurePolicy)
        class Recording:
            def __init__(self):
                self.events = []

            def failed(self, username):
                self.events.append(("failed", username))
                return 7.0

            def succeeded(self, username):
                self.events.append(("succeeded", username))

        policy = Recording()
        checker = PasswordChecker(self.users, self.reactor, policy=policy, dummy=CHEAP_DUMMY)
        d = checker.requestAvatarId(UsernamePassword(b"ALICE@example.com", b"wrong"))
        self.reactor.advance(6.9)
        self.assertNoResult(d)
        self.reactor.advance(0.1)
        self.failureResultOf(d, UnauthorizedLogin)
        self.successResultOf(checker.requestAvatarId(UsernamePassword(b"alice@example.com", b"right")))
        self.assertEqual(policy.events, [("failed", "alice@example.com"), ("succeeded", "alice@example.com")])

    def test_undecodable_username(self) -> None:
        with capturedLogs() as events:
            d = self.checker.requestAvatarId(UsernamePassword(b"\xffroot", b"x"))
        self.reactor.advance(2.0)
        self.failureResultOf(d, UnauthorizedLogin)
        self.assertEqual(len(self.reactor.pool.calls), 1)
        self.assertEqual([e["user"] for e in events if e.get("reason")], [r"\xffroot"])

    def test_log_line_cannot_be_forged(self) -> None:
        with capturedLogs() as events:
            d = self.checker.requestAvatarId(UsernamePassword(b"x>\nfake: user=<admin", b"x"))
        self.reactor.advance(2.0)
        self.failureResultOf(d, UnauthorizedLogin)
        (event,) = [e for e in events if e.get("reason")]
        self.assertNotIn("\n", event["user"])
        self.assertNotIn(">", event["user"])

    def test_through_a_portal(self) -> None:
        class IThing(Interface):
            pass

        @implementer(IRealm)
        class Realm:
            def requestAvatar(self, avatarId, mind, *interfaces):
                return IThing, avatarId, lambda: None

        portal = Portal(Realm(), [self.checker])
        result = self.successResultOf(portal.login(UsernamePassword(b"alice@EXAMPLE.com", b"right"), None, IThing))
        self.assertEqual(result[1], b"alice@example.com")
        d = portal.login(UsernamePassword(b"alice@example.com", b"nope"), None, IThing)
        self.reactor.advance(2.0)
        self.failureResultOf(d, UnauthorizedLogin)

    def test_success_is_logged(self) -> None:
        with capturedLogs() as events:
            self.successResultOf(self.checker.requestAvatarId(UsernamePassword(b"bob", b"bobs")))
        self.assertEqual([e["user"] for e in events if "succeeded" in e["log_format"]], ["Bob"])


class ModuleTests(SynchronousTestCase):
    def test_no_global_reactor(self) -> None:
        self.assertFalse(hasattr(checker_module, "reactor"))
