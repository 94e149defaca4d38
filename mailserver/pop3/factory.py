"""The POP3 listener's protocol factory: one place for a listener's settings."""

from __future__ import annotations

from typing import Any, Callable

from twisted.cred.portal import Portal
from twisted.internet.protocol import ServerFactory

from mailserver.auth.throttle import AuthThrottle
from mailserver.auth import sasl
from mailserver.limits import LoginLimits
from mailserver.pop3.mailbox import RunInThread, in_thread_pool
from mailserver.pop3.server import POP3Server, allow_plaintext


class POP3Factory(ServerFactory):
    """
    Builds L{POP3Server} sessions.

    @param portal: logs users in; asked for C{twisted.mail.pop3.IMailbox}.
    @param reactor: the clock for timeouts and login-failure delays, and
        the thread pool for disk I/O.
    @param timeout: idle seconds before a session is dropped
        (C{pop3_timeout}; RFC 1939 asks for at least 10 minutes).
    @param context_factory: the TLS context for STLS
        (C{mailserver.tls.ReloadableContextFactory}); None: no STLS.  For
        POP3S wrap the factory: C{mailserver.tls.wrap_implicit(factory, ctx)}.
    @param allow_plaintext: C{f(transport) -> bool}: may USER/PASS and SASL
        PLAIN/LOGIN be used on this connection?  Default: only over TLS or
        from loopback (C{mailserver.tls.PlaintextPolicy}).
    @param throttle: the L{AuthThrottle} shared by all listeners (delays,
        bans); default: one of this factory's own.
    @param auth_failure_delay: the first failure's delay of the factory's
        own throttle.
    @param max_bad_commands: bad commands before the session is dropped.
    @param max_auth_failures: failed logins before the session is dropped.
    @param run_in_thread: replaces the reactor's thread pool (tests).
    @param limits: the connection limits shared by the POP3 listeners
        (C{mailserver.limits.LoginLimits}); default: none but a login
        timeout of C{login_timeout}.
    @param login_timeout: seconds a client has to log in (when no
        C{limits} are given).
    """

    protocol = POP3Server
    noisy = False

    def __init__(
        self,
        portal: Portal,
        reactor: Any,
        timeout: float = 600,
        context_factory: Any = None,
        *,
        allow_plaintext: Callable[[Any], bool] = allow_plaintext,
        throttle: AuthThrottle | None = None,
        auth_failure_delay: float = 2.0,
        max_bad_commands: int = 20,
        max_auth_failures: int = 3,
        implementation: str = "mailserver",
        run_in_thread: RunInThread | None = None,
        limits: LoginLimits | None = None,
        login_timeout: float = 60,
    ) -> None:
        self.portal = portal
        self.reactor = reactor
        self.timeout = timeout
        self.context_factory = context_factory
        self.allow_plaintext = allow_plaintext
        self.auth_failure_delay = auth_failure_delay
        self.throttle = throttle if throttle is not None else AuthThrottle(reactor, base_delay=auth_failure_delay)
        self.max_bad_commands = max_bad_commands
        self.max_auth_failures = max_auth_failures
        self.implementation = implementation
        self.run_in_thread = run_in_thread if run_in_thread is not None else in_thread_pool(reactor)
        self.limits = limits if limits is not None else LoginLimits("pop3", login_timeout=login_timeout)
        # twisted.mail.pop3.POP3 reads this to learn the SASL mechanisms.
        self.challengers = dict(sasl.MECHANISMS)

    def buildProtocol(self, addr: Any) -> POP3Server:
        p = self.protocol()
        p.factory = self
        p.portal = self.portal
        p.clock = self.reactor
        p.timeOut = self.timeout
        p.run_in_thread = self.run_in_thread
        p.allow_plaintext = self.allow_plaintext
        p.auth_failure_delay = self.auth_failure_delay
        p.context_factory = self.context_factory
        p.throttle = self.throttle
        p.max_bad_commands = self.max_bad_commands
        p.max_auth_failures = self.max_auth_failures
        p.mechanisms = self.challengers
        p.implementation = self.implementation
        p.limits = self.limits
        return p
