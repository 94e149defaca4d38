"""
Connection limits for the login protocols (IMAP and POP3).

Per protocol (L{LoginLimits}): a total (C{imap_client_limit},
C{pop3_client_limit}), a per-address limit (C{login_per_ip_limit}), the
user+IP limit (C{mail_max_userip_connections}, checked at login) and the
time a client has to log in (C{login_timeout}).  Shared by both protocols:
a L{DescriptorBudget} that keeps a reserve of file descriptors for SMTP,
the store and the queue (SMTP has its own limits and keeps priority), and
a L{RefusalLog} that writes at most one line per address and minute.

A session asks L{LoginLimits.connect} for a L{Connection} when it starts,
answers with its protocol's refusal greeting if the connection carries a
refusal, calls L{Connection.login} after a successful login and
L{Connection.close} when it ends.

L{raise_nofile_limit} raises the soft C{RLIMIT_NOFILE} to the hard limit
at start (C{mailserver.tap}).  Imports no protocol package.
"""

from __future__ import annotations

import os
import resource
from collections import Counter
from typing import Any, Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from mailserver.ratelog import RateLimitedLog

log = Logger()

#: The reserve is this share of the descriptor limit, and at least RESERVE_MIN.
RESERVE_SHARE = 0.10
RESERVE_MIN = 100
#: Seconds between two counts of /proc/self/fd.
RECOUNT_INTERVAL = 1.0
#: Descriptors assumed open besides the login connections where /proc is missing.
FIXED_ALLOWANCE = 64
#: The soft limit we ask for when the hard limit is "unlimited" (Linux's nr_open default).
UNLIMITED_CAP = 1 << 20
#: A refused client that never reads its greeting (a TLS handshake that never
#: comes) is cut off after this many seconds.
REFUSAL_LINGER = 10.0
#: One refusal line per protocol and address within this many seconds.
REFUSAL_LOG_INTERVAL = 60.0
#: Addresses remembered by the refusal log (memory bound under a flood).
REFUSAL_LOG_ADDRESSES = 10_000

TOO_MANY = "Too many connections, try again later"
TOO_MANY_FROM_ADDRESS = "Too many connections from your address"
BUSY = "Server busy, try again later"
USERIP_EXCEEDED = "Maximum number of connections from user+IP exceeded (mail_max_userip_connections={limit})"


def raise_nofile_limit(
    getrlimit: Callable[[int], tuple[int, int]] = resource.getrlimit,
    setrlimit: Callable[[int, tuple[int, int]], None] = resource.setrlimit,
) -> tuple[int, int]:
    """
    Raise the soft C{RLIMIT_NOFILE} to the hard limit (an unlimited hard
    limit: to L{UNLIMITED_CAP}); log both.  Returns (soft before, soft after).
    """
    soft, hard = getrlimit(resource.RLIMIT_NOFILE)
    target = UNLIMITED_CAP if hard == resource.RLIM_INFINITY else hard
    raised = soft
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            raised = target
        except (ValueError, OSError) as error:
            log.warn("file descriptors: cannot raise the soft limit {soft} to {target}: {error}",
                     soft=soft, target=target, error=error)
    log.info("file descriptors: soft limit {before}, now {after} (hard limit {hard})",
             before=_limit_text(soft), after=_limit_text(raised), hard=_limit_text(hard))
    return soft, raised


def _limit_text(value: int) -> str:
    return "unlimited" if value == resource.RLIM_INFINITY else str(value)


