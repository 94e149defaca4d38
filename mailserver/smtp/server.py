"""
twisted.mail's ESMTP, extended: SIZE, 8BITMIME, PIPELINING in order,
ENHANCEDSTATUSCODES on every reply, limits, and the one place where a
L{MailError} becomes a reply line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

from twisted.cred.credentials import Anonymous
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import ITLSTransport
from twisted.logger import Logger
from twisted.mail import smtp
from twisted.python.failure import Failure

from mailserver.address import parse_path
from mailserver.auth.throttle import AuthGuard, LoginBanned
from mailserver.envelope import Client, Envelope
from mailserver.errors import MailError
from mailserver.interfaces import ISMTPDelivery, ISMTPTransaction
from mailserver.netwrite import write_now, writes_directly
from mailserver.policy.logline import reject_line
from mailserver.smtp import auth
from mailserver.smtp.coroutines import run_now
from mailserver.smtp.deadline import DataDeadline
from mailserver.smtp.milter_glue import MilterGlue, start_milter
from mailserver.smtp.rate_checks import check_message_rate

# Default enhanced status codes for replies that Twisted's code sends without one.
_DEFAULT_ENHANCED = {
    421: "4.3.2", 451: "4.3.0", 454: "4.7.0", 500: "5.5.2", 501: "5.5.4",
    502: "5.5.1", 503: "5.5.1", 504: "5.5.4", 535: "5.7.8", 550: "5.0.0",
}
_ENHANCED = re.compile(rb"^[245]\.\d{1,3}\.\d{1,3}( |$)")
_BARE_LF_DOT = re.compile(rb"(?<!\r)\n\.")
#: The replies to every accepted MAIL and RCPT, as L{ESMTPServer.reply} makes them.
_MAIL_OK = b"250 2.1.0 Ok"
_RCPT_OK = b"250 2.1.5 Ok"
#: Enhanced codes of L{ESMTPServer.reply} known to match L{_ENHANCED}: the reply is sent as it is.
_GOOD_ENHANCED = frozenset(f"{a}.{b}.{c}" for a in (2, 4, 5) for b in range(8) for c in range(30))

HELP_TEXT = (
    "2.0.0 Commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT HELP VRFY STARTTLS AUTH\n"
    "2.0.0 See RFC 5321"
)


@dataclass(frozen=True)
class SMTPPolicy:
    """The limits and names of one SMTP listener."""

    hostname: str
    banner: str
    message_size_limit: int = 10240000
    timeout: float = 300
    hard_error_limit: int = 20
    line_length_limit: int = 2048
    bare_newline: str = "normalize"  # or "reject" (Postfix smtpd_forbid_bare_newline)
    auth_required: bool = False  # submission: AUTH before MAIL
    tls_required: bool = False  # smtpd_tls_security_level = encrypt
    disable_plaintext_auth: bool = True  # PLAIN/LOGIN only over TLS or loopback
    max_pending_bytes: int = 1 << 20
    data_time_limit: float = 600  # smtpd_data_time_limit: the whole DATA phase (0: none)
    min_data_rate: int = 500  # smtpd_min_data_rate: bytes/s, Postfix's deadline rule (0: none)


#: Command verb as sent -> the method's attribute name (L{ESMTPServer.lookupMethod}).
_METHOD_NAMES: dict[bytes, str] = {}

#: Commands one session answers per reactor turn before it lets the others run.
COMMANDS_PER_TURN = 100


class ESMTPServer(smtp.ESMTP):
    """
    One SMTP session.  Commands are answered strictly in the order they were
    received: while a check is pending, later pipelined lines wait in the
    buffer (twisted issue 8126) and the transport is paused.
    """

    log = Logger(namespace="mailserver.smtp")
    #: The client's name in log lines (no reverse lookup: Postfix's C{unknown}).
    peer_name = "unknown"

    def __init__(self, policy: SMTPPolicy, portal: Any, clock: Any, chal=None, contextFactory=None) -> None:
        super().__init__(chal=chal, contextFactory=contextFactory)
        self.policy = policy
        self.portal = portal
        self.clock = clock
        self.callLater = clock.callLater  # TimeoutMixin: the injected clock, not the global reactor
        self.timeout = policy.timeout
        self.host = policy.hostname.encode("ascii", "replace")
        self._buffer = b""
        self._pending: Deferred | None = None
        self._paused = False  # waiting for a pending reply
        self._spool_paused = False  # waiting for the spool writer to catch up
        self._next_turn: Any = None  # the delayed call answering the rest of the input (reading paused)
        self._deadline: DataDeadline | None = None  # during DATA
        self._idle_deadline: DataDeadline | None = None  # between DATA phases, kept for the next one
        self._discarding = False  # skipping the rest of an over-long command line
        self._errors = 0
        self._ehlo: str | None = None
        self._envelope: Envelope | None = None
        self._transaction: ISMTPTransaction | None = None
        self._at_line_start = True  # after <CRLF>: where "." may end the data
        self._unstuff_next = True  # where a leading "." is dot-stuffing
        self._delivery: ISMTPDelivery | None = None
        self.sasl_user: str | None = None
        self._auth = auth.AuthExchange(self)
        self._replies: list[bytes] | None = None  # replies held while a batch of input is answered
        self._milter: MilterGlue | None = None  # smtpd_milters of this connection
        self._client_made: tuple[tuple, Client] | None = None  # (HELO, TLS, SASL user) -> its Client

    # -- connection ---------------------------------------------------------

    def connectionMade(self) -> None:
        peer = self.transport.getPeer()
        self.peer_ip = getattr(peer, "host", str(peer))
        implicit = getattr(self.factory, "implicit_tls", False)
        self.canStartTLS = self.ctx is not None and not implicit and ITLSTransport.providedBy(self.transport)
        self._helo = (None, self.peer_ip.encode())
        throttle = getattr(self.factory, "throttle", None)
        if throttle is not None and self.portal is not None:
            # Growing delays and bans per client address for SASL; anonymous logins pass.
            self.portal = AuthGuard(self.portal, throttle, "smtp", self.peer_ip, self.clock)
        if hasattr(self.transport, "setTcpNoDelay"):
            # Replies are small and often written after a Deferred: without this,
            # Nagle and delayed ACKs add 40 ms per pipelined group.
            self.transport.setTcpNoDelay(True)
        self._milter = start_milter(self.factory, peer)
        self.sendLine(b"220 " + self.policy.banner.encode("ascii", "replace"))
        self.setTimeout(self.timeout)

    def timeoutConnection(self) -> None:
        self.reply(421, "4.4.2", f"{self.policy.hostname} Error: timeout exceeded")
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure) -> None:
        turn, self._next_turn = self._next_turn, None
        if turn is not None and turn.active():
            turn.cancel()
        self._end_data_phase(keep=False)
        if self._transaction is not None:
            self._transaction.abort()
            self._transaction = None
        self.setTimeout(None)
        if self._milter is not None:
            self._milter.close()
        if self._onLogout:
            self._onLogout()
            self._onLogout = None

    # -- replies -------------------------------------------------------------

    def reply(self, code: int, enhanced: str, text: str) -> None:
        if enhanced in _GOOD_ENHANCED and "\n" not in text and "\r" not in text:  # one line: no more to check
            self.sendLine(b"%03d %s %s" % (code, enhanced.encode(), text.encode("utf-8", "replace")))
            self._count_error(code)
            return
        self.sendCode(code, f"{enhanced} {text}".encode("utf-8", "replace"))

    def reply_error(self, error: MailError) -> None:
        self.reply(error.code, error.enhanced, error.text)

    def sendCode(self, code: int, message: bytes = b"") -> None:
        """Send a reply; Twisted's own replies get a default enhanced code."""
        lines = message.splitlines() or [b""]
        if code // 100 in (2, 4, 5):
            for index, line in enumerate(lines):
                if not _ENHANCED.match(line):  # the default made only when needed: most replies have one
                    enhanced = _DEFAULT_ENHANCED.get(code) or f"{code // 100}.{7 if code == 235 else 0}.0"
                    lines[index] = enhanced.encode() + b" " + line
        for line in lines[:-1]:
            self.sendLine(b"%03d-%s" % (code, line))
        self.sendLine(b"%03d %s" % (code, lines[-1]))
        self._count_error(code)

    def _count_error(self, code: int) -> None:
        """After C{smtpd_hard_error_limit} errors: 421 and close."""
        if code >= 400:
            self._errors += 1
            if self._errors >= self.policy.hard_error_limit and code != 421:
                self.sendLine(b"421 4.7.0 " + self.host + b" Error: too many errors")
                self.transport.loseConnection()

    def sendLine(self, line: bytes) -> None:
        if self._replies is not None:
            self._replies.append(line + b"\r\n")
        else:
            write_now(self.transport, line + b"\r\n")

    def _answer_batch(self) -> None:
        """
        Answer what is buffered.  On a plain TCP connection the replies are
        held and sent in one write at the end (RFC 2920: one reply group per
        command group), which a nested call may do earlier; order is kept
        either way, as every flush sends all that was held before it.
        """
        self._hold_replies()
        try:
            self._process()
        finally:
            self._flush_replies()

    def _hold_replies(self, result: object = None) -> object:
        if self._replies is None and writes_directly(self.transport):
            self._replies = []
        return result

    def _flush_replies(self) -> None:
        replies, self._replies = self._replies, None
        if replies:
            write_now(self.transport, b"".join(replies))

    # -- input: our own framing, so limits and ordering are exact ----------

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        if self._next_turn is None:  # else the buffer is answered on the next turn
            self._answer_batch()
        if self._pending is not None and len(self._buffer) > 65536 and not self._paused:
            # A client racing ahead of a pending reply: stop reading until it is sent.
            self.transport.pauseProducing()
            self._paused = True
        if len(self._buffer) > self.policy.max_pending_bytes and not self.transport.disconnecting:
            # Only input that waits (for a reply, or for the next turn) stays
            # buffered; reading is paused then, so this is a client ignoring that.
            self._buffer = b""
            self.reply(421, "4.7.0", "Error: too much pipelined input")
            self._flush_replies()
            self.transport.loseConnection()

    def _process(self) -> None:
        """
        Answer buffered commands, at most L{COMMANDS_PER_TURN} of them: then
        reading pauses and the rest is answered on a later reactor turn, so
        one client's pipelined flood never keeps the others waiting.
        """
        budget = COMMANDS_PER_TURN
        while self._pending is None and not self.transport.disconnecting:
            if budget <= 0:
                if self._buffer:
                    self._yield_turn()
                return
            budget -= 1
            if self.mode == smtp.DATA:
                if not self._take_data():
                    return
            else:
                line = self._take_command_line()
                if line is None:
                    return
                self.resetTimeout()
                result = self.state_AUTH(line) if self.mode == smtp.AUTH else self._dispatch(line)
                if result is None:  # most commands (isinstance on a Deferred is an ABC check)
                    continue
                if isinstance(result, Deferred) and not result.called:
                    self._wait(result)
                elif isinstance(result, Deferred):
                    result.addErrback(self._internal_error)

    def _take_command_line(self) -> bytes | None:
        limit = self.policy.line_length_limit
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) > limit and not self._discarding:
                    self._discarding = True
                    self.reply(500, "5.5.2", "Error: line too long")
                if self._discarding:
                    self._buffer = b""
                return None
            line, self._buffer = self._buffer[:end], self._buffer[end + 1 :]
            if self._discarding:
                self._discarding = False
                continue
            if line.endswith(b"\r"):
                line = line[:-1]
            if len(line) > limit:
                self.reply(500, "5.5.2", "Error: line too long")
                continue
            return line

    def _take_data(self) -> bool:
        """
        Consume DATA content from the buffer in bulk; True at end of data.

        Only <CRLF>.<CRLF> ends the data.  Complete lines are handed over in
        one piece; a long line without CRLF is handed over in 64 KiB pieces so
        it never sits in the buffer whole.
        """
        buffer = self._buffer
        if self._at_line_start and buffer.startswith(b".\r\n"):
            self._buffer = buffer[3:]
            self._end_of_data()
            return True
        end = buffer.find(b"\r\n.\r\n")
        if end >= 0:
            self._buffer = buffer[end + 5 :]
            self._data_chunk(buffer[: end + 2])
            self._end_of_data()
            return True
        last = buffer.rfind(b"\r\n")
        if last >= 0:
            self._buffer = buffer[last + 2 :]
            self._data_chunk(buffer[: last + 2])
        elif len(buffer) >= 65536:
            keep = 1 if buffer.endswith(b"\r") else 0
            self._buffer = buffer[len(buffer) - keep :]
            self._data_chunk(buffer[: len(buffer) - keep])
        if self._buffer:
            self.resetTimeout()
        return False

    def _data_chunk(self, chunk: bytes) -> None:
        """
        Dot-unstuff a piece of DATA and store it with LF line ends.  A bare
        LF or CR is refused (C{reject}) or, with C{normalize}, a bare LF is a
        line end whose next line is dot-unstuffed like smtplib and Postfix
        do -- but it never ends the data.
        """
        self.resetTimeout()
        transaction = self._transaction
        assert transaction is not None
        if self._unstuff_next and chunk[:1] == b".":
            chunk = chunk[1:]
        crlf = chunk.count(b"\r\n")
        bare = chunk.count(b"\n") != crlf or chunk.count(b"\r") != crlf
        if bare and self.policy.bare_newline == "reject":
            transaction.fail(MailError(550, "5.5.2", "Error: bare <CR> or <LF> received (RFC 5321 section 2.3.8)"))
        elif bare:
            chunk = _BARE_LF_DOT.sub(b"\n", chunk)
        transaction.write(chunk.replace(b"\r\n.", b"\r\n").replace(b"\r\n", b"\n"))
        if self._deadline is not None:
            self._deadline.received(len(chunk))
        if transaction.behind and not self._spool_paused:
            # Never more than the writer's high-water mark waits in memory.
            self._spool_paused = True
            self.transport.pauseProducing()
            if self._deadline is not None:
                self._deadline.pause()
            transaction.when_caught_up(self._spool_caught_up)
        self._at_line_start = chunk.endswith(b"\r\n")
        self._unstuff_next = chunk.endswith(b"\n") and (self._at_line_start or self.policy.bare_newline != "reject")

    def _yield_turn(self) -> None:
        """Stop reading; answer the rest of the buffer on the next reactor turn."""
        self.transport.pauseProducing()
        self._next_turn = self.clock.callLater(0, self._take_turn)

    def _take_turn(self) -> None:
        self._next_turn = None
        if not self.transport.connected or self.transport.disconnecting:
            return
        self._answer_batch()
        idle = self._next_turn is None and not self._paused and not self._spool_paused
        if idle and self.transport.connected and not self.transport.disconnecting:
            self.transport.resumeProducing()

    def _wait(self, d: Deferred, first: Callable[[Any], object] | None = None) -> None:
        """
        Hold later input until C{d} fires: replies stay in command order.
        C{first} is given the outcome before anything else (one callback
        less than adding it to C{d}); a failure it raises or leaves is an
        internal error.
        """
        self._pending = d

        def done(result: object) -> None:
            if first is not None:
                try:
                    result = first(result)
                except Exception:
                    result = Failure()
            if isinstance(result, Failure):
                self._internal_error(result)
            self._pending = None
            if self._paused and not self.transport.disconnecting:
                self._paused = False
                if not self._spool_paused and self._next_turn is None:
                    self.transport.resumeProducing()
            if self.transport.connected and not self.transport.disconnecting:
                self._answer_batch()
            else:
                self._flush_replies()

        d.addBoth(done)

    def _spool_caught_up(self) -> None:
        self._spool_paused = False
        if self._deadline is not None:
            self._deadline.resume()
        if not self._paused and self._next_turn is None and not self.transport.disconnecting:
            self.transport.resumeProducing()

    def _data_expired(self, limit: str) -> None:
        """A DATA deadline passed: 421, nothing delivered, connection closed."""
        self._deadline = None
        envelope = self._envelope
        self.log.info(
            "{queue_id}: [{ip}]: {limit} exceeded after {size} bytes of DATA; disconnecting",
            queue_id=envelope.queue_id if envelope else "NOQUEUE", ip=self.peer_ip, limit=limit,
            size=self._transaction.size if self._transaction is not None else 0,
        )
        self._reset()
        self.mode = smtp.COMMAND
        self._buffer = b""
        self.reply(421, "4.4.2", f"{self.policy.hostname} Error: timeout exceeded")
        self._flush_replies()
        self.transport.loseConnection()

    def _end_data_phase(self, keep: bool = True) -> None:
        """
        No DATA deadline from now; its timer is kept for the next DATA phase
        while the session goes on (C{keep}), dropped when it ends.
        """
        deadline, self._deadline = self._deadline, None
        if keep and deadline is not None:
            deadline.stop()
            self._idle_deadline = deadline
            return
        idle, self._idle_deadline = self._idle_deadline, None
        for each in (deadline, idle):
            if each is not None:
                each.cancel()

    def _internal_error(self, failure: Failure) -> None:
        self.log.failure("internal error in SMTP session", failure)
        self.reply(451, "4.3.0", "Error: internal error, try again later")

    # -- commands --------------------------------------------------------------

    def _dispatch(self, line: bytes) -> Deferred | None:
        if b"\0" in line:
            self.reply(500, "5.5.2", "Error: NUL character in command")
            return None
        parts = line.strip().split(None, 1)
        if not parts:
            self.reply(500, "5.5.2", "Error: bad syntax")
            return None
        method = self.lookupMethod(parts[0]) if parts[0].isascii() and parts[0].isalpha() else None
        if method is None:
            self.reply(502, "5.5.2", "Error: command not recognized")
            return None
        return method(parts[1] if len(parts) == 2 else b"")

    def lookupMethod(self, command):
        attribute = _METHOD_NAMES.get(command)
        if attribute is None:
            name = command.decode("ascii").upper()
            attribute = ("ext_" if name in ("AUTH", "STARTTLS") else "do_") + name
            if len(_METHOD_NAMES) < 1024:  # clients' verbs, each spelling once
                _METHOD_NAMES[command] = attribute
        return getattr(self, attribute, None)

    def extensions(self) -> dict[bytes, list[bytes] | None]:
        ext: dict[bytes, list[bytes] | None] = {
            b"PIPELINING": None,
            b"SIZE": [str(self.policy.message_size_limit).encode()],
            b"ENHANCEDSTATUSCODES": None,
            b"8BITMIME": None,
        }
        ext.update(super().extensions())
        if not ext.get(b"AUTH") or not self.plaintext_allowed():
            ext.pop(b"AUTH", None)
        return ext

    def plaintext_allowed(self) -> bool:
        """PLAIN/LOGIN only over TLS or from loopback (Dovecot's disable_plaintext_auth)."""
        if self.encrypted or not self.policy.disable_plaintext_auth:
            return True
        return self.peer_ip in ("127.0.0.1", "::1") or self.peer_ip.startswith("127.")

    def ext_STARTTLS(self, rest: bytes) -> None:
        """
        RFC 3207.  Whatever the client pipelined after STARTTLS in the clear
        is discarded (CVE-2011-0411), and the session starts over: EHLO
        again, no transaction, no authentication carried across.
        """
        if rest.strip():
            self.reply(501, "5.5.4", "Syntax: STARTTLS")
        elif self.startedTLS:
            self.reply(503, "5.5.1", "Error: TLS already active")
        elif not self.canStartTLS:
            self.reply(454, "4.7.0", "TLS not available")
        else:
            self.reply(220, "2.0.0", "Ready to start TLS")
            self._flush_replies()  # in the clear, before the handshake
            if self._buffer:
                self.log.warn("[{ip}]: discarding {n} bytes pipelined after STARTTLS", ip=self.peer_ip, n=len(self._buffer))
            self._buffer = b""
            self.transport.startTLS(self.ctx)
            self.startedTLS = True
            self._ehlo = None
            self._reset()

    @property
    def encrypted(self) -> bool:
        return bool(self.startedTLS) or getattr(self.factory, "implicit_tls", False)

    def ext_AUTH(self, rest: bytes) -> Deferred | None:
        """
        RFC 4954, our exchange rather than twisted.mail's C{state_AUTH}: a
        malformed command or response gets a reply (never a dropped
        connection) and counts as a failed login.
        """
        if self._ehlo is None:
            self.reply(503, "5.5.1", "Error: send HELO/EHLO first")
        elif self._envelope is not None:
            self.reply(503, "5.5.1", "Error: MAIL transaction in progress")
        elif self.authenticated:
            self.reply(503, "5.5.1", "Error: already authenticated")
        elif not self.challengers:
            self.reply(503, "5.5.1", "Error: authentication not enabled")
        elif not self.plaintext_allowed():
            self.reply(538, "5.7.11", "Encryption required for requested authentication mechanism")
        elif self.portal is None:
            self.reply(454, "4.7.0", "Temporary authentication failure")
        else:
            return self._auth.start(rest)
        return None

    def state_AUTH(self, response: bytes) -> Deferred | None:
        """One client line in the middle of an AUTH exchange."""
        return self._auth.respond(response)

    def _cbAuthenticated(self, loginInfo) -> None:
        super()._cbAuthenticated(loginInfo)
        self.sasl_user = getattr(self.deliveryFactory, "sasl_user", None)
        self._delivery = None
        self.log.info("[{ip}]: sasl_username={user}", ip=self.peer_ip, user=self.sasl_user)

    def _ebAuthenticated(self, reason: Failure) -> None:
        if reason.check(LoginBanned):
            self.reply(454, "4.7.0", "Too many failed logins from your address, try again later")
        elif reason.check(UnauthorizedLogin):
            self.reply(535, "5.7.8", "Authentication failed")
        else:
            self.log.failure("[{ip}]: SASL login error", reason, ip=self.peer_ip)
            self.reply(454, "4.7.0", "Temporary authentication failure")

    def do_EHLO(self, rest: bytes) -> Deferred | None:
        return self._milter_greet(rest, esmtp=True)

    def do_HELO(self, rest: bytes) -> Deferred | None:
        return self._milter_greet(rest, esmtp=False)

    def _milter_greet(self, rest: bytes, esmtp: bool) -> Deferred | None:
        """HELO/EHLO, asking the milters first when there are any (and the name is valid)."""
        name = rest.strip().decode("ascii", "replace")
        if self._milter is None or not name or " " in name:
            self._greet(rest, esmtp)
            return None

        async def greet() -> None:
            assert self._milter is not None
            try:
                await self._milter.helo(name)
            except MailError as error:
                self._log_refusal("HELO", error)
                raise
            self._greet(rest, esmtp)

        return self._guard(greet())

    def _greet(self, rest: bytes, esmtp: bool) -> None:
        name = rest.strip().decode("ascii", "replace")
        if not name or " " in name:
            self.reply(501, "5.5.4", f"Syntax: {'EHLO' if esmtp else 'HELO'} hostname")
            return
        self._ehlo = name
        self._helo = (rest.strip(), self.peer_ip.encode())
        self._reset()
        lines = [self.host]
        if esmtp:
            lines += self.listExtensions().split(b"\n")
        for line in lines[:-1]:
            self.sendLine(b"250-" + line)
        self.sendLine(b"250 " + lines[-1])

    def do_NOOP(self, rest: bytes) -> None:
        self.reply(250, "2.0.0", "Ok")

    def do_RSET(self, rest: bytes) -> None:
        self._reset()
        self.reply(250, "2.0.0", "Ok")

    def do_QUIT(self, rest: bytes) -> None:
        self.reply(221, "2.0.0", "Bye")
        self.transport.loseConnection()

    def do_HELP(self, rest: bytes) -> None:
        self.sendCode(214, HELP_TEXT.encode())

    def do_VRFY(self, rest: bytes) -> None:
        self.reply(252, "2.0.0", "Cannot VRFY user, but will accept message and attempt delivery")

    def do_EXPN(self, rest: bytes) -> None:
        self.reply(502, "5.5.1", "Error: command not implemented")

    do_ETRN = do_TURN = do_EXPN

    def _reset(self) -> None:
        self._end_data_phase()
        if self._milter is not None:
            self._milter.end_message()
        self._envelope = None
        if self._transaction is not None:
            self._transaction.abort()
            self._transaction = None

    def _client(self) -> Client:
        """
        Who is talking to us now: one L{Client} while the HELO name, TLS and
        SASL state stay the same, so a session's messages share it (the
        pipeline remembers its answers for it).
        """
        key = (self._ehlo, self.startedTLS, self.sasl_user)
        made = self._client_made
        if made is None or made[0] != key:
            made = self._client_made = (key, self._make_client())
        return made[1]

    def _make_client(self) -> Client:
        tls = self.encrypted
        protocol = "ESMTP" + ("S" if tls else "") + ("A" if self.sasl_user else "")
        return Client(ip=self.peer_ip, helo=self._ehlo or "", tls=tls, sasl_user=self.sasl_user, protocol=protocol)

    def do_MAIL(self, rest: bytes) -> Deferred | None:
        if self._ehlo is None:
            self.reply(503, "5.5.1", "Error: send HELO/EHLO first")
            return None
        if self._envelope is not None:
            self.reply(503, "5.5.1", "Error: nested MAIL command")
            return None
        if self.policy.tls_required and not self.encrypted:
            self.reply(530, "5.7.0", "Must issue a STARTTLS command first")
            return None
        if self.policy.auth_required and self.sasl_user is None:
            self.reply(530, "5.7.0", "Authentication required")
            return None
        return self._guard(self._mail_logged(rest.decode("latin-1")))

    async def _mail_logged(self, argument: str) -> None:
        """MAIL FROM; a refusal is logged (Postfix's NOQUEUE: reject: MAIL line)."""
        try:
            await self._mail(argument)
        except MailError as error:
            sender = argument.partition(":")[2].strip().split(" ")[0].strip("<>")
            self._log_refusal("MAIL", error, sender=sender)
            raise

    def _log_protocol(self) -> str:
        """C{proto=} of the log lines: Postfix's ESMTP after EHLO, SMTP after HELO."""
        return "ESMTP" if self._ehlo is not None else "SMTP"

    def _log_refusal(self, stage: str, error: MailError, sender: str = "", recipient: str = "",
                     queue_id: str = "NOQUEUE") -> None:  # fmt: skip
        """One Postfix-style line for every refused command."""
        line = reject_line(
            error, client=self.peer_name, address=self.peer_ip, sender=sender, recipient=recipient,
            helo=self._ehlo or "", stage=stage, queue_id=queue_id, proto=self._log_protocol(),
        )  # fmt: skip
        self.log.info("{reject_line}", reject_line=line, stage=stage, code=error.code,
                      reject=stage.lower(), reply=error.reply())  # reject/reply: the metrics

    async def _mail(self, argument: str) -> None:
        path = parse_path(argument, "FROM", allow_null=True)
        size = None
        for name, value in path.parameters.items():
            if name == "SIZE":
                if value is None or not value.isdigit():
                    raise MailError(501, "5.5.4", "Bad SIZE parameter")
                size = int(value)
            elif name == "BODY":
                if (value or "").upper() not in ("7BIT", "8BITMIME"):
                    raise MailError(501, "5.5.4", "Bad BODY parameter")
            else:
                raise MailError(555, "5.5.4", f"Unsupported option: {name}")
        check_message_rate(getattr(self.factory, "rates", None), self.peer_ip, self.clock.seconds())
        delivery = self._delivery  # after the first MAIL: no coroutine to get it
        if delivery is None or self.deliveryFactory is None:
            delivery = await self._get_delivery()
        envelope = delivery.begin(self._client(), path.address, size)
        await delivery.check_sender(path.address, envelope)
        if self._milter is not None:
            esmtp = [f"{name}={value}" if value is not None else name for name, value in path.parameters.items()]
            await self._milter.mail(envelope, esmtp, self.sasl_user)
        self._envelope = envelope
        self.sendLine(_MAIL_OK)

    async def _get_delivery(self) -> ISMTPDelivery:
        if self._delivery is None or self.deliveryFactory is None:
            if self.deliveryFactory is None:
                try:
                    iface, avatar, logout = await self.portal.login(Anonymous(), None, smtp.IMessageDeliveryFactory)
                except UnauthorizedLogin:
                    raise MailError(530, "5.7.0", "Authentication required") from None
                self.deliveryFactory = avatar
                self._onLogout = logout
            self._delivery = self.deliveryFactory.getMessageDelivery()
        return self._delivery

    def do_RCPT(self, rest: bytes) -> Deferred | None:
        if self._envelope is None:
            self.reply(503, "5.5.1", "Error: need MAIL command")
            return None
        return self._guard(self._rcpt(rest.decode("latin-1")))

    async def _rcpt(self, argument: str) -> None:
        path = parse_path(argument, "TO", allow_null=False)
        if path.parameters:
            raise MailError(555, "5.5.4", f"Unsupported option: {next(iter(path.parameters))}")
        assert path.address is not None and self._delivery is not None and self._envelope is not None
        envelope = self._envelope
        try:
            await self._delivery.check_recipient(envelope, path.address)
            if self._milter is not None:
                try:
                    await self._milter.rcpt(envelope, str(path.address))
                except MailError:
                    envelope.recipients.pop()  # the milter refused this recipient only
                    raise
        except MailError as error:
            self._log_refusal("RCPT", error, str(envelope.sender or ""), str(path.address))
            raise
        self.sendLine(_RCPT_OK)

    def do_DATA(self, rest: bytes) -> None:
        if self._envelope is None:
            self.reply(503, "5.5.1", "Error: need MAIL command")
            return
        if not self._envelope.recipients:
            error = MailError(554, "5.5.1", "Error: no valid recipients")
            self._log_refusal("DATA", error, str(self._envelope.sender or ""))
            self.reply_error(error)
            return
        if rest.strip():
            self.reply(501, "5.5.4", "Syntax: DATA")
            return
        assert self._delivery is not None
        self._transaction = self._delivery.open_transaction(self._envelope)
        policy = self.policy
        if self._idle_deadline is not None:  # the last phase's, and its timer
            self._deadline, self._idle_deadline = self._idle_deadline, None
            self._deadline.restart()
        else:
            self._deadline = DataDeadline(
                self.clock, self._data_expired, policy.data_time_limit, policy.timeout, policy.min_data_rate
            )
        self._at_line_start = self._unstuff_next = True
        self.mode = smtp.DATA
        self.sendLine(b"354 End data with <CR><LF>.<CR><LF>")  # sendCode's line: 3xx has no enhanced code

    def _end_of_data(self) -> None:
        transaction = self._transaction
        assert transaction is not None
        self._end_data_phase()
        self.mode = smtp.COMMAND
        self._transaction = None
        self._envelope = None

        # The 250 joins the replies to whatever the client pipelined behind the data.
        self._wait(transaction.commit(), self._committed)

    def _committed(self, result: str | Failure) -> None:
        """The end of DATA's outcome: its reply (held, see L{_end_of_data}) and the milters told."""
        self._hold_replies()
        self._message_ended(None)
        if isinstance(result, Failure):
            self._failed(result)
            return
        enhanced, _, text = result.partition(" ")
        if enhanced in _GOOD_ENHANCED:
            self.reply(250, enhanced, text)
        else:
            self.sendCode(250, result.encode())

    def _message_ended(self, result: object) -> object:
        if self._milter is not None:
            self._milter.end_message()
        return result

    # -- errors: the one place MailError becomes a reply ----------------------

    def _guard(self, coroutine) -> Deferred | None:
        """Run a command's coroutine: to its end at once when it never waits (None), else a Deferred."""
        try:
            waiting = run_now(coroutine)
        except Exception:
            self._failed(Failure())
            return None
        return None if waiting is None else self._guard_deferred(waiting)

    def _guard_deferred(self, d: Deferred) -> Deferred:
        return d.addErrback(self._failed)

    def _failed(self, failure: Failure) -> None:
        if failure.check(MailError):
            self.reply_error(failure.value)
            if getattr(failure.value, "close", False):  # a milter's shutdown: 421 and close
                self._flush_replies()
                self.transport.loseConnection()
        else:
            self._internal_error(failure)
