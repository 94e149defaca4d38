"""
Greylisting, as Postgrey does it.

A triplet is (client network, sender, recipient): the client's /24 (IPv4)
or /64 (IPv6), so a sender's pool of outgoing hosts counts as one, and the
addresses without case.  A new triplet is deferred (450 4.2.0); a retry
after C{greylist_delay} and within C{greylist_retry_window} passes, and
the triplet then passes for as long as it keeps being seen within
C{greylist_max_age}.  A client network whose mail passed
C{greylist_auto_whitelist_clients} times is not greylisted any more.

L{GreylistState} is pure (time is an argument).  L{Greylist} adds the
state file C{greylist.json} in C{data_directory}: loaded at start, written
atomically (tmp, fsync, rename) in a thread, at most one write in flight
and changes coalesced.  The clock is injected.
"""

from __future__ import annotations

import ipaddress
import json
import os
from dataclasses import dataclass
from typing import Any, Callable

from twisted.internet import defer, threads
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from mailserver.durable import replace_atomically
from mailserver.errors import MailError

log = Logger()

STATE_FILE = "greylist.json"
#: Seconds between a change and its save: the state is serialised on the reactor, once per batch of changes.
SAVE_DELAY = 1.0
STATE_VERSION = 1
#: Most triplets and client networks kept; the least recently seen go first.
MAX_ENTRIES = 200_000

PASS_NEW, PASS_KNOWN, PASS_WHITELISTED = "retried", "known", "auto-whitelisted"
DEFER_NEW, DEFER_EARLY = "new", "early retry"


@dataclass(frozen=True)
class GreylistSettings:
    delay: float = 300.0
    retry_window: float = 2 * 86400.0
    max_age: float = 35 * 86400.0
    auto_whitelist_clients: int = 5

    @classmethod
    def from_config(cls, config: Any) -> "GreylistSettings":
        return cls(
            float(config.greylist_delay), float(config.greylist_retry_window),
            float(config.greylist_max_age), int(config.greylist_auto_whitelist_clients),
        )  # fmt: skip


@dataclass(frozen=True)
class Decision:
    """Pass or defer, why, and (when deferred) the seconds until a retry passes."""

    passed: bool
    reason: str
    wait: float = 0.0

    def error(self, recipient: str) -> MailError | None:
        """Postfix's reply for a deferred triplet (as with Postgrey's DEFER_IF_PERMIT)."""
        if self.passed:
            return None
        return MailError(450, "4.2.0", f"<{recipient}>: Recipient address rejected: Greylisted,"
                                       f" try again in {max(1, int(self.wait))} seconds")  # fmt: skip


