"""
The password checker behind every login (SMTP AUTH PLAIN/LOGIN, POP3
USER/PASS, IMAP LOGIN): one cred checker over an L{IUserDatabase}.

Hashing runs in a thread pool; a password that verified recently against
the same stored hash is answered from a L{VerifiedCache} without hashing.  A failed login is answered
only after a delay, and an unknown user costs the same hash as a wrong
password, so neither guessing speed nor timing tells which users exist.
"""

from __future__ import annotations

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from zope.interface import Interface, implementer

from mailserver.auth.cache import VerifiedCache
from mailserver.auth.schemes import verify
from mailserver.interfaces import IUserDatabase

#: Verified for unknown users so that they cost as much as a real user with
#: a default-cost Argon2id hash; nobody knows its password.
DUMMY_HASH = (
    "ARGON2ID",
    "$argon2id$v=19$m=65536,t=3,p=1$AU1Ow78+T2dNQdrsWiw8hQ$gNOWyu9pFbSnCWAxcrOnDFKkogLciWj2vp4sHh+E0cI",
)


class IFailurePolicy(Interface):
    """
    How failed logins are slowed down.  The seam where per-client growing
    delays and temporary bans go: replace L{FixedFailureDelay}.
    """

    def failed(username):
        """Record a failure for C{username} (str); return the delay in seconds."""

    def succeeded(username):
        """Record a success for C{username} (str)."""


@implementer(IFailurePolicy)
class FixedFailureDelay:
    """Every failed login waits the same C{seconds}."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def failed(self, username: str) -> float:
        return self.seconds

    def succeeded(self, username: str) -> None:
        pass


def _loggable(text: str) -> str:
    """A user-supplied name made safe for one log line."""
    return "".join(c if c.isprintable() and c not in "<>" else _escape(c) for c in text[:256])


def _escape(char: str) -> str:
    return f"\\x{ord(char):02x}" if ord(char) < 0x100 else char.encode("unicode_escape").decode("ascii")


def _as_text(value: bytes | str) -> str | None:
    if isinstance(value, str):
        return value
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return None


@implementer(ICredentialsChecker)
class PasswordChecker:
    """
    Check C{IUsernamePassword} credentials against an L{IUserDatabase}.

    The avatar id is the user record's C{name} encoded as UTF-8 bytes
    (C{b"alice@example.com"}, domain lower-cased, local part as written in
    the passwd-file), whatever case the client typed.

    @param reactor: provides C{IReactorTime} and C{IReactorThreads}.
    @param failure_delay: seconds before a failure is answered, used when
        no C{policy} is given.
    @param dummy: C{(scheme, hash)} verified for unknown users.
    """

    credentialInterfaces = (IUsernamePassword,)
    log = Logger()

    def __init__(
        self,
        userdb: IUserDatabase,
        reactor,
        failure_delay: float = 2.0,
        *,
        policy: IFailurePolicy | None = None,
        dummy: tuple[str, str] = DUMMY_HASH,
        threadpool=None,
        cache: VerifiedCache | None = None,
    ) -> None:
        """
        @param threadpool: where hashes are verified; a pool of its own keeps a
            flood of login attempts from starving mail delivery, which uses
            the reactor's pool.  The reactor's pool when None.
        @param cache: successful verifications remembered (none when None).
        """
        self._userdb = userdb
        self._reactor = reactor
        self._threadpool = threadpool
        self._policy = FixedFailureDelay(failure_delay) if policy is None else policy
        self._dummy = dummy
        self._cache = cache

    def requestAvatarId(self, credentials) -> Deferred[bytes]:
        """Fire with the avatar id, or fail with L{UnauthorizedLogin} after the delay."""
        return Deferred.fromCoroutine(self._check(credentials))

    async def _check(self, credentials) -> bytes:
        name = _as_text(credentials.username)
        password = credentials.password
        if isinstance(password, str):
            password = password.encode("utf-8")
        record = self._userdb.lookup(name) if name else None
        scheme, stored = (record.scheme, record.password) if record is not None else self._dummy
        cache = self._cache if record is not None else None
        if cache is not None and cache.verified(record.name, password, scheme, stored):
            matched = True
        else:
            matched = await deferToThreadPool(
                self._reactor, self._threadpool or self._reactor.getThreadPool(), verify, scheme, stored, password
            )
            if matched and cache is not None:
                cache.remember(record.name, password, scheme, stored)
        shown = _loggable(name if name is not None else credentials.username.decode("utf-8", "backslashreplace"))
        if matched and record is not None:
            self._policy.succeeded(record.name)
            self.log.info("password authentication succeeded: user=<{user}>", user=record.name)
            return record.name.encode("utf-8")
        reason = "unknown user" if record is None else "password mismatch"
        delay = self._policy.failed(record.name if record is not None else shown)
        # Debug only: the connection's AuthGuard (auth/throttle.py) writes the
        # one line per failure, with the service and client address.
        self.log.debug(
            "password authentication failed: user=<{user}>, reason={reason}", user=shown, reason=reason
        )
        if delay > 0:
            await deferLater(self._reactor, delay)
        # The reason reaches the guard's log line; clients are told less.
        raise UnauthorizedLogin(reason)
