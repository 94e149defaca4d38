"""
ManageSieve (RFC 5804): a line protocol with quoted strings and literals
(C{{N+}} and C{{N}}), AUTHENTICATE PLAIN through the cred portal (the same
checker, throttle and plaintext policy as IMAP), STARTTLS, and the script
commands over an L{ISieveScripts} avatar whose disk work runs in a thread.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any, Callable, Iterable

from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.protocol import ServerFactory
from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure

from mailserver.auth.throttle import AuthGuard, AuthThrottle, LoginBanned
from mailserver.interfaces import ISieveScripts
from mailserver.limits import Connection, LoginLimits
from mailserver.tls import PlaintextPolicy, is_secure, peer_ip

log = Logger(namespace="mailserver.managesieve")

RunInThread = Callable[..., Deferred]
_LITERAL = re.compile(rb"\{([0-9]{1,10})(\+?)\}\Z")
_ATOM = re.compile(rb"[^\s\"{}()]+")
#: Most arguments one command may have.
MAX_ARGUMENTS = 8


class _Literal:
    """A literal argument (kept apart from atoms: a literal "LOGOUT" is no command)."""

    def __init__(self, data: bytes) -> None:
        self.data = data


def quote(text: str | bytes) -> bytes:
    """A sieve-string: quoted when it can be, else a literal."""
    data = text.encode("utf-8") if isinstance(text, str) else text
    if b"\r" in data or b"\n" in data or b"\0" in data or len(data) > 1024:
        return b"{%d}\r\n%s" % (len(data), data)
    return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


class ManageSieveServer(LineReceiver, TimeoutMixin):
    delimiter = b"\n"

    def __init__(self, factory: ManageSieveFactory) -> None:
        self.factory = factory
        self.MAX_LENGTH = factory.max_line
        self.callLater = factory.reactor.callLater  # TimeoutMixin on the injected clock
        self.account: Any = None
        self._logout: Callable[[], None] = lambda: None
        self._args: list[bytes | _Literal] = []
        self._literal_left = 0
        self._literal: list[bytes] = []
        self._literal_too_big = False
        self._sasl_pending = False
        self._bad = 0
        self._guard: AuthGuard | None = None
        self._lost = False
        self.connection: Connection | None = None

    # -- connection ------------------------------------------------------
    def connectionMade(self) -> None:
        address = peer_ip(self.transport)
        limits = self.factory.limits
        if limits is not None:
            self.connection = limits.connect(str(address) if address else None)
            if self.connection.refusal is not None:
                greeting = b"BYE (TRYLATER) " + quote(self.connection.refusal) + b"\r\n"
                self.connection.refuse(self.transport, greeting, self.factory.reactor)
                return
            self.connection.start_login_timer(self.factory.reactor, self._login_expired)
        self.setTimeout(self.factory.timeout)
        self._guard = AuthGuard(self.factory.portal, self.factory.throttle, "managesieve",
                                str(address) if address else None, self.factory.reactor)
        self.send_capabilities()

    def _login_expired(self) -> None:
        self.transport.write(b'BYE "Login timeout."\r\n')
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self._lost = True
        if self.connection is not None:
            self.connection.close()
        self.setTimeout(None)
        self._logout()
        self._logout = lambda: None

    def timeoutConnection(self) -> None:
        self.transport.write(b'BYE "Disconnected for inactivity."\r\n')
        self.transport.loseConnection()

    def reply(self, kind: str, text: str = "", code: str | None = None) -> None:
        line = kind.encode()
        if code:
            line += b" (" + code.encode() + b")"
        if text:
            line += b" " + quote(text)
        self.transport.write(line + b"\r\n")

    def capabilities(self) -> list[tuple[str, str]]:
        caps = [("IMPLEMENTATION", self.factory.implementation),
                ("SIEVE", self.factory.sieve_capability)]
        caps.append(("SASL", "PLAIN" if self.factory.allow_plaintext(self.transport) else ""))
        if self.factory.context_factory is not None and not is_secure(self.transport):
            caps.append(("STARTTLS", ""))
        caps.append(("MAXREDIRECTS", str(self.factory.max_redirects)))
        if self.account is not None:
            caps.append(("OWNER", self.account.user))
        caps.append(("VERSION", "1.0"))
        return caps

    def send_capabilities(self) -> None:
        lines = []
        for name, value in self.capabilities():
            lines.append(quote(name) + (b" " + quote(value) if value or name == "SASL" else b""))
        self.transport.write(b"\r\n".join(lines) + b"\r\n")
        self.reply("OK", "mailserver ManageSieve ready.")

    # -- input -------------------------------------------------------------
    def lineLengthExceeded(self, line: bytes) -> None:
        self.transport.write(b'BYE "Line too long."\r\n')
        self.transport.loseConnection()

    def lineReceived(self, line: bytes) -> None:
        self.resetTimeout()
        if line.endswith(b"\r"):
            line = line[:-1]
        error = self._tokens(line)
        if error == "literal":
            return
        if error is None and len(self._args) > MAX_ARGUMENTS:
            error = "Too many arguments"
        args, self._args = self._args, []
        if self._literal_too_big:
            self._literal_too_big = False
            self.reply("NO", f"Literal larger than {self.factory.max_literal} bytes", "QUOTA/MAXSIZE")
            return
        if error is not None:
            self.bad(error)
            return
        if not args and not self._sasl_pending:
            return
        self.dispatch(args)

    def _tokens(self, line: bytes) -> str | None:
        """Add the arguments of C{line} to C{_args}; "literal" when a literal follows."""
        position = 0
        while position < len(line):
            if line[position:position + 1] in (b" ", b"\t"):
                position += 1
                continue
            literal = _LITERAL.match(line, position)
            if literal is not None:
                size = int(literal.group(1))
                self._literal_left = size
                self._literal = []
                if size > self.factory.max_literal:
                    self._literal_too_big = True
                if size == 0:
                    self._args.append(_Literal(b""))  # the command goes on on the next line
                    return "literal"
                self.setRawMode()
                return "literal"
            if line[position:position + 1] == b'"':
                end = position + 1
                out = bytearray()
                while end < len(line) and line[end:end + 1] != b'"':
                    if line[end:end + 1] == b"\\" and end + 1 < len(line):
                        end += 1
                    out += line[end:end + 1]
                    end += 1
                if end >= len(line):
                    return "Unterminated string"
                self._args.append(bytes(out))
                position = end + 1
                continue
            atom = _ATOM.match(line, position)
            if atom is None:
                return "Syntax error"
            self._args.append(atom.group(0))
            position = atom.end()
        return None

    def rawDataReceived(self, data: bytes) -> None:
        self.resetTimeout()
        take = data[: self._literal_left]
        self._literal_left -= len(take)
        if not self._literal_too_big:
            self._literal.append(take)
        if self._literal_left:
            return
        if not self._literal_too_big:
            self._args.append(_Literal(b"".join(self._literal)))
        self._literal = []
        self.setLineMode(data[len(take):])

    def bad(self, text: str) -> None:
        self._bad += 1
        if self._bad >= self.factory.max_bad_commands:
            self.transport.write(b'BYE "Too many bad commands."\r\n')
            self.transport.loseConnection()
            return
        self.reply("NO", text)

    # -- commands ----------------------------------------------------------
    def dispatch(self, args: list[bytes | _Literal]) -> None:
        if self._sasl_pending:
            self._sasl_pending = False
            self.sasl_response(args)
            return
        command = args[0]
        if isinstance(command, _Literal):
            self.bad("Expected a command")
            return
        name = command.decode("ascii", "replace").upper()
        strings = []
        for arg in args[1:]:
            data = arg.data if isinstance(arg, _Literal) else arg
            strings.append(data)
        handler = getattr(self, "do_" + name, None)
        if handler is None:
            self.bad(f"Unknown command {name[:20]}")
            return
        if name not in ("CAPABILITY", "LOGOUT", "NOOP", "STARTTLS", "AUTHENTICATE") and self.account is None:
            self.bad("Authenticate first")
            return
        try:
            result = handler(*strings)
        except TypeError:
            self.bad(f"Wrong arguments for {name}")
            return
        if isinstance(result, Deferred):
            self.pauseProducing()
            result.addErrback(self._command_failed, name)
            result.addBoth(lambda _: None if self._lost else self.resumeProducing())

    def _command_failed(self, failure: Failure, name: str) -> None:
        refused = getattr(failure.value, "code", None), getattr(failure.value, "text", None)
        if refused[1] is not None:
            self.reply("NO", refused[1], refused[0])
            return
        log.failure("managesieve {command} failed", failure, command=name)
        self.reply("NO", "Internal error", "TRYLATER")

    def run(self, function: Callable[..., Any], *args: Any) -> Deferred:
        return self.factory.run_in_thread(function, *args)

    def do_CAPABILITY(self) -> None:
        self.send_capabilities()

    def do_NOOP(self, tag: bytes | None = None) -> None:
        if tag is not None:
            self.transport.write(b"OK (TAG " + quote(tag) + b') "Done"\r\n')
        else:
            self.reply("OK", "Done")

    def do_LOGOUT(self) -> None:
        self.reply("OK", "Logout completed.")
        self.transport.loseConnection()

    def do_STARTTLS(self) -> None:
        if self.account is not None or self.factory.context_factory is None or is_secure(self.transport):
            self.bad("STARTTLS not available")
            return
        self.reply("OK", "Begin TLS negotiation now.")
        self.transport.startTLS(self.factory.context_factory)
        self.send_capabilities()

    def do_AUTHENTICATE(self, mechanism: bytes, initial: bytes | None = None) -> None:
        if self.account is not None:
            self.bad("Already authenticated")
            return
        if mechanism.upper() != b"PLAIN":
            self.reply("NO", "Unsupported mechanism")
            return
        if not self.factory.allow_plaintext(self.transport):
            self.reply("NO", "Plaintext authentication disallowed without TLS", "ENCRYPT-NEEDED")
            return
        if initial is None:
            self._sasl_pending = True
            self.transport.write(b'""\r\n')
            return
        self.plain(initial)

    def sasl_response(self, args: list[bytes | _Literal]) -> None:
        if len(args) != 1:
            self.reply("NO", "Bad SASL response")
            return
        data = args[0].data if isinstance(args[0], _Literal) else args[0]
        if data == b"*":
            self.reply("NO", "Authentication aborted")
            return
        self.plain(data)

    def plain(self, encoded: bytes) -> None:
        try:
            authzid, user, password = base64.b64decode(encoded, validate=True).split(b"\0")
        except (binascii.Error, ValueError):
            self.reply("NO", "Bad PLAIN response")
            return
        if authzid and authzid != user:
            self.reply("NO", "Proxy authentication is not supported")
            return
        assert self._guard is not None
        d = self._guard.login(UsernamePassword(user, password), None, ISieveScripts)
        d.addCallbacks(self._logged_in, self._login_failed)
        self.pauseProducing()
        d.addBoth(lambda _: None if self._lost else self.resumeProducing())

    def _logged_in(self, result: tuple[Any, Any, Callable[[], None]]) -> None:
        _, account, logout = result
        if self._lost:
            logout()
            return
        if self.connection is not None and not self.connection.login(account.user.lower()):
            logout()
            self.reply("NO", self.connection.userip_refusal())
            return
        self.account, self._logout = account, logout
        log.info("managesieve login user={user}", user=account.user)
        self.reply("OK", "Logged in.")

    def _login_failed(self, failure: Failure) -> None:
        if failure.check(LoginBanned, UnauthorizedLogin):
            self.reply("NO", "Authentication failed.")
            return
        log.failure("managesieve authentication error", failure)
        self.reply("NO", "Temporary authentication failure", "TRYLATER")

    def do_UNAUTHENTICATE(self) -> None:
        self._logout()
        if self.connection is not None:
            self.connection.logout()
        self.account, self._logout = None, lambda: None
        self.reply("OK", "Unauthenticated.")

    def do_LISTSCRIPTS(self) -> Deferred:
        def listed(scripts: list[tuple[str, bool]]) -> None:
            lines = [quote(name) + (b" ACTIVE" if active else b"") + b"\r\n" for name, active in scripts]
            self.transport.write(b"".join(lines))
            self.reply("OK", "Listscripts completed.")
        return self.run(self.account.list).addCallback(listed)

    def do_GETSCRIPT(self, name: bytes) -> Deferred:
        def got(data: bytes) -> None:
            self.transport.write(b"{%d}\r\n%s\r\n" % (len(data), data))
            self.reply("OK", "Getscript completed.")
        return self.run(self.account.get, _text(name)).addCallback(got)

    def do_PUTSCRIPT(self, name: bytes, data: bytes) -> Deferred:
        return self.run(self.account.put, _text(name), data).addCallback(lambda _: self.reply("OK", "Putscript completed."))

    def do_CHECKSCRIPT(self, data: bytes) -> Deferred:
        return self.run(self.account.check, data).addCallback(lambda _: self.reply("OK", "Script is valid."))

    def do_HAVESPACE(self, name: bytes, size: bytes) -> Deferred | None:
        if not size.isdigit() or len(size) > 10:
            self.bad("HAVESPACE needs a number")
            return None
        return self.run(self.account.have_space, _text(name), int(size)).addCallback(
            lambda _: self.reply("OK", "Putscript would succeed."))

    def do_SETACTIVE(self, name: bytes) -> Deferred:
        return self.run(self.account.set_active, _text(name)).addCallback(lambda _: self.reply("OK", "Setactive completed."))

    def do_DELETESCRIPT(self, name: bytes) -> Deferred:
        return self.run(self.account.delete, _text(name)).addCallback(lambda _: self.reply("OK", "Deletescript completed."))

    def do_RENAMESCRIPT(self, old: bytes, new: bytes) -> Deferred:
        return self.run(self.account.rename, _text(old), _text(new)).addCallback(
            lambda _: self.reply("OK", "Renamescript completed."))


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


class ManageSieveFactory(ServerFactory):
    """
    Builds L{ManageSieveServer} sessions.

    @param portal: asked for L{ISieveScripts}.
    @param sieve_extensions: the Sieve extensions the script checker accepts
        (C{service.py} gives C{mailserver.sieve.checker.EXTENSIONS}); the
        SIEVE capability names them, comparators left out (RFC 5804 1.7).
    @param reactor: the clock (timeouts, throttle) and the thread pool.
    @param context_factory: TLS for STARTTLS (None: not offered).
    @param allow_plaintext: C{f(transport)}: may PLAIN be used here (TLS or loopback by default)?
    @param limits: connections per address, user+IP sessions, login deadline (C{mailserver.limits}).
    """

    noisy = False

    def __init__(
        self, portal: Any, reactor: Any, *, sieve_extensions: Iterable[str], context_factory: Any = None,
        allow_plaintext: Callable[[Any], bool] = PlaintextPolicy(), throttle: AuthThrottle | None = None,
        timeout: float = 600, max_literal: int = 1 << 20, max_line: int = 8192, max_redirects: int = 4,
        max_bad_commands: int = 10, run_in_thread: RunInThread | None = None, implementation: str = "mailserver",
        limits: LoginLimits | None = None,
    ) -> None:
        self.limits = limits
        self.portal = portal
        self.sieve_capability = " ".join(sorted(e for e in sieve_extensions if not e.startswith("comparator-")))
        self.reactor = reactor
        self.context_factory = context_factory
        self.allow_plaintext = allow_plaintext
        self.throttle = throttle if throttle is not None else AuthThrottle(reactor)
        self.timeout = timeout
        self.max_literal = max_literal
        self.max_line = max_line
        self.max_redirects = max_redirects
        self.max_bad_commands = max_bad_commands
        if run_in_thread is None:
            from twisted.internet.threads import deferToThreadPool

            def run_in_thread(function: Callable[..., Any], *args: Any) -> Deferred:
                return deferToThreadPool(reactor, reactor.getThreadPool(), function, *args)
        self.run_in_thread = run_in_thread
        self.implementation = implementation

    def buildProtocol(self, addr: Any) -> ManageSieveServer:
        protocol = ManageSieveServer(self)
        return protocol


def run_now(function: Callable[..., Any], *args: Any) -> Deferred:
    """A L{RunInThread} that runs at once (tests)."""
    return maybeDeferred(function, *args)
