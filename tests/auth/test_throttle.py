"""Tests for mailserver.auth.throttle: growing delays, bans, the guard, the fail2ban line."""

from __future__ import annotations

import re

from twisted.cred.checkers import AllowAnonymousAccess, ICredentialsChecker
from twisted.cred.credentials import Anonymous, UsernamePassword
from twisted.cred.error import UnauthorizedLogin, UnhandledCredentials
from twisted.cred.portal import IRealm, Portal
from twisted.internet.defer import fail
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import Interface, implementer

from mailserver.auth.checker import PasswordChecker
from mailserver.auth.throttle import (
    AuthGuard,
    AuthThrottle,
    LoginBanned,
    log_auth_failure,
    loggable_user,
    normalize_ip,
)
from mailserver.auth.userdb import MemoryUserDatabase
from tests.reactors import ThreadedClock
from tests.auth.test_checker import CHEAP_DUMMY, record

#: The fail2ban failregex documented in README (tls.rst), as Python sees it
#: once fail2ban has replaced <HOST>.
FAILREGEX = r"auth failed: service=\S+ rip=<HOST> user=\S* reason=.*$"
HOST = r"(?P<host>[0-9A-Fa-f.:]+)"


def fail2ban_host(line: str) -> str | None:
    match = re.search(FAILREGEX.replace("<HOST>", HOST), line)
    return match.group("host") if match else None


class ThrottleTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.throttle = AuthThrottle(self.clock, base_delay=2, max_delay=15, limit=10, window=600, ban_time=600)

    def test_delays_grow_and_are_capped(self) -> None:
        delays = [self.throttle.failed("192.0.2.1") for _ in range(6)]
        self.assertEqual(delays, [2, 4, 8, 15, 15, 15])

    def test_addresses_are_counted_apart(self) -> None:
        self.throttle.failed("192.0.2.1")
        self.throttle.failed("192.0.2.1")
        self.assertEqual(self.throttle.failed("192.0.2.2"), 2)

    def test_success_starts_over(self) -> None:
        self.throttle.failed("192.0.2.1")
        self.throttle.failed("192.0.2.1")
        self.throttle.succeeded("192.0.2.1")
        self.assertEqual(self.throttle.failed("192.0.2.1"), 2)

    def test_ban_after_limit_within_window_then_released(self) -> None:
        with capturedLogs() as events:
            for _ in range(9):
                self.throttle.failed("192.0.2.1")
                self.clock.advance(10)
            self.assertFalse(self.throttle.banned("192.0.2.1"))
            self.throttle.failed("192.0.2.1")
        self.assertTrue(self.throttle.banned("192.0.2.1"))
        self.assertFalse(self.throttle.banned("192.0.2.2"))
        [ban] = [e for e in events if "auth ban" in e["log_format"]]
        self.assertEqual((ban["rip"], ban["count"]), ("192.0.2.1", 10))
        self.clock.advance(599)
        self.assertTrue(self.throttle.banned("192.0.2.1"))
        self.clock.advance(1)
        self.assertFalse(self.throttle.banned("192.0.2.1"))

    def test_failures_outside_the_window_do_not_ban(self) -> None:
        for _ in range(20):
            self.throttle.failed("192.0.2.1")
            self.clock.advance(67)  # any 10 failures span more than 600 s
        self.assertFalse(self.throttle.banned("192.0.2.1"))
        self.assertEqual(self.throttle.failures("192.0.2.1"), 8)  # those of the last 600 s

    def test_ipv6_counted_by_64(self) -> None:
        for n in range(10):
            self.throttle.failed(f"2001:db8:1:2::{n + 1:x}")
        self.assertTrue(self.throttle.banned("2001:db8:1:2:ffff::1"))
        self.assertFalse(self.throttle.banned("2001:db8:1:3::1"))

    def test_ipv4_mapped_is_ipv4(self) -> None:
        self.throttle.failed("::ffff:192.0.2.1")
        self.assertEqual(self.throttle.failures("192.0.2.1"), 1)
        self.assertEqual(normalize_ip("::ffff:192.0.2.1"), "192.0.2.1")

    def test_loopback_delayed_but_never_banned(self) -> None:
        delays = [self.throttle.failed("127.0.0.1") for _ in range(12)]
        self.assertEqual(delays[:3], [2, 4, 8])
        self.assertFalse(self.throttle.banned("127.0.0.1"))
        self.assertFalse(self.throttle.banned("::1"))

    def test_unknown_peer_gets_the_base_delay(self) -> None:
        self.assertEqual([self.throttle.failed(None) for _ in range(3)], [2, 2, 2])
        self.assertFalse(self.throttle.banned(None))

    def test_memory_is_bounded(self) -> None:
        throttle = AuthThrottle(self.clock, max_clients=100)
        for n in range(1000):
            throttle.failed(f"10.0.{n // 256}.{n % 256}")
        self.assertLessEqual(len(throttle._clients), 100)
        self.assertEqual(throttle.failures("10.0.3.231"), 1)  # the most recent is kept