def client_network(address: str) -> str:
    """The client's /24 (IPv4, also IPv4-mapped) or /64 (IPv6)."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    prefix = 24 if ip.version == 4 else 64
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


def triplet(address: str, sender: str, recipient: str) -> str:
    return f"{client_network(address)} {sender.lower()} {recipient.lower()}"


class GreylistState:
    """
    Pure greylisting state.  C{triplets}: key -> [first seen, last seen,
    passed (0/1)]; C{clients}: network -> [passes, last seen].
    """

    def __init__(self, settings: GreylistSettings, max_entries: int = MAX_ENTRIES) -> None:
        self.settings = settings
        self.max_entries = max_entries
        self.triplets: dict[str, list[float]] = {}
        self.clients: dict[str, list[float]] = {}

    def check(self, address: str, sender: str, recipient: str, now: float) -> Decision:
        """Decide for one RCPT, and record it."""
        s = self.settings
        network = client_network(address)
        client = self.clients.get(network)
        if client is not None and now - client[1] > s.max_age:
            client = None
            del self.clients[network]
        if client is not None and s.auto_whitelist_clients and client[0] >= s.auto_whitelist_clients:
            client[1] = now
            return Decision(True, PASS_WHITELISTED)
        key = triplet(address, sender, recipient)
        entry = self.triplets.get(key)
        if entry is not None and entry[2] and now - entry[1] > s.max_age:
            entry = None  # forgotten
        if entry is not None and not entry[2] and now - entry[0] > s.delay + s.retry_window:
            entry = None  # retried too late: start again
        if entry is None:
            self._put(self.triplets, key, [now, now, 0])
            return Decision(False, DEFER_NEW, s.delay)
        entry[1] = now
        if entry[2]:
            self._count(network, now)
            return Decision(True, PASS_KNOWN)
        waited = now - entry[0]
        if waited < s.delay:
            return Decision(False, DEFER_EARLY, s.delay - waited)
        entry[2] = 1
        self._count(network, now)
        return Decision(True, PASS_NEW)

    def _count(self, network: str, now: float) -> None:
        client = self.clients.get(network) or [0, now]
        client[0] += 1
        client[1] = now
        self._put(self.clients, network, client)

    def _put(self, table: dict[str, list[float]], key: str, value: list[float]) -> None:
        table[key] = value
        if len(table) > self.max_entries:  # bounded: drop the least recently seen tenth
            by_age = sorted(table, key=lambda k: table[k][1])
            for old in by_age[: max(1, len(table) // 10)]:
                del table[old]

    def expire(self, now: float) -> int:
        """Forget entries not seen within max_age (and unpassed ones past the retry window)."""
        s = self.settings
        before = len(self.triplets) + len(self.clients)
        self.triplets = {
            k: v for k, v in self.triplets.items()
            if (now - v[1] <= s.max_age if v[2] else now - v[0] <= s.delay + s.retry_window)
        }  # fmt: skip
        self.clients = {k: v for k, v in self.clients.items() if now - v[1] <= s.max_age}
        return before - len(self.triplets) - len(self.clients)

    def to_json(self) -> bytes:
        data = {"version": STATE_VERSION, "triplets": self.triplets, "clients": self.clients}
        return json.dumps(data, separators=(",", ":")).encode()

    def load_json(self, data: bytes) -> None:
        """Replace the state from L{to_json} output; ValueError if it is not ours."""
        parsed = json.loads(data)
        if not isinstance(parsed, dict) or parsed.get("version") != STATE_VERSION:
            raise ValueError("not a version 1 greylist state")
        triplets, clients = parsed.get("triplets"), parsed.get("clients")
        if not isinstance(triplets, dict) or not isinstance(clients, dict):
            raise ValueError("greylist state without triplets/clients")
        ok3 = {k: v for k, v in triplets.items() if _numbers(v, 3)}
        ok2 = {k: v for k, v in clients.items() if _numbers(v, 2)}
        self.triplets, self.clients = ok3, ok2


def _numbers(value: Any, length: int) -> bool:
    return (
        isinstance(value, list) and len(value) == length
        and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in value)
    )  # fmt: skip


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


class Greylist:
    """L{GreylistState} persisted in C{directory}/greylist.json."""

    def __init__(
        self,
        settings: GreylistSettings,
        directory: str,
        clock: IReactorTime,
        in_thread: Callable[..., defer.Deferred[Any]] = threads.deferToThread,
    ) -> None:
        self.state = GreylistState(settings)
        self.path = os.path.join(directory, STATE_FILE)
        self.clock = clock
        self._in_thread = in_thread
        self._dirty = False
        self._writing: defer.Deferred[None] | None = None
        self._delayed: Any = None  # the IDelayedCall of the next save
        self._waiters: list[defer.Deferred[None]] = []

    async def load(self) -> None:
        """Read the state file (in a thread); a damaged file is logged and started afresh."""
        data = await self._in_thread(_read, self.path)
        if data is None:
            return
        try:
            self.state.load_json(data)
        except ValueError as e:
            log.warn("greylist: ignoring damaged {path}: {error}", path=self.path, error=e)
        self.state.expire(self.clock.seconds())

    def check(self, address: str, sender: str, recipient: str) -> Decision:
        """Decide now, and schedule the state to be saved."""
        decision = self.state.check(address, sender, recipient, self.clock.seconds())
        self._dirty = True
        self._save_soon()
        return decision

    def expire(self) -> int:
        """Forget old entries now (call it periodically); saves if anything went."""
        gone = self.state.expire(self.clock.seconds())
        if gone:
            self._dirty = True
            self._save_soon()
        return gone

    def _save_soon(self) -> None:
        """Save SAVE_DELAY seconds from now: the changes of that second share one serialisation."""
        if self._dirty and self._writing is None and self._delayed is None:
            self._delayed = self.clock.callLater(SAVE_DELAY, self._write)

    def _write(self) -> None:
        self._delayed = None
        if self._writing is not None or not self._dirty:
            return
        self._dirty = False
        data = self.state.to_json()
        self._writing = self._in_thread(replace_atomically, self.path, data)
        self._writing.addErrback(lambda f: log.failure("greylist: cannot save {path}", f, path=self.path))
        self._writing.addBoth(self._written)

    def _written(self, _: Any) -> None:
        self._writing = None
        if self._waiters:
            self._write()  # someone waits in flush(): no delay
        else:
            self._save_soon()
        if self._writing is None:
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                waiter.callback(None)

    def flush(self) -> defer.Deferred[None]:
        """Fires when every change so far is on disk (or its write has failed and been logged)."""
        if self._delayed is not None:
            self._delayed.cancel()
            self._delayed = None
        self._write()
        if self._writing is None:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self._waiters.append(d)
        return d
