"""
The POP3 server protocol: twisted.mail's C{POP3}, subclassed once.

RFC 1939 commands, RFC 2449 CAPA and response codes, RFC 5034 SASL
(PLAIN, LOGIN).  What is kept from Twisted: the line receiver, the idle
timeout, the portal and the pipelining queue (C{blocked}).  Every command
handler is ours, because Twisted's lists deleted messages in STAT/LIST/UIDL,
breaks dot-stuffing across chunk boundaries, doubles the CR of stored CRLF,
reads message files on the reactor thread, offers APOP without a secret,
keeps RPOP/LAST, and its AUTH only understands CRAM-MD5-style answers.

Message numbers, sizes and UIDLs are fixed at login (RFC 1939); deletions
happen at QUIT only, so a dropped connection deletes nothing.

TLS: STLS (RFC 2595) when the factory has a context factory; anything the
client sent in the clear after STLS, before the handshake, is discarded
(the CVE-2011-0411 command-injection class).  Plain-text passwords are
refused on unencrypted connections unless L{allow_plaintext} says yes.
Logins go through an L{AuthGuard}: per-address delays, bans, and the one
log line per failure that fail2ban reads.
"""

from __future__ import annotations

import base64
import binascii
from collections import deque
from typing import Any, Callable

from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import LoginFailed
from twisted.internet import task
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import ITCPTransport, ITLSTransport
from twisted.logger import Logger
from twisted.mail import pop3
from twisted.python.failure import Failure

from mailserver.auth.throttle import AuthGuard, AuthThrottle, LoginBanned, log_auth_failure
from mailserver.auth import sasl
from mailserver.limits import Connection, LoginLimits
from mailserver.pop3.lock import MaildropInUse
from mailserver.pop3.mailbox import IMaildrop, MessageVanished
from mailserver.pop3.stream import MessageStreamer, TransferStopped
from mailserver.pop3.wire import TopFilter
from mailserver.tls import PlaintextPolicy, is_secure, peer_ip

#: RFC 2449 section 4: a command line is at most 255 octets with its CRLF.
MAX_COMMAND_LENGTH = 253
#: Commands queued while one is running (PIPELINING) before we stop reading.
MAX_QUEUED = 64

_AUTHORIZATION = frozenset({"CAPA", "USER", "PASS", "AUTH", "APOP", "RPOP", "STLS", "QUIT"})
_TRANSACTION = frozenset(
    {"CAPA", "STAT", "LIST", "UIDL", "TOP", "RETR", "DELE", "RSET", "NOOP", "QUIT", "LAST"}
)
_KNOWN = _AUTHORIZATION | _TRANSACTION


#: Whether USER/PASS and SASL PLAIN/LOGIN may be used on a transport: the
#: secure default (C{disable_plaintext_auth = yes}): only over TLS or loopback.
allow_plaintext: Callable[[Any], bool] = PlaintextPolicy()