def count_open_descriptors() -> int | None:
    """This process's open descriptors (/proc/self/fd), or None where /proc is missing."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return None


class DescriptorBudget:
    """
    Keeps C{reserve} descriptors free for SMTP, the store and the queue:
    a login connection is admitted only while the open descriptors stay
    below C{limit - reserve}.

    Open descriptors are counted from /proc/self/fd at most once per
    L{RECOUNT_INTERVAL}, plus the connections admitted since; without
    /proc, L{FIXED_ALLOWANCE} plus the login connections held.
    """

    def __init__(
        self,
        limit: int,
        clock: IReactorTime,
        reserve: int | None = None,
        count_open: Callable[[], int | None] = count_open_descriptors,
    ) -> None:
        self.limit = limit
        self.reserve = reserve if reserve is not None else max(RESERVE_MIN, int(limit * RESERVE_SHARE))
        self.clock = clock
        self._count_open = count_open
        self._counted_at: float | None = None
        self._counted: int | None = None
        self._since_count = 0
        self.held = 0

    @classmethod
    def from_rlimit(cls, clock: IReactorTime, getrlimit: Callable[[int], tuple[int, int]] = resource.getrlimit,
                    **kwargs: Any) -> "DescriptorBudget":
        """A budget for the current soft C{RLIMIT_NOFILE} (raised at start by L{raise_nofile_limit})."""
        soft, _ = getrlimit(resource.RLIMIT_NOFILE)
        return cls(UNLIMITED_CAP if soft == resource.RLIM_INFINITY else soft, clock, **kwargs)

    def open_descriptors(self) -> int:
        now = self.clock.seconds()
        if self._counted_at is None or now - self._counted_at >= RECOUNT_INTERVAL:
            self._counted = self._count_open()
            self._counted_at = now
            self._since_count = 0
        if self._counted is None:
            return FIXED_ALLOWANCE + self.held
        return self._counted + self._since_count

    def acquire(self) -> bool:
        """Count one more login connection if the reserve stays free; False if not."""
        if self.open_descriptors() >= self.limit - self.reserve:
            return False
        self._since_count += 1
        self.held += 1
        return True

    def release(self) -> None:
        self.held -= 1


class RefusalLog:
    """Logs refused connections: one line per protocol and address per interval, with a count of the rest."""

    def __init__(self, clock: IReactorTime, interval: float = REFUSAL_LOG_INTERVAL,
                 max_addresses: int = REFUSAL_LOG_ADDRESSES) -> None:
        self.lines = RateLimitedLog(clock, interval, max_addresses, namespace="mailserver.limits")

    def refused(self, protocol: str, ip: str | None, reason: str) -> None:
        rip = ip or "unknown"
        self.lines.warn((protocol, rip), "{protocol}: connection refused rip={rip}: {reason}",
                        protocol=protocol, rip=rip, reason=reason, refused=protocol)


class LoginLimits:
    """
    The limits of one login protocol (all its listeners, e.g. imap and
    imaps); 0 means no limit.

    @param protocol: C{"imap"} or C{"pop3"} (log lines).
    @param client_limit: simultaneous connections in all.
    @param per_ip_limit: simultaneous connections from one client address.
    @param userip_limit: sessions per logged-in user and client address.
    @param login_timeout: seconds a client has from connecting to logging in.
    @param budget: the descriptor reserve shared with the other protocol.
    @param refusals: where refusals are logged (rate-limited).
    """

    def __init__(
        self,
        protocol: str,
        client_limit: int = 0,
        per_ip_limit: int = 0,
        userip_limit: int = 0,
        login_timeout: float = 0,
        budget: DescriptorBudget | None = None,
        refusals: RefusalLog | None = None,
    ) -> None:
        self.protocol = protocol
        self.client_limit = client_limit
        self.per_ip_limit = per_ip_limit
        self.userip_limit = userip_limit
        self.login_timeout = login_timeout
        self.budget = budget
        self.refusals = refusals
        self.connections: Counter[str] = Counter()
        self.sessions: Counter[tuple[str, str]] = Counter()

    def connect(self, ip: str | None) -> "Connection":
        """A new connection from C{ip}: admitted, or carrying the refusal text."""
        key = ip or ""
        refusal = None
        if self.client_limit and sum(self.connections.values()) >= self.client_limit:
            refusal = TOO_MANY
        elif self.per_ip_limit and self.connections[key] >= self.per_ip_limit:
            refusal = TOO_MANY_FROM_ADDRESS
        elif self.budget is not None and not self.budget.acquire():
            refusal = BUSY
        if refusal is not None:
            if self.refusals is not None:
                self.refusals.refused(self.protocol, ip, refusal)
            return Connection(self, key, refusal)
        self.connections[key] += 1
        return Connection(self, key, None)

    def _disconnected(self, key: str) -> None:
        self.connections[key] -= 1
        if self.connections[key] <= 0:
            del self.connections[key]
        if self.budget is not None:
            self.budget.release()

    def _login(self, user: str, key: str) -> bool:
        if self.userip_limit and self.sessions[(user, key)] >= self.userip_limit:
            log.info("{protocol}: user+IP limit reached user={user} rip={rip} limit={limit}",
                     protocol=self.protocol, user=user, rip=key, limit=self.userip_limit)
            return False
        self.sessions[(user, key)] += 1
        return True

    def _logout(self, user: str, key: str) -> None:
        self.sessions[(user, key)] -= 1
        if self.sessions[(user, key)] <= 0:
            del self.sessions[(user, key)]


class Connection:
    """One connection's place under its protocol's limits."""

    def __init__(self, limits: LoginLimits, key: str, refusal: str | None) -> None:
        self.limits = limits
        self.key = key
        #: Why the connection is refused (its greeting's text), or None.
        self.refusal = refusal
        self.user: str | None = None
        self._open = refusal is None
        self._timer: IDelayedCall | None = None

    def refuse(self, transport: Any, greeting: bytes, clock: IReactorTime | None) -> None:
        """Send the refusal greeting and close; cut off a client that never takes it."""
        transport.write(greeting)
        transport.loseConnection()
        if clock is not None and hasattr(transport, "abortConnection"):
            self._timer = clock.callLater(REFUSAL_LINGER, transport.abortConnection)

    def start_login_timer(self, clock: IReactorTime, expired: Callable[[], None]) -> None:
        """Call C{expired} if the client has not logged in within C{login_timeout}."""
        if self.limits.login_timeout > 0:
            self._timer = clock.callLater(self.limits.login_timeout, expired)

    def login(self, user: str) -> bool:
        """A login of C{user}: False if over C{mail_max_userip_connections}."""
        if self.user is not None or not self.limits._login(user, self.key):
            return False
        self.user = user
        self._cancel_timer()
        return True

    def logout(self) -> None:
        """The login did not become a session after all (its mailbox could not be opened)."""
        if self.user is not None:
            self.limits._logout(self.user, self.key)
            self.user = None

    def userip_refusal(self) -> str:
        return USERIP_EXCEEDED.format(limit=self.limits.userip_limit)

    def close(self) -> None:
        """The connection ended (safe to call again)."""
        self._cancel_timer()
        self.logout()
        if self._open:
            self._open = False
            self.limits._disconnected(self.key)

    def _cancel_timer(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()
