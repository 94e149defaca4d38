"""
The IMAP4rev1 server: twisted.mail's C{IMAP4Server}, subclassed once.

We keep twisted's connection handling (greeting, timeouts, raw-mode
literal reading, SASL challengers, avatar/logout bookkeeping) and replace
its command layer, which cannot read literals outside a few arguments, has
no LITERAL+, UIDPLUS, MOVE or ENABLE, and sends EXPUNGE at any time:

- a command line and its literals are collected first (L{parse_command}),
  a literal over the limit being refused before it is read, then parsed by
  L{syntax.Reader} and run by a handler from C{session_commands},
  C{folder_commands} or C{message_commands};
- while a command runs, input is paused, so pipelined commands wait and
  literals of the next command are never mistaken for lines;
- before each tagged OK in the selected state the session syncs its view
  of the folder (EXPUNGE only where RFC 3501 7.4.1 allows it);
- STARTTLS (RFC 3501 6.2.1, RFC 2595) with whatever the client pipelined
  behind it in the clear thrown away (CVE-2011-0411); implicit TLS (IMAPS)
  by wrapping the factory with C{mailserver.tls.wrap_implicit};
- passwords only over TLS or from loopback unless configured otherwise
  (Dovecot's C{disable_plaintext_auth}: C{LOGINDISABLED}, C{NO
  [PRIVACYREQUIRED]});
- logins go through a per-connection C{mailserver.auth.throttle.AuthGuard}:
  one fail2ban line per failure, growing delays and bans per client address.

Disk work happens in the thread pool (see C{mailserver.imap.account});
small FETCH items come straight from the folder index.
"""

from __future__ import annotations

import re
import zlib
from typing import Any, Awaitable, Callable

from twisted.cred.error import UnauthorizedLogin
from twisted.internet import protocol
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer, ITCPTransport
from twisted.logger import Logger
from twisted.mail import imap4
from zope.interface import implementer

from mailserver.auth.challengers import CHALLENGERS
from mailserver.auth.throttle import AuthGuard, AuthThrottle, LoginBanned
from mailserver.imap import folder_commands, message_commands, ordering_commands, quota_commands, session_commands
from mailserver.imap.compress import DeflateTransport, Inflater
from mailserver.imap.literal import LiteralReader
from mailserver.imap.mailbox import MailboxReset, SelectedMailbox
from mailserver.imap.replies import Refused, reply_text as _text
from mailserver.imap.search import BadCharset, CHARSETS
from mailserver.imap.session_commands import PLAINTEXT_MECHANISMS
from mailserver.imap.syntax import Command, Literal, Literal8, ParseError, Reader
from mailserver.limits import Connection, LoginLimits
from mailserver.store.flags import FlagError
from mailserver.store.folder_names import FolderError
from mailserver.tls import PlaintextPolicy, is_secure, peer_ip

log = Logger()

_LITERAL = re.compile(rb"(~?)\{(\d{1,12})(\+?)\}\Z")  # ~: literal8 (RFC 3516)
_TAG_BAD = frozenset(b'(){ %*"\\+') | frozenset(range(0x20)) | {0x7F}

#: Default limits (Dovecot's imap_max_line_length is 64k; APPEND up to 50 MiB).
LITERAL_LIMIT = 50 * 1024 * 1024
STRING_LITERAL_LIMIT = 64 * 1024
COMMAND_LIMIT = 256 * 1024
IDLE_TIMEOUT = 30 * 60
PREAUTH_TIMEOUT = 60
LOGIN_FAILURE_DELAY = 2.0
#: Failed logins after which the connection is closed.
MAX_FAILED_LOGINS = 3
#: A literal must arrive within this many seconds, and at this many octets a second.
LITERAL_DEADLINE = 60 * 60
LITERAL_MIN_RATE = 500
#: Before login only small literals (a LOGIN name or password) are read: each
#: at most this many octets, and the command at most PREAUTH_COMMAND_LIMIT.
PREAUTH_LITERAL_LIMIT = 8 * 1024
PREAUTH_COMMAND_LIMIT = 64 * 1024