class LogLineTests(SynchronousTestCase):
    def line(self, *args) -> tuple[str, dict]:
        with capturedLogs() as events:
            log_auth_failure(*args)
        [event] = events
        return formatEvent(event), event

    def test_format(self) -> None:
        text, event = self.line("pop3", "192.0.2.1", b"alice@example.com", "password mismatch")
        self.assertEqual(text, "auth failed: service=pop3 rip=192.0.2.1 user=alice@example.com reason=password mismatch")
        self.assertEqual(event["log_level"], LogLevel.warn)
        self.assertEqual(fail2ban_host(text), "192.0.2.1")

    def test_ipv6_and_unknown(self) -> None:
        self.assertEqual(fail2ban_host(self.line("imap", "2001:db8::7", "bob", "x")[0]), "2001:db8::7")
        self.assertIn("rip=unknown ", self.line("smtp", None, "bob", "x")[0])
        self.assertIn(" user= reason=", self.line("smtp", "192.0.2.1", None, "malformed")[0])

    def test_forged_user_cannot_move_the_address(self) -> None:
        text, _ = self.line("pop3", "192.0.2.1", b"x rip=203.0.113.9 user=y\nauth failed: rip=203.0.113.9", "password mismatch")
        self.assertEqual(fail2ban_host(text), "192.0.2.1")
        self.assertNotIn("\n", text)
        self.assertEqual(len(text.split(" user=")[1].split(" reason=")[0].split()), 1)

    def test_loggable_user(self) -> None:
        self.assertEqual(loggable_user(b"a b\\c\xff"), "a\\x20b\\x5cc\\x5cxff")
        self.assertEqual(len(loggable_user("x" * 1000)), 256)


class IThing(Interface):
    pass


@implementer(IRealm)
class Realm:
    def requestAvatar(self, avatarId, mind, *interfaces):
        return IThing, avatarId, lambda: None


class GuardTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = ThreadedClock()
        users = MemoryUserDatabase([record("alice@example.com", b"right")])
        checker = PasswordChecker(users, self.reactor, failure_delay=0, dummy=CHEAP_DUMMY)
        self.portal = Portal(Realm(), [checker])
        self.throttle = AuthThrottle(self.reactor, base_delay=2, limit=3)

    def guard(self, peer: str = "192.0.2.1") -> AuthGuard:
        return AuthGuard(self.portal, self.throttle, "pop3", peer, self.reactor)

    def test_success_passes_through(self) -> None:
        self.throttle.failed("192.0.2.1")
        result = self.successResultOf(self.guard().login(UsernamePassword(b"alice@example.com", b"right"), None, IThing))
        self.assertEqual(result[1], b"alice@example.com")
        self.assertEqual(self.throttle.failures("192.0.2.1"), 0)

    def test_failure_logged_counted_and_delayed(self) -> None:
        with capturedLogs() as events:
            d = self.guard().login(UsernamePassword(b"alice@example.com", b"wrong"), None, IThing)
        self.assertNoResult(d)
        self.reactor.advance(1.9)
        self.assertNoResult(d)
        self.reactor.advance(0.1)
        self.failureResultOf(d, UnauthorizedLogin)
        [line] = [formatEvent(e) for e in events if e.get("auth_failure")]
        self.assertEqual(line, "auth failed: service=pop3 rip=192.0.2.1 user=alice@example.com reason=password mismatch")
        self.assertEqual(self.throttle.failures("192.0.2.1"), 1)

    def test_unknown_user_reason(self) -> None:
        with capturedLogs() as events:
            d = self.guard().login(UsernamePassword(b"mallory", b"x"), None, IThing)
            self.reactor.advance(2)
        self.failureResultOf(d, UnauthorizedLogin)
        self.assertEqual([e["reason"] for e in events if e.get("auth_failure")], ["unknown user"])

    def test_banned_address_costs_no_hash(self) -> None:
        for _ in range(3):
            self.throttle.failed("192.0.2.1")
        hashed = len(self.reactor.pool.calls)
        with capturedLogs() as events:
            d = self.guard().login(UsernamePassword(b"alice@example.com", b"right"), None, IThing)
            self.reactor.advance(self.throttle.ban_delay)
        self.failureResultOf(d, LoginBanned)
        self.assertEqual(len(self.reactor.pool.calls), hashed)
        self.assertEqual([e["reason"] for e in events if e.get("auth_failure")], ["client banned"])
        # Another address is not affected.
        other = self.guard("192.0.2.2").login(UsernamePassword(b"alice@example.com", b"right"), None, IThing)
        self.successResultOf(other)

    def test_refuse_for_protocol_decided_failures(self) -> None:
        with capturedLogs() as events:
            d = self.guard().refuse(None, "malformed PLAIN response")
        self.assertNoResult(d)
        self.reactor.advance(2)
        failure = self.failureResultOf(d, UnauthorizedLogin)
        self.assertEqual(failure.getErrorMessage(), "malformed PLAIN response")
        self.assertEqual([e["reason"] for e in events if e.get("auth_failure")], ["malformed PLAIN response"])
        self.assertEqual(self.throttle.failures("192.0.2.1"), 1)

    def test_server_errors_are_not_failed_logins(self) -> None:
        class Broken:
            def login(self, *args):
                return fail(UnhandledCredentials("no checker"))

        guard = AuthGuard(Broken(), self.throttle, "pop3", "192.0.2.1", self.reactor)
        with capturedLogs() as events:
            self.failureResultOf(guard.login(object(), None, IThing), UnhandledCredentials)
        self.assertEqual([e for e in events if e.get("auth_failure")], [])
        self.assertEqual(self.throttle.failures("192.0.2.1"), 0)

    def test_anonymous_login_passes_even_when_banned(self) -> None:
        portal = Portal(Realm(), [AllowAnonymousAccess()])
        throttle = AuthThrottle(self.reactor, limit=1)
        throttle.failed("192.0.2.1")
        guard = AuthGuard(portal, throttle, "smtp", "192.0.2.1", self.reactor)
        self.assertTrue(throttle.banned("192.0.2.1"))
        result = self.successResultOf(guard.login(Anonymous(), None, IThing))
        self.assertIs(result[0], IThing)

    def test_delegates_credential_interfaces(self) -> None:
        self.assertEqual(self.guard().listCredentialsInterfaces(), self.portal.listCredentialsInterfaces())
        self.assertTrue(ICredentialsChecker.providedBy(list(self.portal.checkers.values())[0]))