class POP3Server(pop3.POP3):
    """
    One POP3 session.  L{mailserver.pop3.factory.POP3Factory} sets the
    collaborators below before the connection is made.
    """

    delimiter = b"\n"  # accept bare LF from clients; a trailing CR is stripped
    MAX_LENGTH = 8192  # longer lines end the session

    clock: Any = None
    run_in_thread: Callable[..., Deferred] | None = None
    allow_plaintext: Callable[[Any], bool] = staticmethod(allow_plaintext)
    #: The TLS context factory for STLS (C{mailserver.tls}); None: no STLS.
    context_factory: Any = None
    #: Shared by every listener; None: failures are delayed by
    #: C{auth_failure_delay} and logged here, without bans.
    throttle: AuthThrottle | None = None
    service = "pop3"
    auth_failure_delay = 2.0
    max_bad_commands = 20
    max_auth_failures = 3
    mechanisms: dict[bytes, Callable[[], Any]] = sasl.MECHANISMS
    implementation = "mailserver"
    greeting = "mailserver ready."
    #: The POP3 listeners' connection limits (set by the factory); None: none.
    limits: LoginLimits | None = None

    _log = Logger()

    def __init__(self) -> None:
        self._phase = "AUTHORIZATION"  # AUTHORIZATION, SASL, TRANSACTION, UPDATE
        self._user: bytes | None = None  # USER given, PASS expected
        self._login_name = ""
        self._mechanism: Any = None
        self._sizes: list[int] = []
        self._deleted: set[int] = set()
        self._bad_commands = 0
        self._auth_failures = 0
        self._lost = False
        self._reading_paused = False
        self._incoming: deque[bytes] = deque()  # lines of the data being handled
        self._pending: deque[bytes] = deque()  # queued lines being handled after a wait
        self._receiving = False
        self._guard: AuthGuard | None = None
        self._stats = {"top": [0, 0], "retr": [0, 0], "dele": [0, 0]}
        self.connection: Connection | None = None

    # Connection

    def connectionMade(self) -> None:
        if self.clock is not None:
            self.callLater = self.clock.callLater
        if self.limits is not None:
            address = peer_ip(self.transport)
            self.connection = self.limits.connect(str(address) if address else None)
            if self.connection.refusal is not None:
                greeting = b"-ERR [SYS/TEMP] %s.\r\n" % self.connection.refusal.encode()
                self.connection.refuse(self.transport, greeting, self.clock)
                return
            if self.clock is not None:
                self.connection.start_login_timer(self.clock, self._login_expired)
        if ITCPTransport.providedBy(self.transport):  # also the TLS layer of POP3S
            # A response is written in pieces as the disk delivers them;
            # Nagle + delayed ACK would stall each piece by up to 40 ms.
            self.transport.setTcpNoDelay(True)
        if self.portal is not None and self.throttle is not None and self.clock is not None:
            address = peer_ip(self.transport)
            self._guard = AuthGuard(
                self.portal, self.throttle, self.service, str(address) if address else None, self.clock
            )
        self.setTimeout(self.timeOut)
        self._ok(self.greeting)

    def connectionLost(self, reason: Failure = None) -> None:
        self._lost = True
        if self.connection is not None:
            self.connection.close()
        if self._login_name:
            self._log.info(
                "pop3 session ended user={user} peer={peer} {summary}",
                user=self._login_name,
                peer=self._peer(),
                summary=self._summary(),
            )
        super().connectionLost(reason)

    def _login_expired(self) -> None:
        if self._phase != "TRANSACTION" and not self._lost and not self.transport.disconnecting:
            self._log.info("pop3 no login within the login timeout peer={peer}", peer=self._peer())
            self._err("Disconnected: no login in time.")
            self.transport.loseConnection()

    def timeoutConnection(self) -> None:
        self._log.info("pop3 idle timeout peer={peer}", peer=self._peer())
        self._err("Disconnected for inactivity.")
        self.transport.loseConnection()

    def lineLengthExceeded(self, line: bytes) -> None:
        self._err("Line too long.")
        self.transport.loseConnection()

    def sendLine(self, line: bytes) -> None:
        self.transport.write(line + b"\r\n")

    def _ok(self, text: str | bytes = "") -> None:
        if isinstance(text, str):
            text = text.encode("utf-8")
        self.transport.write(b"+OK " + text + b"\r\n" if text else b"+OK\r\n")

    def _err(self, text: str) -> None:
        self.transport.write(b"-ERR " + text.encode("utf-8") + b"\r\n")

    def _bad(self, text: str) -> None:
        """A bad command: answer, and end the session after too many."""
        self._bad_commands += 1
        if self._bad_commands >= self.max_bad_commands:
            self._log.info("pop3 too many bad commands peer={peer}", peer=self._peer())
            self._err("Too many bad commands.")
            self.transport.loseConnection()
        else:
            self._err(text)

    def _peer(self) -> str:
        peer = self.transport.getPeer()
        return str(getattr(peer, "host", peer))

    # Input, one line at a time, in order (PIPELINING)

    def dataReceived(self, data: bytes) -> None:
        """
        Split into lines and handle them in order (Twisted's
        C{LineOnlyReceiver}, but the lines waiting their turn are kept on
        C{self} so that STLS can throw them away).
        """
        if self.connection is not None and self.connection.refusal is not None:
            return  # refused: nothing the client sends is read
        lines = (self._buffer + data).split(self.delimiter)
        self._buffer = lines.pop(-1)
        self._incoming.extend(lines)
        if self._receiving:
            return
        self._receiving = True
        try:
            while self._incoming and not self.transport.disconnecting:
                line = self._incoming.popleft()
                if len(line) > self.MAX_LENGTH:
                    self.lineLengthExceeded(line)
                    return
                self.lineReceived(line)
        finally:
            self._receiving = False
            self._incoming.clear()
        if len(self._buffer) > self.MAX_LENGTH and not self.transport.disconnecting:
            self.lineLengthExceeded(self._buffer)

    def lineReceived(self, line: bytes) -> None:
        self.resetTimeout()
        if line.endswith(b"\r"):
            line = line[:-1]
        if self.blocked is not None:
            self.blocked.append(line)
            if (
                len(self.blocked) > MAX_QUEUED
                and not self._reading_paused
                and not self.transport.disconnecting
            ):
                self._reading_paused = True
                self.transport.pauseProducing()
            return
        self._dispatch(line)

    def _unblock(self, _: object = None) -> None:
        self._pending.extend(self.blocked or [])
        self.blocked = None
        while self._pending and self.blocked is None and not self._lost:
            self._dispatch(self._pending.popleft())
        if self.blocked is not None:
            self.blocked.extend(self._pending)
            self._pending.clear()
        elif self._reading_paused and not (self._lost or self.transport.disconnecting):
            self._reading_paused = False
            self.transport.resumeProducing()

    def _busy(self, d: Deferred) -> Deferred:
        """Hold further commands until C{d} is done (its result is dropped)."""
        self.blocked = []

        def unexpected(failure: Failure) -> None:
            self._log.failure("pop3 command failed peer={peer}", failure, peer=self._peer())
            if not self._lost:
                self._err("[SYS/TEMP] Internal error.")
                self.transport.loseConnection()

        return d.addErrback(unexpected).addCallback(self._unblock)

    def _dispatch(self, line: bytes) -> None:
        if self.transport.disconnecting or self._phase == "UPDATE":
            return
        if self._phase == "SASL":
            self._sasl_response(line)
            return
        verb, _, rest = line.partition(b" ")
        name = verb.decode("ascii", "replace").upper()
        if len(line) > MAX_COMMAND_LENGTH and name != "AUTH":
            self._bad("Command line too long.")
            return
        if name != "PASS":
            self._user = None  # USER must be followed by PASS
        allowed = _TRANSACTION if self._phase == "TRANSACTION" else _AUTHORIZATION
        if name not in allowed:
            if name in _KNOWN:
                self._bad(f"{name} is not allowed {'after' if self.mbox else 'before'} login.")
            else:
                self._bad("Unknown command.")
            return
        getattr(self, "do_" + name)(rest)

    # AUTHORIZATION state

    def do_CAPA(self, rest: bytes) -> None:
        if rest:
            self._bad("CAPA takes no arguments.")
            return
        self._ok("Capability list follows")
        for capability in self.listCapabilities():
            self.sendLine(capability)
        self.sendLine(b".")

    def listCapabilities(self) -> list[bytes]:
        capabilities = [
            b"TOP",
            b"UIDL",
            b"RESP-CODES",
            b"AUTH-RESP-CODE",
            b"PIPELINING",
        ]
        if self._can_start_tls():
            capabilities.append(b"STLS")
        if self.allow_plaintext(self.transport):
            capabilities.append(b"USER")
            if self.mechanisms:
                capabilities.append(b"SASL " + b" ".join(self.mechanisms))
        capabilities += [b"EXPIRE NEVER", b"IMPLEMENTATION " + self.implementation.encode()]
        return capabilities

    def do_USER(self, rest: bytes) -> None:
        if not rest or b" " in rest:
            self._bad("USER takes one argument.")
        elif not self.allow_plaintext(self.transport):
            self._plaintext_refused("USER")
        else:
            self._user = rest
            self._ok("Send PASS.")

    def do_PASS(self, rest: bytes) -> None:
        user, self._user = self._user, None
        if user is None:
            self._err("No user name given: send USER first.")
        elif not rest:
            self._bad("PASS takes the password as its argument.")
        else:
            self._login(user, rest, "USER")

    def do_AUTH(self, rest: bytes) -> None:
        if not rest:
            self._ok("Supported SASL mechanisms:")
            for name in self.mechanisms:
                self.sendLine(name)
            self.sendLine(b".")
            return
        name, _, initial = rest.partition(b" ")
        mechanism = self.mechanisms.get(name.upper())
        if mechanism is None or b" " in initial:
            self._bad("Unsupported SASL mechanism." if mechanism is None else "Bad AUTH syntax.")
            return
        if not self.allow_plaintext(self.transport):
            self._plaintext_refused("AUTH " + name.upper().decode("ascii", "replace"))
            return
        response: bytes | None = None
        if initial:
            response = b"" if initial == b"=" else _b64decode(initial)
            if response is None:
                self._bad("Invalid base64 data in the initial response.")
                return
        self._mechanism = (name.upper().decode("ascii"), mechanism())
        self._sasl_step(self._mechanism[1].start(response))

    def _sasl_response(self, line: bytes) -> None:
        self._phase = "AUTHORIZATION"
        if line == b"*":
            self._mechanism = None
            self._err("Authentication cancelled.")
            return
        data = _b64decode(line)
        if data is None:
            self._mechanism = None
            self._bad("Invalid base64 data.")
            return
        self._sasl_step(self._mechanism[1].respond(data))

    def _sasl_step(self, step: sasl.Step) -> None:
        if isinstance(step, sasl.Challenge):
            self._phase = "SASL"
            self.transport.write(b"+ " + base64.b64encode(step.data) + b"\r\n")
            return
        method, self._mechanism = self._mechanism[0], None
        if isinstance(step, sasl.Credentials):
            self._login(step.username, step.password, method)
        elif self._guard is not None:
            # Logged, counted and delayed like a wrong password.
            d = self._guard.refuse(None, step.reason)
            self._busy(d.addErrback(self._refuse, b"", method))
        else:
            self._busy(maybeDeferred(self._refuse, Failure(LoginFailed(step.reason)), b"", method))

    def do_APOP(self, rest: bytes) -> None:
        # APOP needs the plain-text password on the server; we keep hashes.
        self._err("APOP is not supported.")

    def do_STLS(self, rest: bytes) -> None:
        """RFC 2595: answer in the clear, then the TLS handshake."""
        if rest:
            self._bad("STLS takes no arguments.")
        elif is_secure(self.transport):
            self._err("Command not permitted when TLS active.")
        elif not self._can_start_tls():
            self._err("STLS is not available.")
        else:
            self._ok("Begin TLS negotiation now.")
            self._discard_cleartext_input()
            self._user = None
            self.transport.startTLS(self.context_factory)

    def _can_start_tls(self) -> bool:
        return (
            self.context_factory is not None
            and ITLSTransport.providedBy(self.transport)
            and not is_secure(self.transport)
        )

    def _discard_cleartext_input(self) -> None:
        """
        Forget whatever the client sent after STLS in the clear: commands
        injected there (CVE-2011-0411) must not run as if sent under TLS.
        A well-behaved client waits for our +OK and sends nothing.
        """
        discarded = len(self._buffer) + sum(len(line) + 1 for line in (*self._incoming, *self._pending))
        self._buffer = b""
        self._incoming.clear()
        self._pending.clear()
        if discarded:
            self._log.warn(
                "pop3 discarded {count} bytes sent in the clear after STLS peer={peer}",
                count=discarded,
                peer=self._peer(),
            )

    def _plaintext_refused(self, command: str) -> None:
        self._log.info(
            "pop3 plaintext authentication refused command={command} peer={peer}",
            command=command,
            peer=self._peer(),
        )
        hint = "use STLS first" if self._can_start_tls() else "use the POP3S port"
        self._err(f"[AUTH] Plaintext authentication disallowed on non-secure connections: TLS required, {hint}.")

    def do_RPOP(self, rest: bytes) -> None:
        self._err("RPOP is not supported.")

    def do_LAST(self, rest: bytes) -> None:
        # Removed from POP3 by RFC 1725; clients use UIDL.
        self._err("LAST is not supported: use UIDL.")

    # Logging in

    def _login(self, user: bytes, password: bytes, method: str) -> None:
        if self.portal is None:
            d: Deferred = maybeDeferred(_no_portal)
        else:
            portal = self._guard if self._guard is not None else self.portal
            d = portal.login(UsernamePassword(user, password), None, pop3.IMailbox)
        d.addCallbacks(self._authenticated, self._refuse, (user, method), None, (user, method))
        self._busy(d)

    def _authenticated(self, result: tuple[Any, Any, Callable[[], None]], user: bytes, method: str):
        interface, mailbox, logout = result
        if self._lost:
            logout()
            return None
        if self.connection is not None and not self.connection.login(_loggable(user).lower()):
            logout()
            self._err("[IN-USE] " + self.connection.userip_refusal() + ".")
            return None
        d = maybeDeferred(mailbox.open) if IMaildrop.providedBy(mailbox) else succeed(None)
        d.addCallback(lambda _: mailbox.listMessages())

        def opened(sizes: list[int]) -> None:
            if self._lost:
                logout()
                return
            self.mbox, self._onLogout = mailbox, logout
            self._sizes = list(sizes)
            self._phase = "TRANSACTION"
            self._login_name = _loggable(user)
            self._log.info(
                "pop3 login user={user} peer={peer} method={method} messages={count}",
                user=self._login_name,
                peer=self._peer(),
                method=method,
                count=len(self._sizes),
            )
            self._ok("Logged in.")

        def not_opened(failure: Failure) -> None:
            logout()
            if self.connection is not None:
                self.connection.logout()
            if failure.check(MaildropInUse):
                self._log.info(
                    "pop3 mailbox in use user={user} peer={peer}",
                    user=_loggable(user),
                    peer=self._peer(),
                )
                self._err("[IN-USE] Mailbox is locked by another POP3 session.")
            else:
                self._log.failure(
                    "pop3 cannot open mailbox peer={peer}", failure, peer=self._peer()
                )
                self._err("[SYS/TEMP] Cannot open the mailbox.")

        return d.addCallbacks(opened, not_opened)

    def _refuse(self, failure: Failure, user: bytes, method: str):
        if not failure.check(LoginFailed):
            self._log.failure("pop3 authentication error peer={peer}", failure, peer=self._peer())
            self._err("[SYS/TEMP] Temporary authentication failure.")
            return None
        self._auth_failures += 1

        def answer() -> None:
            if self._lost:
                return
            if failure.check(LoginBanned):
                self._err("[AUTH] Too many failed logins from your address: try again later.")
            else:
                self._err("[AUTH] Authentication failed.")
            if self._auth_failures >= self.max_auth_failures:
                self._log.info("pop3 too many login failures peer={peer}", peer=self._peer())
                self.transport.loseConnection()

        if self._guard is not None:
            answer()  # the guard has logged and waited
            return None
        reason = failure.getErrorMessage() if failure.value.args else "authentication failed"
        log_auth_failure(self.service, self._peer(), user, reason)
        if self.clock is None or self.auth_failure_delay <= 0:
            answer()
            return None
        # Slow down password guessing: nothing is answered before the delay.
        return task.deferLater(self.clock, self.auth_failure_delay, answer)

    # TRANSACTION state

    def do_STAT(self, rest: bytes) -> None:
        if rest:
            self._bad("STAT takes no arguments.")
            return
        live = [size for n, size in enumerate(self._sizes) if n not in self._deleted]
        self._ok(f"{len(live)} {sum(live)}")

    def do_LIST(self, rest: bytes) -> None:
        if rest:
            index = self._message_number(rest)
            if index is not None:
                self._ok(f"{index + 1} {self._sizes[index]}")
            return
        live = [(n, size) for n, size in enumerate(self._sizes) if n not in self._deleted]
        self._ok(f"{len(live)} messages:")
        self.transport.write(b"".join(b"%d %d\r\n" % (n + 1, size) for n, size in live) + b".\r\n")

    def do_UIDL(self, rest: bytes) -> None:
        if rest:
            index = self._message_number(rest)
            if index is not None:
                self._ok(b"%d %s" % (index + 1, self.mbox.getUidl(index)))
            return
        lines = [
            b"%d %s\r\n" % (n + 1, self.mbox.getUidl(n))
            for n in range(len(self._sizes))
            if n not in self._deleted
        ]
        self._ok("")
        self.transport.write(b"".join(lines) + b".\r\n")

    def do_TOP(self, rest: bytes) -> None:
        number, _, lines = rest.partition(b" ")
        if not number or not lines or b" " in lines:
            self._bad("TOP takes a message number and a line count.")
            return
        if not (lines.isdigit() and len(lines) <= 19):  # fetchmail asks for 99999999
            self._bad("Invalid line count.")
            return
        index = self._message_number(number)
        if index is not None:
            self._busy(self._send(index, TopFilter(int(lines))))

    def do_RETR(self, rest: bytes) -> None:
        index = self._message_number(rest)
        if index is not None:
            self._busy(self._send(index, None))

    def do_DELE(self, rest: bytes) -> None:
        index = self._message_number(rest)
        if index is not None:
            self.mbox.deleteMessage(index)
            self._deleted.add(index)
            self._stats["dele"][0] += 1
            self._ok(f"Message {index + 1} deleted.")

    def do_RSET(self, rest: bytes) -> None:
        if rest:
            self._bad("RSET takes no arguments.")
            return
        self.mbox.undeleteMessages()
        self._deleted.clear()
        self._stats["dele"][0] = 0
        self._ok(f"{len(self._sizes)} messages.")

    def do_NOOP(self, rest: bytes) -> None:
        if rest:
            self._bad("NOOP takes no arguments.")
        else:
            self._ok("")

    def do_QUIT(self, rest: bytes) -> None:
        if self._phase != "TRANSACTION":
            self._ok("Logging out.")
            self.transport.loseConnection()
            return
        self._phase = "UPDATE"
        doomed = len(self._deleted)
        self._stats["dele"][1] = sum(self._sizes[n] for n in self._deleted)
        d = maybeDeferred(self.mbox.sync)

        def done(result: object) -> None:
            self._release()
            if isinstance(result, Failure):
                self._log.failure("pop3 deleting messages failed", result)
                self._err("[SYS/TEMP] Some deleted messages were not removed.")
            else:
                self._ok(f"Logging out, {doomed} messages deleted." if doomed else "Logging out.")
            self.transport.loseConnection()

        self._busy(d.addBoth(done))

    def _release(self) -> None:
        """Give the mailbox back (its lock) before the client can reconnect."""
        logout, self._onLogout = self._onLogout, None
        if logout is not None:
            logout()

    def _message_number(self, arg: bytes) -> int | None:
        """The 0-based index of message number C{arg}, or None after answering -ERR."""
        if not (arg.isdigit() and len(arg) <= 9):
            self._bad("Invalid message number.")
            return None
        index = int(arg) - 1
        if not 0 <= index < len(self._sizes):
            self._err(f"There's no message {int(arg)}.")
            return None
        if index in self._deleted:
            self._err(f"Message {index + 1} is deleted.")
            return None
        return index

    def _send(self, index: int, top: TopFilter | None) -> Deferred:
        started = False

        def opened(fp: Any) -> Deferred:
            nonlocal started
            started = True
            self._ok(f"{self._sizes[index]} octets" if top is None else "Top of message follows.")
            streamer = MessageStreamer(fp, self.transport, self._thread, top, self.resetTimeout)
            return streamer.start()

        def sent(count: int) -> Deferred | None:
            stats = self._stats["top" if top else "retr"]
            stats[0] += 1
            stats[1] += count
            if top is None and IMaildrop.providedBy(self.mbox):
                return self.mbox.markSeen(index).addErrback(
                    lambda f: self._log.failure("pop3 marking message seen failed", f)
                )
            return None

        def failed(failure: Failure) -> None:
            if failure.check(TransferStopped):
                return
            if started:  # mid-response: the only honest answer is to hang up
                self._log.failure("pop3 reading message failed", failure)
                self.transport.loseConnection()
            elif failure.check(MessageVanished):
                self._err(f"[SYS/TEMP] Message {index + 1} was removed by another session.")
            else:
                self._log.failure("pop3 opening message failed", failure)
                self._err(f"[SYS/TEMP] Cannot read message {index + 1}.")

        d = maybeDeferred(self.mbox.getMessage, index)
        return d.addCallback(opened).addCallback(sent).addErrback(failed)

    def _thread(self, f: Callable[..., Any], *args: Any) -> Deferred:
        if self.run_in_thread is None:
            return maybeDeferred(f, *args)
        return self.run_in_thread(f, *args)

    def _summary(self) -> str:
        s = self._stats
        return (
            f"top={s['top'][0]}/{s['top'][1]} retr={s['retr'][0]}/{s['retr'][1]} "
            f"del={s['dele'][0]}/{len(self._sizes)} size={sum(self._sizes)}"
        )


def _loggable(name: bytes) -> str:
    """A client-supplied name made safe for one log line."""
    text = name[:256].decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


def _b64decode(data: bytes) -> bytes | None:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return None


def _no_portal() -> None:
    raise LoginFailed("no portal")