@implementer(IPushProducer)
class _Throttle:
    """Registered on the transport during big responses: tells us when to stop writing."""

    def __init__(self) -> None:
        self.paused = False
        self._waiting: Deferred | None = None

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            waiting.callback(None)

    def stopProducing(self) -> None:
        self.resumeProducing()

    def wait(self) -> Deferred:
        if not self.paused:
            d: Deferred = Deferred()
            d.callback(None)
            return d
        self._waiting = Deferred()
        return self._waiting


Handler = Callable[["IMAPServer", Command], Awaitable[bytes | None]]


class IMAPServer(imap4.IMAP4Server):
    """One IMAP connection."""

    IDENT = b"mailserver IMAP4rev1 ready"
    MAX_LENGTH = 65536  # longest command line (without literals)

    def __init__(
        self,
        notifier: Any = None,
        clock: Any = None,
        timeout: int = IDLE_TIMEOUT,
        literal_limit: int = LITERAL_LIMIT,
        string_literal_limit: int = STRING_LITERAL_LIMIT,
        context_factory: Any = None,
        preauth_timeout: int = PREAUTH_TIMEOUT,
        allow_plaintext: Callable[[Any], bool] = PlaintextPolicy(),
        throttle: AuthThrottle | None = None,
        literal_deadline: float = LITERAL_DEADLINE,
        literal_min_rate: int = LITERAL_MIN_RATE,
    ) -> None:
        super().__init__(
            chal=dict(CHALLENGERS),
            contextFactory=context_factory,
        )
        self.notifier = notifier
        self.clock = clock
        self.timeOut = preauth_timeout or timeout  # 0: no login deadline, the idle timeout only
        self.POSTAUTH_TIMEOUT = timeout
        self.literal_limit = literal_limit
        self.string_literal_limit = string_literal_limit
        self.literal_deadline = literal_deadline
        self.literal_min_rate = literal_min_rate
        self.limits: LoginLimits | None = None  # set by the factory
        self.connection: Connection | None = None
        self.selected: SelectedMailbox | None = None
        #: Extensions the client turned on (ENABLE, or implicitly): CONDSTORE, QRESYNC.
        self.enabled: set[str] = set()
        self._inflater: Inflater | None = None
        self._segments: list[bytes] = []
        self._command_size = 0
        self._line_waiter: Deferred | None = None
        self._idling = False
        self._idle_unsubscribe: Callable[[], None] | None = None
        self.failed_logins = 0
        self.allow_plaintext = allow_plaintext
        self.throttle = throttle
        self.peer_ip: str | None = None
        self.closed = False
        self.commands: dict[str, tuple[Handler, frozenset[str]]] = dict(session_commands.COMMANDS)
        self.commands.update(folder_commands.COMMANDS)
        self.commands.update(message_commands.COMMANDS)
        self.commands.update(quota_commands.COMMANDS)
        self.commands.update(ordering_commands.COMMANDS)

    # ------------------------------------------------------------ capabilities

    def connectionMade(self) -> None:
        address = peer_ip(self.transport)
        self.peer_ip = str(address) if address is not None else None
        if self.limits is not None:
            self.connection = self.limits.connect(self.peer_ip)
            if self.connection.refusal is not None:
                self.state = "logout"
                self.connection.refuse(self.transport, b"* BYE [UNAVAILABLE] %s\r\n"
                                       % self.connection.refusal.encode(), self.clock)
                return
            if self.clock is not None:
                self.connection.start_login_timer(self.clock, self._login_expired)
        if ITCPTransport.providedBy(self.transport) and hasattr(self.transport, "setTcpNoDelay"):  # also IMAPS
            # Untagged data and the tagged OK are often written on either side
            # of a thread-pool round trip: Nagle + delayed ACK stalled the
            # second write by 40 ms (a CHANGEDSINCE resync took 52 ms, not 10).
            self.transport.setTcpNoDelay(True)
        if self.portal is not None and self.throttle is not None and not isinstance(self.portal, AuthGuard):
            self.portal = AuthGuard(self.portal, self.throttle, "imap", self.peer_ip, self.clock)
        super().connectionMade()  # the greeting lists the capabilities

    def dataReceived(self, data: bytes) -> None:
        if self.connection is not None and self.connection.refusal is not None:
            return  # refused: nothing the client sends is read
        if self._inflater is None or not data:
            # b"": LineReceiver.resumeProducing asking for its buffered lines
            super().dataReceived(data)
            return
        try:
            for piece in self._inflater.feed(data):
                if self.closed or self.transport.disconnecting:
                    return
                super().dataReceived(piece)
        except zlib.error:
            log.info("imap: broken DEFLATE stream rip={rip}", rip=self.peer_ip)
            self.transport.loseConnection()

    def setLineMode(self, extra: bytes = b"") -> None:
        """
        Back to lines after a literal.  C{extra} (what followed the literal) is
        already inflated: it goes past L{dataReceived}, never through the
        inflater a second time.
        """
        if self._inflater is None or not extra:
            super().setLineMode(extra)
            return
        super().setLineMode()
        super().dataReceived(extra)

    @property
    def compressing(self) -> bool:
        return self._inflater is not None

    def start_compression(self) -> None:
        """COMPRESS DEFLATE (RFC 4978), after its tagged OK: both directions deflated from here."""
        discarded = len(self.clearLineBuffer())
        if discarded:
            log.warn("imap: discarded {count} bytes sent before COMPRESS was answered rip={rip}",
                     count=discarded, rip=self.peer_ip)
        self.transport = DeflateTransport(self.transport)
        self._inflater = Inflater()

    def _login_expired(self) -> None:
        if self.state == "unauth" and self.transport is not None and not self.transport.disconnecting:
            log.info("imap: no login within the login timeout rip={rip}", rip=self.peer_ip)
            self.sendLine(b"* BYE Disconnected: no login in time")
            self.transport.loseConnection()

    def listCapabilities(self) -> list[bytes]:
        caps = [b"IMAP4rev1", b"IMAP4rev2", b"LITERAL+", b"SASL-IR", b"ID", b"ENABLE", b"IDLE", b"NAMESPACE",
                b"UIDPLUS", b"MOVE", b"SPECIAL-USE", b"CHILDREN", b"UNSELECT", b"CONDSTORE", b"QRESYNC",
                b"SORT", b"THREAD=ORDEREDSUBJECT", b"THREAD=REFERENCES", b"ESEARCH", b"SEARCHRES",
                b"STATUS=SIZE", b"LIST-EXTENDED", b"LIST-STATUS", b"BINARY",
                b"APPENDLIMIT=%d" % self.literal_limit, *quota_commands.CAPABILITIES]
        if self.state != "unauth" and not self.compressing:
            caps.append(b"COMPRESS=DEFLATE")
        if self.state == "unauth":
            # RFC 3501 6.2.1: STARTTLS only before TLS; the client asks
            # again afterwards and then sees the mechanisms instead.
            if self.can_start_tls():
                caps.append(b"STARTTLS")
            plaintext = self.plaintext_allowed()
            caps += [b"AUTH=" + name for name in self.challengers
                     if plaintext or name not in PLAINTEXT_MECHANISMS]
            if not plaintext:
                caps.append(b"LOGINDISABLED")
        return caps

    # ------------------------------------------------------------ TLS and passwords

    def is_secure(self) -> bool:
        """Whether this connection is encrypted (IMAPS, or after STARTTLS)."""
        return self.startedTLS or is_secure(self.transport)

    def can_start_tls(self) -> bool:
        return bool(self.ctx) and self.canStartTLS and not self.is_secure()

    def plaintext_allowed(self) -> bool:
        """May a password travel on this connection (LOGIN, AUTHENTICATE PLAIN/LOGIN)?"""
        return self.startedTLS or self.allow_plaintext(self.transport)

    def start_tls(self) -> None:
        """
        Start the TLS handshake after the tagged OK to STARTTLS.

        Whatever the client sent after STARTTLS arrived in the clear and may
        have been injected by a man in the middle (CVE-2011-0411): it is
        dropped, not run as if it had come over TLS.  A correct client
        waits for our OK and sends nothing before the handshake.
        """
        discarded = len(self.clearLineBuffer())
        if discarded:
            log.warn(
                "imap: discarded {count} bytes sent in the clear after STARTTLS rip={rip}",
                count=discarded, rip=self.peer_ip,
            )
        self.transport.startTLS(self.ctx)
        self.startedTLS = True

    # ------------------------------------------------------------ reading commands

    def lineLengthExceeded(self, line: bytes) -> None:
        self.sendLine(b"* BYE Command line too long")
        self.transport.loseConnection()

    def parse_command(self, line: bytes) -> None:
        self._segments = []
        self._command_size = 0
        self._continue_command(line)

    def parse_literal(self, line: bytes) -> None:
        """The rest of a command line after a literal."""
        self._continue_command(line)

    def _continue_command(self, line: bytes) -> None:
        self._command_size += len(line)
        match = _LITERAL.search(line)
        if match is None:
            self._segments.append(line)
            self.parseState = "command"
            self._execute(self._segments)
            return
        self._segments.append(line[:match.start()])
        size = int(match.group(2))
        synchronizing = not match.group(3)
        kind = Literal8 if match.group(1) else Literal
        first = self._segments[0]
        words = first.split(b" ", 3)
        tag = words[0]
        is_append = len(words) > 1 and words[1].upper() == b"APPEND"
        limit = self.literal_limit if is_append else self.string_literal_limit
        self._command_size += size
        if self.state == "unauth" and (size > PREAUTH_LITERAL_LIMIT or self._command_size > PREAUTH_COMMAND_LIMIT):
            self._refuse_preauth_literal(tag, synchronizing)
            return
        if size > limit or (not is_append and self._command_size > COMMAND_LIMIT):
            self.parseState = "command"
            if not synchronizing:
                self.sendBadResponse(tag, b"Literal too big (limit %d octets)" % limit)
                self.sendLine(b"* BYE Too much data")
                self.transport.loseConnection()
            elif is_append:
                self.sendNegativeResponse(tag, b"[TOOBIG] Message too big (limit %d octets)" % limit)
            else:
                self.sendBadResponse(tag, b"Literal too big (limit %d octets)" % limit)
            return
        if synchronizing:
            self.sendContinuationRequest(b"Ready for literal data")
        self.parseState = "literal"

        def done(data: bytes) -> None:
            self._segments.append(kind(data))

        self._pendingLiteral = LiteralReader(
            size, done, self.clock, self.literal_deadline, self.literal_min_rate, self._literal_expired
        )
        if size == 0:
            self._pendingLiteral.write(b"")
        else:
            self.setRawMode()

    def _refuse_preauth_literal(self, tag: bytes, synchronizing: bool) -> None:
        """
        A big literal before login: never read.  C{{n}} gets BAD instead of
        the continuation; C{{n+}} is already on its way, so BYE (RFC 7888 3).
        """
        log.info("imap: literal too big before login rip={rip}", rip=self.peer_ip)
        self.parseState = "command"
        self._segments = []
        self.sendBadResponse(tag, b"Literal too big before login (limit %d octets)" % PREAUTH_LITERAL_LIMIT)
        if not synchronizing:
            self.sendLine(b"* BYE Too much data before login")
            self.transport.loseConnection()

    def _literal_expired(self) -> None:
        """The literal being read ran out of time: BYE, and the command never runs."""
        log.info("imap: literal data too slow rip={rip}", rip=self.peer_ip)
        self._segments = []
        if self.transport is not None and not self.transport.disconnecting:
            self.sendLine(b"* BYE Literal data arrived too slowly")
            self.transport.loseConnection()

    def _execute(self, segments: list[bytes]) -> None:
        if self.closed:
            return  # pipelined behind a command that outlived the connection
        first = segments[0]
        if not first.strip() and len(segments) == 1:
            self.sendBadResponse(None, b"Empty command line")
            return
        tag, _, rest = first.partition(b" ")
        if not tag or any(b in _TAG_BAD for b in tag):
            self.sendBadResponse(None, b"Invalid tag")
            return
        name_bytes, _, rest = rest.partition(b" ")
        name = name_bytes.decode("ascii", "replace").upper()
        if not name:
            self.sendBadResponse(tag, b"Missing command")
            return
        reader = Reader([rest] + segments[1:])
        utf8 = "IMAP4REV2" in self.enabled
        command = Command(tag, name, reader, utf8=utf8)
        if name == "UID":
            try:
                sub = reader.atom("UID command").upper()
                if sub not in ("FETCH", "STORE", "SEARCH", "COPY", "MOVE", "EXPUNGE", "SORT", "THREAD"):
                    raise ParseError(f"unknown UID command {sub}")
                if not reader.at_end():
                    reader.sp()
            except ParseError as e:
                self.sendBadResponse(tag, str(e).encode())
                return
            command = Command(tag, sub, reader, uid=True, utf8=utf8)
        entry = self.commands.get(command.name)
        if entry is None:
            self.sendBadResponse(tag, b"Unknown command " + command.name.encode("ascii", "replace")[:40])
            return
        handler, states = entry
        if self.state not in states:
            why = {"unauth": b"Log in first", "auth": b"No mailbox selected"}.get(self.state, b"Not allowed now")
            self.sendBadResponse(tag, command.name.encode() + b" not allowed in this state: " + why)
            return
        self.pauseProducing()
        Deferred.fromCoroutine(self._run(handler, command)).addBoth(self._finished)

    def _finished(self, result: Any) -> None:
        transport = self.transport
        if transport is None or self.closed:
            return
        if transport.disconnecting:
            # Closing (LOGOUT, BYE) under implicit TLS: the TLS layer waits
            # for the client's close_notify, so let it read again or the
            # connection stays open for ever; but run no further command
            # (we stay paused).
            if is_secure(transport):
                transport.resumeProducing()
            return
        self.resumeProducing()

    async def _run(self, handler: Handler, command: Command) -> None:
        tag = command.tag
        try:
            text = await handler(self, command)
            if text is None:
                return
            if self.selected is not None and command.name not in _NO_SYNC:
                allow = command.uid or command.name not in ("FETCH", "STORE", "SEARCH", "SORT", "THREAD")
                self.send_lines(await self.selected.sync(allow_expunge=allow))
            self.sendPositiveResponse(tag, text)
        except ParseError as e:
            self.sendBadResponse(tag, _text(e))
        except BadCharset:
            self.sendNegativeResponse(tag, b"[BADCHARSET (" + " ".join(CHARSETS).encode() + b")] Unsupported charset")
        except Refused as e:
            code = b"[" + e.code.encode() + b"] " if e.code else b""
            self.sendNegativeResponse(tag, code + e.text.encode("utf-8", "replace"))
        except FolderError as e:
            code = b"[" + e.code.encode() + b"] " if e.code else b""
            self.sendNegativeResponse(tag, code + _text(e))
        except FlagError as e:
            self.sendNegativeResponse(tag, b"[CANNOT] " + _text(e))
        except MailboxReset as e:
            self.sendLine(b"* BYE " + _text(e))
            self.transport.loseConnection()
        except LoginBanned:
            self.sendNegativeResponse(tag, b"[UNAVAILABLE] Too many failed logins from your address, try again later")
            self.failed_logins += 1
            if self.failed_logins >= MAX_FAILED_LOGINS:
                self.sendLine(b"* BYE Too many failed logins")
                self.transport.loseConnection()
        except UnauthorizedLogin:
            self.sendNegativeResponse(tag, b"[AUTHENTICATIONFAILED] Authentication failed")
            self.failed_logins += 1
            if self.failed_logins >= MAX_FAILED_LOGINS:
                self.sendLine(b"* BYE Too many failed logins")
                self.transport.loseConnection()
        except OSError as e:
            log.error("imap: {command} failed: {error}", command=command.name, error=e)
            self.sendNegativeResponse(tag, b"[SERVERBUG] Internal error, see the server log")
        except Exception:  # the session must survive a bug in one command
            if self.closed:
                return  # the session ended under the command: nobody to answer
            log.failure("imap: {command} failed", command=command.name)
            self.sendBadResponse(tag, b"Internal server error")

    # ------------------------------------------------------------ writing

    def send_lines(self, lines: list[bytes]) -> None:
        if lines:
            self.transport.writeSequence([line + b"\r\n" for line in lines])

    def untagged(self, line: bytes) -> None:
        self.sendLine(b"* " + line)

    def start_throttle(self) -> _Throttle:
        throttle = _Throttle()
        self.transport.registerProducer(throttle, True)
        return throttle

    def stop_throttle(self) -> None:
        if self.transport is not None:
            self.transport.unregisterProducer()

    # ------------------------------------------------------------ selection

    def set_selected(self, mailbox: SelectedMailbox | None) -> None:
        self.selected = mailbox
        self.mbox = mailbox
        if mailbox is not None:
            mailbox.enabled = self.enabled
        self.state = "select" if mailbox is not None else "auth"

    # ------------------------------------------------------------ IDLE

    def parse_waiting(self, line: bytes) -> None:
        """A line a running command asked for (DONE after IDLE, a SASL response)."""
        waiter, self._line_waiter = self._line_waiter, None
        self.parseState = "command"
        if waiter is not None:
            waiter.callback(line)

    def next_line(self) -> Deferred:
        """Read one line while the current command runs; input pauses again after it."""
        waiter: Deferred = Deferred()
        self._line_waiter = waiter
        self.parseState = "waiting"
        self.resumeProducing()

        def got(line: bytes) -> bytes:
            self.pauseProducing()
            return line

        return waiter.addCallback(got)

    async def idle(self, command: Command) -> bytes | None:
        command.args.end()
        self.sendContinuationRequest(b"idling")
        pending = {"running": False, "again": False}

        def changed(_key: str) -> None:
            if pending["running"]:
                pending["again"] = True
                return
            pending["running"] = True
            Deferred.fromCoroutine(self._idle_sync(pending)).addErrback(self._idle_failed)

        if self.selected is not None and self.notifier is not None:
            self._idle_unsubscribe = self.notifier.subscribe(self.selected.index.path, changed)
        self._idling = True
        try:
            line = await self.next_line()
        finally:
            self._idling = False
            if self._idle_unsubscribe is not None:
                self._idle_unsubscribe()
                self._idle_unsubscribe = None
        if line.strip().upper() != b"DONE":
            raise ParseError("expected DONE to end IDLE")
        return b"IDLE terminated"

    async def _idle_sync(self, pending: dict) -> None:
        try:
            while True:
                pending["again"] = False
                if self.selected is None or not self._idling:
                    return
                self.send_lines(await self.selected.sync(allow_expunge=True))
                if not pending["again"]:
                    return
        finally:
            pending["running"] = False

    def _idle_failed(self, failure: Any) -> None:
        if failure.check(MailboxReset):
            self.sendLine(b"* BYE " + _text(failure.value))
            self.transport.loseConnection()
            return
        log.failure("imap: IDLE update failed", failure)

    # ------------------------------------------------------------ connection end

    def connectionLost(self, reason: Any) -> None:
        if isinstance(self._pendingLiteral, LiteralReader):
            self._pendingLiteral.cancel()
        if self.connection is not None:
            self.connection.close()
        if self._idle_unsubscribe is not None:
            self._idle_unsubscribe()
            self._idle_unsubscribe = None
        self.selected = None
        self.mbox = None
        # Commands the client pipelined are dropped quietly, not run against
        # a session whose mailbox is gone (one traceback each).
        self.closed = True
        self.clearLineBuffer()
        super().connectionLost(reason)


