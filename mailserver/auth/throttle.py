"""
Brute-force protection for every login (SMTP AUTH, POP3, IMAP), per client
address, and the one log line fail2ban reads.

L{AuthThrottle} is shared by all listeners: each failed login from an
address makes the next answer wait longer (2 s, 4 s, 8 s ... capped), and
C{auth_failure_limit} failures within a window ban the address for a
while: its logins are then refused without checking a password, so a
banned guesser costs no hashing.

Protocols do not call it directly: each connection wraps the cred portal in
an L{AuthGuard} (C{AuthGuard(portal, throttle, "pop3", peer, clock)}) and
logs in through it as through the portal.  The guard asks the throttle
before the checker runs, records the outcome, writes the log line and
delays the failure.  The password checker therefore has no delay of its
own when a guard is used (C{PasswordChecker(..., failure_delay=0)}).
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, Callable

from twisted.cred.credentials import IAnonymous
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger

log = Logger()

#: The format of the failure line (fail2ban: see docs/tls.rst "Brute-force protection").
AUTH_FAILED_FORMAT = "auth failed: service={service} rip={rip} user={user} reason={reason}"


class LoginBanned(UnauthorizedLogin):
    """The client address is banned for too many failed logins."""


def log_auth_failure(service: str, peer_ip: str | None, user: bytes | str | None, reason: str) -> None:
    """
    Log one failed login as one parsable line, e.g.::

        auth failed: service=pop3 rip=192.0.2.1 user=alice@example.com reason=password mismatch

    C{user} is what the client sent, escaped so that it holds no space or
    control character (a crafted name cannot forge a second C{rip=});
    C{reason} is ours and ends the line.  Every protocol logs failures with
    this function (L{AuthGuard} does it for portal logins).
    """
    log.warn(
        AUTH_FAILED_FORMAT,
        service=service,
        rip=normalize_ip(peer_ip) or "unknown",
        user=loggable_user(user),
        reason=reason or "authentication failed",
        auth_failure=True,
    )


def loggable_user(user: bytes | str | None) -> str:
    """A client-supplied user name as one token: at most 256 characters, no spaces."""
    if user is None:
        return ""
    if isinstance(user, bytes):
        user = user[:1024].decode("utf-8", "backslashreplace")
    user = user[:256]
    return "".join(
        c if c.isprintable() and not c.isspace() and c != "\\" else _escape(c) for c in user
    )


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def normalize_ip(text: str | None) -> str | None:
    """An address as text, IPv4-mapped IPv6 shown as IPv4; None if not an IP address."""
    if not text:
        return None
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return str(address)


def _client_key(text: str | None) -> str | None:
    """What failures are counted against: the IPv4 address, or the IPv6 /64."""
    normal = normalize_ip(text)
    if normal is None:
        return None
    address = ipaddress.ip_address(normal)
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return normal


def _is_loopback(text: str | None) -> bool:
    normal = normalize_ip(text)
    return normal is not None and ipaddress.ip_address(normal).is_loopback


@dataclass
class _Client:
    failures: deque = field(default_factory=deque)  # times of recent failures
    banned_until: float = 0.0


class AuthThrottle:
    """
    Failed logins per client address (IPv6 by /64), over an injected clock.

    @param clock: C{IReactorTime}.
    @param base_delay: the first failure's delay (C{auth_failure_delay});
        each further failure within C{window} doubles it, up to C{max_delay}.
    @param limit: failures within C{window} seconds that ban the address
        (C{auth_failure_limit}).
    @param ban_time: seconds a ban lasts.
    @param ban_delay: seconds before a banned address is answered.
    @param exempt: addresses never banned (default: loopback, where a
        webmail proxies every user; they are still delayed).
    @param max_clients: addresses remembered; the stalest are forgotten.
    """

    def __init__(
        self,
        clock: IReactorTime,
        *,
        base_delay: float = 2.0,
        max_delay: float = 15.0,
        limit: int = 10,
        window: float = 600.0,
        ban_time: float = 600.0,
        ban_delay: float | None = None,
        exempt: Callable[[str | None], bool] = _is_loopback,
        max_clients: int = 65536,
    ) -> None:
        self._clock = clock
        self.base_delay = base_delay
        self.max_delay = max(max_delay, base_delay)
        self.limit = limit
        self.window = window
        self.ban_time = ban_time
        self.ban_delay = self.max_delay if ban_delay is None else ban_delay
        self._exempt = exempt
        self._max_clients = max_clients
        self._clients: OrderedDict[str, _Client] = OrderedDict()

    def banned(self, peer_ip: str | None) -> bool:
        """Whether logins from C{peer_ip} are refused now."""
        key = _client_key(peer_ip)
        client = self._clients.get(key) if key is not None else None
        return client is not None and client.banned_until > self._clock.seconds()

    def failed(self, peer_ip: str | None) -> float:
        """Record a failure from C{peer_ip}; return the seconds to wait before answering."""
        key = _client_key(peer_ip)
        if key is None:
            return self.base_delay
        now = self._clock.seconds()
        client = self._clients.pop(key, None) or _Client()
        self._clients[key] = client  # most recently active last
        self._forget(client.failures, now)
        client.failures.append(now)
        count = len(client.failures)
        if count >= self.limit > 0 and not self._exempt(peer_ip) and client.banned_until <= now:
            client.banned_until = now + self.ban_time
            log.warn(
                "auth ban: rip={rip} failures={count} within={window}s for={ban}s",
                rip=normalize_ip(peer_ip), count=count, window=int(self.window), ban=int(self.ban_time),
            )
        self._prune(now)
        return min(self.base_delay * 2 ** (count - 1), self.max_delay)

    def succeeded(self, peer_ip: str | None) -> None:
        """A login from C{peer_ip} succeeded: its delays start again from the beginning."""
        key = _client_key(peer_ip)
        client = self._clients.get(key) if key is not None else None
        if client is not None and client.banned_until <= self._clock.seconds():
            del self._clients[key]

    def failures(self, peer_ip: str | None) -> int:
        """Failures counted against C{peer_ip} now (for tests and status)."""
        key = _client_key(peer_ip)
        client = self._clients.get(key) if key is not None else None
        if client is None:
            return 0
        self._forget(client.failures, self._clock.seconds())
        return len(client.failures)

    def _forget(self, failures: deque, now: float) -> None:
        while failures and failures[0] <= now - self.window:
            failures.popleft()

    def _prune(self, now: float) -> None:
        """Past C{max_clients}: forget the idle, then the stalest, down to 90 %."""
        if len(self._clients) <= self._max_clients:
            return
        idle = [
            key
            for key, client in self._clients.items()
            if client.banned_until <= now and not (client.failures and client.failures[-1] > now - self.window)
        ]
        for key in idle:
            del self._clients[key]
        while len(self._clients) > self._max_clients * 9 // 10:
            self._clients.popitem(last=False)


class AuthGuard:
    """
    A cred portal for one connection: C{login} as on the portal, with the
    throttle asked first and told the outcome, failures logged with
    L{log_auth_failure} and answered after the throttle's delay.

    A failure the protocol decides itself (a malformed SASL exchange) goes
    through L{refuse}, so it is logged, counted and delayed the same way.
    The L{UnauthorizedLogin} raised carries the checker's reason (e.g.
    C{"password mismatch"}); L{LoginBanned} means the address is banned.
    """

    def __init__(
        self, portal: Any, throttle: AuthThrottle, service: str, peer_ip: str | None, clock: IReactorTime
    ) -> None:
        self._portal = portal
        self._throttle = throttle
        self.service = service
        self.peer_ip = peer_ip
        self._clock = clock

    def listCredentialsInterfaces(self) -> list:
        return self._portal.listCredentialsInterfaces()

    def login(self, credentials: Any, mind: Any, *interfaces: Any) -> Deferred:
        return Deferred.fromCoroutine(self._login(credentials, mind, interfaces))

    def refuse(self, user: bytes | str | None, reason: str) -> Deferred:
        """Fail a login the protocol refused before the portal: count, log, delay, fail."""
        return Deferred.fromCoroutine(self._refuse(user, reason))

    async def _refuse(self, user: bytes | str | None, reason: str) -> Any:
        raise await self._failed(user, UnauthorizedLogin(reason))

    async def _login(self, credentials: Any, mind: Any, interfaces: tuple) -> Any:
        if IAnonymous.providedBy(credentials):
            # SMTP's login for unauthenticated mail (port 25) is no password guess.
            return await self._portal.login(credentials, mind, *interfaces)
        user = getattr(credentials, "username", None)
        if self._throttle.banned(self.peer_ip):
            log_auth_failure(self.service, self.peer_ip, user, "client banned")
            await deferLater(self._clock, self._throttle.ban_delay)
            raise LoginBanned("client banned")
        try:
            result = await self._portal.login(credentials, mind, *interfaces)
        except UnauthorizedLogin as e:
            raise await self._failed(user, e)
        self._throttle.succeeded(self.peer_ip)
        return result

    async def _failed(self, user: bytes | str | None, error: UnauthorizedLogin) -> UnauthorizedLogin:
        """Count and log C{error}, wait the throttle's delay, and give it back to raise."""
        delay = self._throttle.failed(self.peer_ip)
        log_auth_failure(self.service, self.peer_ip, user, _reason(error))
        if delay > 0:
            await deferLater(self._clock, delay)
        return error


def _reason(error: Exception) -> str:
    text = " ".join(str(arg) for arg in error.args if arg)
    return "".join(c if c.isprintable() else " " for c in text)[:200] or "authentication failed"
