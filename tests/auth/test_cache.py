"""Tests for the verified-credential cache and its use by the checker."""

from __future__ import annotations

from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from mailserver.auth.cache import ENTRY_BYTES, VerifiedCache
from mailserver.auth.checker import PasswordChecker
from mailserver.auth.schemes import verify
from mailserver.auth.userdb import MemoryUserDatabase
from tests.auth.test_checker import CHEAP_DUMMY, record
from tests.reactors import ThreadedClock


class VerifiedCacheTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.cache = VerifiedCache(10 * ENTRY_BYTES, 60, self.clock.seconds)

    def test_remembered_until_ttl(self) -> None:
        self.cache.remember("alice", b"pw", "ARGON2ID", "$h1")
        self.assertTrue(self.cache.verified("alice", b"pw", "ARGON2ID", "$h1"))
        self.clock.advance(60)
        self.assertFalse(self.cache.verified("alice", b"pw", "ARGON2ID", "$h1"))
        self.assertEqual(len(self.cache), 0)

    def test_other_password_hash_scheme_or_user_misses(self) -> None:
        self.cache.remember("alice", b"pw", "ARGON2ID", "$h1")
        self.assertFalse(self.cache.verified("alice", b"pw2", "ARGON2ID", "$h1"))
        self.assertFalse(self.cache.verified("alice", b"pw", "ARGON2ID", "$h2"))
        self.assertFalse(self.cache.verified("alice", b"pw", "BLF-CRYPT", "$h1"))
        self.assertFalse(self.cache.verified("bob", b"pw", "ARGON2ID", "$h1"))

    def test_fields_cannot_be_shifted(self) -> None:
        """Length-prefixed fields: moving bytes from the hash to the password misses."""
        self.cache.remember("alice", b"pw", "X", "ab")
        self.assertFalse(self.cache.verified("alice", b"bpw", "X", "a"))

    def test_bounded_least_recently_used_goes(self) -> None:
        for i in range(10):
            self.cache.remember(f"u{i}", b"pw", "S", "h")
        self.assertTrue(self.cache.verified("u0", b"pw", "S", "h"))  # u0 is now the most recent
        self.cache.remember("u10", b"pw", "S", "h")
        self.assertEqual(len(self.cache), 10)
        self.assertTrue(self.cache.verified("u0", b"pw", "S", "h"))
        self.assertFalse(self.cache.verified("u1", b"pw", "S", "h"))

    def test_disabled_by_zero_size_or_ttl(self) -> None:
        for cache in (VerifiedCache(0, 60, self.clock.seconds), VerifiedCache(10 * ENTRY_BYTES, 0, self.clock.seconds)):
            cache.remember("alice", b"pw", "S", "h")
            self.assertFalse(cache.verified("alice", b"pw", "S", "h"))
            self.assertEqual(len(cache), 0)

    def test_password_not_stored(self) -> None:
        self.cache.remember("alice", b"secret-password", "S", "h")
        self.assertNotIn(b"secret-password", repr(self.cache._entries).encode())


class CachedCheckerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = ThreadedClock()
        self.users = MemoryUserDatabase([record("alice@example.com", b"right")])
        self.cache = VerifiedCache(1 << 20, 3600, self.reactor.seconds)
        self.checker = PasswordChecker(self.users, self.reactor, dummy=CHEAP_DUMMY, cache=self.cache)

    def login(self, password: bytes, name: bytes = b"alice@example.com"):
        return self.checker.requestAvatarId(UsernamePassword(name, password))

    def hashes(self) -> int:
        return sum(1 for func, _ in self.reactor.pool.calls if func is verify)

    def test_second_login_is_not_hashed(self) -> None:
        self.assertEqual(self.successResultOf(self.login(b"right")), b"alice@example.com")
        self.assertEqual(self.hashes(), 1)
        self.assertEqual(self.successResultOf(self.login(b"right", b"ALICE@example.com")), b"alice@example.com")
        self.assertEqual(self.hashes(), 1)

    def test_failures_are_not_cached_as_success(self) -> None:
        for _ in range(2):
            d = self.login(b"wrong")
            self.reactor.advance(10)
            self.failureResultOf(d, UnauthorizedLogin)
        self.assertEqual(self.hashes(), 2)
        self.assertEqual(len(self.cache), 0)

    def test_cached_user_with_wrong_password_fails(self) -> None:
        self.successResultOf(self.login(b"right"))
        d = self.login(b"wrong")
        self.reactor.advance(10)
        self.failureResultOf(d, UnauthorizedLogin)

    def test_changed_passwd_entry_invalidates(self) -> None:
        self.successResultOf(self.login(b"right"))
        self.users.replace([record("alice@example.com", b"new")])
        d = self.login(b"right")
        self.reactor.advance(10)
        self.failureResultOf(d, UnauthorizedLogin)
        self.assertEqual(self.successResultOf(self.login(b"new")), b"alice@example.com")

    def test_removed_user_cannot_log_in_from_cache(self) -> None:
        self.successResultOf(self.login(b"right"))
        self.users.replace([])
        d = self.login(b"right")
        self.reactor.advance(10)
        self.failureResultOf(d, UnauthorizedLogin)

    def test_expired_entry_is_hashed_again(self) -> None:
        self.successResultOf(self.login(b"right"))
        self.reactor.advance(3600)
        self.successResultOf(self.login(b"right"))
        self.assertEqual(self.hashes(), 2)

    def test_regression_login_under_load_not_queued_behind_hashing(self) -> None:
        """
        Issue 15: a known-good login waited behind a full hashing pool
        (0.5-3 s in imaptest's stress run); once verified it is answered
        without a pool hand-off.
        """
        self.successResultOf(self.login(b"right"))
        self.reactor.pool.synchronous = False
        busy = [self.login(b"flood", b"mallory") for _ in range(5)]
        d = self.login(b"right")
        self.assertEqual(self.successResultOf(d), b"alice@example.com")
        for pending in busy:
            self.assertNoResult(pending)