_NO_SYNC = frozenset({"SELECT", "EXAMINE", "CLOSE", "UNSELECT", "LOGOUT", "IDLE"})


class IMAPFactory(protocol.ServerFactory):
    """
    Builds L{IMAPServer}s for one listener.

    @param portal: a cred portal whose realm gives C{imap4.IAccount} avatars
        (C{MailRealm} with L{imap_account_factory}).  Each connection logs
        in through an C{AuthGuard} over it; an C{AuthGuard} given here is
        used as it is.
    @param reactor: clock for timeouts and login delays.
    @param notifier: the process's C{MailboxNotifier} (IDLE).
    @param timeout: seconds of inactivity before an authenticated session
        is closed (RFC 3501: at least 30 minutes).
    @param literal_limit: largest APPEND literal, in octets.
    @param string_literal_limit: largest other literal (names, search strings).
    @param login_failure_delay: the first failure's delay of the factory's
        own throttle, used when no C{throttle} is given.
    @param context_factory: the TLS context for STARTTLS
        (C{mailserver.tls.ReloadableContextFactory}); None: no STARTTLS.
        For IMAPS wrap the factory: C{mailserver.tls.wrap_implicit(factory, ctx)}.
    @param preauth_timeout: seconds a client has to log in.
    @param disable_plaintext_auth: Dovecot's parameter: passwords (LOGIN,
        AUTHENTICATE PLAIN/LOGIN) only over TLS or from loopback.
    @param allow_plaintext: C{f(transport) -> bool}, replaces the policy
        that C{disable_plaintext_auth} selects (C{mailserver.tls.PlaintextPolicy}).
    @param throttle: the C{AuthThrottle} shared by all listeners (growing
        delays, bans per client address); default: one of this factory's own.
    @param limits: the connection limits shared by the IMAP listeners
        (C{mailserver.limits.LoginLimits}); default: none but a login
        timeout of C{preauth_timeout}.
    @param literal_deadline: seconds a literal may take in all (0: none).
    @param literal_min_rate: octets a second a literal must keep up after
        a grace minute (0: none).
    """

    protocol = IMAPServer
    noisy = False

    def __init__(
        self,
        portal: Any,
        reactor: Any,
        notifier: Any,
        timeout: int = IDLE_TIMEOUT,
        literal_limit: int = LITERAL_LIMIT,
        string_literal_limit: int = STRING_LITERAL_LIMIT,
        login_failure_delay: float = LOGIN_FAILURE_DELAY,
        context_factory: Any = None,
        preauth_timeout: int = PREAUTH_TIMEOUT,
        *,
        disable_plaintext_auth: bool = True,
        allow_plaintext: Callable[[Any], bool] | None = None,
        throttle: AuthThrottle | None = None,
        limits: LoginLimits | None = None,
        literal_deadline: float = LITERAL_DEADLINE,
        literal_min_rate: int = LITERAL_MIN_RATE,
    ) -> None:
        self.portal = portal
        self.reactor = reactor
        self.notifier = notifier
        self.timeout = timeout
        self.literal_limit = literal_limit
        self.string_literal_limit = string_literal_limit
        self.login_failure_delay = login_failure_delay
        self.context_factory = context_factory
        self.preauth_timeout = preauth_timeout
        self.allow_plaintext = (
            allow_plaintext if allow_plaintext is not None
            else PlaintextPolicy(disable_plaintext_auth=disable_plaintext_auth)
        )
        self.throttle = throttle if throttle is not None else AuthThrottle(reactor, base_delay=login_failure_delay)
        self.limits = limits if limits is not None else LoginLimits("imap", login_timeout=preauth_timeout)
        self.literal_deadline = literal_deadline
        self.literal_min_rate = literal_min_rate

    def buildProtocol(self, addr: Any) -> IMAPServer:
        server = self.protocol(
            notifier=self.notifier,
            clock=self.reactor,
            timeout=self.timeout,
            literal_limit=self.literal_limit,
            string_literal_limit=self.string_literal_limit,
            context_factory=self.context_factory,
            preauth_timeout=self.preauth_timeout,
            allow_plaintext=self.allow_plaintext,
            throttle=self.throttle,
            literal_deadline=self.literal_deadline,
            literal_min_rate=self.literal_min_rate,
        )
        server.limits = self.limits
        server.factory = self
        server.callLater = self.reactor.callLater
        server.portal = self.portal  # wrapped in an AuthGuard once the peer is known
        return server
