"""
The MTA side of the milter protocol (version 6), asynchronous over Twisted.

L{MilterProtocol} frames packets and runs one exchange at a time (send
commands, wait for the final reply, collecting modifications on the way).
L{MilterSession} is what an SMTP session talks to, one per SMTP
connection and milter: C{connect}, C{helo}, C{mail_from}, C{rcpt},
C{data}, C{header}, C{eoh}, C{body}, C{eom}, C{abort}, C{quit}.  Each
returns a Deferred L{Verdict}; none ever fails.  A milter that cannot be
reached, times out (C{milter_connect_timeout}, C{milter_command_timeout},
C{milter_content_timeout}) or breaks the protocol is dropped and gets the
verdict of C{milter_default_action} for the rest of the session.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable, Coroutine, Mapping, Sequence

from twisted.internet import defer
from twisted.internet.endpoints import HostnameEndpoint, UNIXClientEndpoint
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from mailserver.address import parse_mailbox
from mailserver.errors import MailError
from mailserver.interfaces import IMilterSession
from mailserver.milter import codec
from mailserver.milter.actions import milter_body, milter_headers, valid_header_name
from mailserver.milter.settings import MilterSettings, MilterSpec
from mailserver.milter.verdicts import (  # noqa: F401 (re-exported: the verdict names are part of this API)
    ACCEPT,
    CONTINUE,
    DEFAULT_REJECT_ERROR,
    DEFAULT_TEMPFAIL_ERROR,
    DISCARD,
    REJECT,
    REJECT_ERROR,
    SHUTDOWN,
    SHUTDOWN_ERROR,
    TEMPFAIL,
    TEMPFAIL_ERROR,
    family_of,
)

log = Logger()


#: Protocol steps we let a milter skip or not answer, and SMFIR_SKIP.
OFFERED_PROTOCOL = (
    codec.SMFIP_NOCONNECT | codec.SMFIP_NOHELO | codec.SMFIP_NOMAIL | codec.SMFIP_NORCPT
    | codec.SMFIP_NOBODY | codec.SMFIP_NOHDRS | codec.SMFIP_NOEOH | codec.SMFIP_NR_HDR
    | codec.SMFIP_NOUNKNOWN | codec.SMFIP_NODATA | codec.SMFIP_SKIP | codec.SMFIP_NR_CONN
    | codec.SMFIP_NR_HELO | codec.SMFIP_NR_MAIL | codec.SMFIP_NR_RCPT | codec.SMFIP_NR_DATA
    | codec.SMFIP_NR_UNKN | codec.SMFIP_NR_EOH | codec.SMFIP_NR_BODY | codec.SMFIP_HDR_LEADSPC
)  # fmt: skip
# Per stage command: (the milter does not want it, the milter will not answer it).
_STEP_FLAGS: dict[bytes, tuple[int, int]] = {
    b"C": (codec.SMFIP_NOCONNECT, codec.SMFIP_NR_CONN),
    b"H": (codec.SMFIP_NOHELO, codec.SMFIP_NR_HELO),
    b"M": (codec.SMFIP_NOMAIL, codec.SMFIP_NR_MAIL),
    b"R": (codec.SMFIP_NORCPT, codec.SMFIP_NR_RCPT),
    b"T": (codec.SMFIP_NODATA, codec.SMFIP_NR_DATA),
    b"L": (codec.SMFIP_NOHDRS, codec.SMFIP_NR_HDR),
    b"N": (codec.SMFIP_NOEOH, codec.SMFIP_NR_EOH),
    b"B": (codec.SMFIP_NOBODY, codec.SMFIP_NR_BODY),
    b"U": (codec.SMFIP_NOUNKNOWN, codec.SMFIP_NR_UNKN),
    b"E": (0, 0),
}
# Protocol steps each older version knows (version 6: all of OFFERED_PROTOCOL).
_VERSION_STEPS = {2: 0x7F, 3: 0x17F, 4: 0x3FF}
# Commands older milters do not know: SMFIC_UNKNOWN (before 3), SMFIC_DATA (before 4).
_SINCE_VERSION = {b"U": 3, b"T": 4}
_SMFIM_STAGE = {
    codec.SMFIM_CONNECT: b"C", codec.SMFIM_HELO: b"H", codec.SMFIM_ENVFROM: b"M",
    codec.SMFIM_ENVRCPT: b"R", codec.SMFIM_DATA: b"T", codec.SMFIM_EOM: b"E",
    codec.SMFIM_EOH: b"N",
}  # fmt: skip
_FINAL = {
    codec.Accept: ACCEPT, codec.Continue: CONTINUE, codec.Discard: DISCARD,
    codec.Reject: REJECT, codec.Tempfail: TEMPFAIL, codec.Shutdown: SHUTDOWN,
    codec.ConnectionFail: TEMPFAIL, codec.Skip: CONTINUE, codec.ReplyCode: REJECT,
}  # fmt: skip


_HEADER_CHANGES = (codec.AddHeader, codec.InsertHeader, codec.ChangeHeader)


def _bad_change(change: Any) -> str | None:
    """Why a change cannot be applied safely (a header name, address or argument), or None."""
    if isinstance(change, _HEADER_CHANGES):
        return None if valid_header_name(change.name) else f"bad header name {change.name!r}"
    address = getattr(change, "recipient", getattr(change, "sender", None))
    if address is None:
        return None
    args = getattr(change, "args", "")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in args):
        return f"control character in {args!r}"
    bare = address.strip()
    bare = bare[1:-1] if bare.startswith("<") and bare.endswith(">") else bare
    if bare == "" and isinstance(change, codec.ChangeFrom):
        return None  # the null sender
    try:
        parse_mailbox(bare)
    except MailError:
        return f"bad address {address!r}"
    return None


class MilterUnavailable(Exception):
    """The milter could not be reached, went away, timed out or broke the protocol."""


@dataclass(frozen=True)
class Verdict:
    """
    A milter's answer at one stage.

    C{action}: continue, accept (skip this milter for the rest of the
    message, or of the connection at connect/HELO), reject, tempfail,
    discard or shutdown (421, close).  C{error} is the reply to give for
    reject/tempfail/shutdown.  At end of message C{modifications} lists the
    change requests (codec types, header values with their leading space)
    and C{quarantine} a hold reason.  C{default} marks a verdict of
    C{milter_default_action} (the milter failed).
    """

    action: str = CONTINUE
    error: MailError | None = None
    modifications: tuple[Any, ...] = ()
    quarantine: str | None = None
    default: bool = False
    skip_body: bool = False


CONTINUE_VERDICT = Verdict()


def reply_error(text: str) -> MailError | None:
    """An SMFIR_REPLYCODE text (C{"554 5.7.1 Spam"}, lines by CRLF) -> MailError, or None if bad."""
    first = text.replace("\r\n", "\n").split("\n")
    code, enhanced, message = 0, "", ""
    lines = []
    for line in first:
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in line):
            return None
        if len(line) < 3 or not line[:3].isdigit() or line[3:4] not in ("", " ", "-"):
            return None
        code = int(line[:3])
        rest = line[4:]
        head, _, tail = rest.partition(" ")
        if head.count(".") == 2 and head.replace(".", "").isdigit():
            enhanced, rest = head, tail
        lines.append(rest)
    if not 400 <= code < 600:
        return None
    message = " ".join(part for part in lines if part) or "Command rejected"
    if not enhanced or enhanced[0] != str(code)[0]:
        enhanced = f"{str(code)[0]}.7.1"
    return MailError(code, enhanced, message)


class MilterProtocol(Protocol):
    """
    Packets to and from one milter.  L{exchange} sends commands and waits
    for the final reply within a timeout; SMFIR_PROGRESS restarts it.
    """

    def __init__(self, clock: IReactorTime, max_packet: int = codec.MAX_PACKET) -> None:
        self.clock = clock
        self.decoder = codec.Decoder(max_packet)
        self._waiting: defer.Deferred[list[Any]] | None = None
        self._collected: list[Any] = []
        self._timeout: float = 0.0
        self._timer: IDelayedCall | None = None
        self.lost: Failure | None = None
        self._closed: list[defer.Deferred[None]] = []

    def when_closed(self) -> defer.Deferred[None]:
        """Fires once the connection is gone."""
        if self.lost is not None:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self._closed.append(d)
        return d

    def send(self, messages: Sequence[Any]) -> None:
        """Send commands that take no reply."""
        if self.lost is not None:
            raise MilterUnavailable("connection lost")
        self.transport.write(b"".join(codec.encode(m) for m in messages))  # type: ignore[union-attr]

    def exchange(self, messages: Sequence[Any], timeout: float) -> defer.Deferred[list[Any]]:
        """Send C{messages}; fire with the replies up to and including the final one."""
        if self._waiting is not None:
            return defer.fail(MilterUnavailable("exchange already in progress"))
        if self.lost is not None:
            return defer.fail(MilterUnavailable("connection lost"))
        self._waiting = defer.Deferred()
        self._collected = []
        self._timeout = timeout
        self._arm()
        waiting = self._waiting
        self.send(messages)
        return waiting

    def _arm(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = self.clock.callLater(self._timeout, self._timed_out)

    def _timed_out(self) -> None:
        self._timer = None
        self._fail(MilterUnavailable(f"no reply within {self._timeout:g}s"))
        self.transport.abortConnection()  # type: ignore[union-attr]

    def _fail(self, error: Exception) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            waiting.errback(error)

    def dataReceived(self, data: bytes) -> None:
        try:
            packets = self.decoder.feed(data)
            for packet in packets:
                self._reply(codec.decode_reply(packet))
        except codec.MilterProtocolError as e:
            self._fail(MilterUnavailable(f"protocol error: {e}"))
            self.transport.loseConnection()  # type: ignore[union-attr]

    def _reply(self, reply: Any) -> None:
        if self._waiting is None:
            raise codec.MilterProtocolError(f"unexpected {type(reply).__name__}")
        if isinstance(reply, codec.Progress):
            self._arm()
            return
        self._collected.append(reply)
        if not isinstance(reply, codec.MODIFICATIONS):
            waiting, self._waiting = self._waiting, None
            if self._timer is not None and self._timer.active():
                self._timer.cancel()
            self._timer = None
            waiting.callback(self._collected)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost = reason
        self._fail(MilterUnavailable(f"connection lost: {reason.getErrorMessage()}"))
        closed, self._closed = self._closed, []
        for d in closed:
            d.callback(None)


Connector = Callable[[], "defer.Deferred[MilterProtocol]"]


def endpoint_connector(spec: MilterSpec, reactor: Any) -> Connector:
    """A connector for C{inet:} (HostnameEndpoint) or C{unix:} (UNIXClientEndpoint) milters."""

    def connect() -> defer.Deferred[MilterProtocol]:
        if spec.kind == "unix":
            endpoint: Any = UNIXClientEndpoint(reactor, spec.path)
        else:
            endpoint = HostnameEndpoint(reactor, spec.host, spec.port)
        factory = Factory.forProtocol(lambda: MilterProtocol(reactor))
        return endpoint.connect(factory)

    return connect


@implementer(IMilterSession)
class MilterSession:
    """
    One SMTP connection's conversation with one milter.

    C{connect_protocol} opens the connection (L{endpoint_connector}, or a
    fake in tests).  Macros are passed per call as a mapping of every
    value known at that stage; the session sends those the milter asked for
    (SMFIR_SETSYMLIST in its negotiation) or else the configured lists.
    """

    def __init__(self, settings: MilterSettings, clock: IReactorTime, connect_protocol: Connector) -> None:
        self.settings = settings
        self.clock = clock
        self._connect_protocol = connect_protocol
        self.protocol: MilterProtocol | None = None
        self.actions = 0
        self.steps = 0
        self.version = 0
        self.macro_names: dict[bytes, tuple[str, ...]] = dict(settings.macros)
        self.failed: str | None = None
        self._skip_connection = False
        self._skip_message = False
        self._skip_body = False
        self._quarantine: str | None = None
        # Stages run one at a time, in call order, over one connection.
        self._lock = defer.DeferredLock()

    @property
    def name(self) -> str:
        return self.settings.spec.name

    # ---- failure ---------------------------------------------------------------------

    def _default_verdict(self) -> Verdict:
        action = self.settings.default_action
        if action == "accept":
            return Verdict(CONTINUE, default=True)
        if action == "reject":
            return Verdict(REJECT, DEFAULT_REJECT_ERROR, default=True)
        if action == "quarantine":
            self._quarantine = self._quarantine or f"milter {self.name} unavailable"
            return Verdict(CONTINUE, quarantine=self._quarantine, default=True)
        return Verdict(TEMPFAIL, DEFAULT_TEMPFAIL_ERROR, default=True)

    def _failure(self, why: str) -> Verdict:
        if self.failed is None:
            self.failed = why
            log.warn(
                "milter {milter}: {why}; default action {action}",
                milter=self.name, why=why, action=self.settings.default_action,
            )  # fmt: skip
            if self.protocol is not None and self.protocol.transport is not None:
                self.protocol.transport.abortConnection()  # type: ignore[attr-defined]
        return self._default_verdict()

    # ---- negotiation -----------------------------------------------------------------

    async def _open(self) -> None:
        d = self._connect_protocol()
        d.addTimeout(self.settings.connect_timeout, self.clock)
        try:
            protocol = await d
        except defer.TimeoutError:
            raise MilterUnavailable(f"connect timed out after {self.settings.connect_timeout:g}s")
        except Exception as e:  # connection refused, no such socket, DNS failure...
            raise MilterUnavailable(f"cannot connect: {e}") from e
        self.protocol = protocol
        offered = OFFERED_PROTOCOL & _VERSION_STEPS.get(self.settings.protocol, -1)
        offer = codec.OptNeg(self.settings.protocol, codec.SMFIF_ALL, offered)
        replies = await protocol.exchange([offer], self.settings.connect_timeout)
        reply = replies[-1]
        if not isinstance(reply, codec.OptNeg):
            raise MilterUnavailable(f"expected OptNeg, got {type(reply).__name__}")
        if not 2 <= reply.version <= self.settings.protocol:
            raise MilterUnavailable(f"milter protocol version {reply.version} not supported")
        if reply.actions & ~codec.SMFIF_ALL:
            raise MilterUnavailable(f"milter asks for unknown actions {reply.actions:#x}")
        if reply.protocol & ~offered & ~(codec.SMFIP_MDS_256K | codec.SMFIP_MDS_1M):
            raise MilterUnavailable(f"milter asks for unsupported protocol steps {reply.protocol:#x}")
        self.version, self.actions, self.steps = reply.version, reply.actions, reply.protocol
        for stage, names in reply.macros:
            if stage in _SMFIM_STAGE:
                self.macro_names[_SMFIM_STAGE[stage]] = tuple(names.split())

    # ---- one stage -------------------------------------------------------------------

    def _macro(self, stage: bytes, values: Mapping[str, str] | None) -> list[Any]:
        names = self.macro_names.get(stage, ())
        if not values or not names:
            return []
        pairs = tuple((n, values[n]) for n in names if values.get(n))
        return [codec.Macro(stage, pairs)] if pairs else []

    def _inactive(self) -> bool:
        return self._skip_connection or self._skip_message

    async def _stage(
        self, command: Any, macros: Mapping[str, str] | None, timeout: float
    ) -> Verdict:
        await self._lock.acquire()
        try:
            return await self._locked_stage(command, macros, timeout)
        finally:
            self._lock.release()

    async def _locked_stage(
        self, command: Any, macros: Mapping[str, str] | None, timeout: float
    ) -> Verdict:
        if self.failed is not None:
            return self._default_verdict()
        if self._inactive():
            return CONTINUE_VERDICT
        try:
            if self.protocol is None:
                await self._open()
            assert self.protocol is not None
            skip, no_reply = _STEP_FLAGS[command.code]
            if self.steps & skip or self.version < _SINCE_VERSION.get(command.code, 0):
                return CONTINUE_VERDICT
            messages = self._macro(command.code, macros) + [command]
            if self.steps & no_reply:
                self.protocol.send(messages)
                return CONTINUE_VERDICT
            replies = await self.protocol.exchange(messages, timeout)
        except MilterUnavailable as e:
            return self._failure(str(e))
        return self._verdict(command.code, replies)

    def _verdict(self, stage: bytes, replies: list[Any]) -> Verdict:
        final = replies[-1]
        modifications = tuple(replies[:-1])
        action = _FINAL.get(type(final))
        if action is None:
            return self._failure(f"unexpected reply {type(final).__name__} to {stage!r}")
        if modifications and stage != b"E":
            return self._failure(f"modification requested before end of message ({stage!r})")
        error: MailError | None = None
        if isinstance(final, codec.ReplyCode):
            error = reply_error(final.text)
            if error is None:
                return self._failure(f"bad reply code text {final.text!r}")
            action = TEMPFAIL if error.temporary else REJECT
        elif action == REJECT:
            error = REJECT_ERROR
        elif action == TEMPFAIL:
            error = TEMPFAIL_ERROR
        elif action == SHUTDOWN:
            error = SHUTDOWN_ERROR
        if isinstance(final, codec.Skip):
            if stage != b"B":
                return self._failure("SMFIR_SKIP outside the body")
            self._skip_body = True
        quarantine = self._quarantine
        kept = []
        for change in modifications:
            if not self._allowed(change):
                return self._failure(f"{type(change).__name__} was not negotiated")
            problem = _bad_change(change)
            if problem:
                return self._failure(f"{type(change).__name__}: {problem}")
            if isinstance(change, codec.Quarantine):
                quarantine = change.reason or "milter quarantine"
            else:
                kept.append(self._leading_space(change))
        if action == SHUTDOWN or (action == ACCEPT and stage in (b"C", b"H")):
            self._skip_connection = True
        elif action in (ACCEPT, DISCARD):
            self._skip_message = True
        elif action in (REJECT, TEMPFAIL) and stage in (b"C", b"H"):
            self._skip_connection = stage == b"C"
        elif action in (REJECT, TEMPFAIL) and stage not in (b"R", b"U"):
            self._skip_message = True
        return Verdict(action, error, tuple(kept), quarantine, skip_body=self._skip_body)

    def _allowed(self, change: Any) -> bool:
        need = {
            codec.AddHeader: codec.SMFIF_ADDHDRS, codec.InsertHeader: codec.SMFIF_ADDHDRS,
            codec.ChangeHeader: codec.SMFIF_CHGHDRS, codec.AddRecipient: codec.SMFIF_ADDRCPT,
            codec.AddRecipientPar: codec.SMFIF_ADDRCPT_PAR,
            codec.DeleteRecipient: codec.SMFIF_DELRCPT, codec.ChangeFrom: codec.SMFIF_CHGFROM,
            codec.ReplaceBody: codec.SMFIF_CHGBODY, codec.Quarantine: codec.SMFIF_QUARANTINE,
        }[type(change)]  # fmt: skip
        return bool(self.actions & need)

    def _leading_space(self, change: Any) -> Any:
        """Header values as written after the colon: a space added unless SMFIP_HDR_LEADSPC."""
        if isinstance(change, _HEADER_CHANGES):
            if not self.steps & codec.SMFIP_HDR_LEADSPC and change.value:
                return replace(change, value=" " + change.value)
        return change

    @staticmethod
    def _run(coroutine: Coroutine[Any, Any, Verdict]) -> defer.Deferred[Verdict]:
        return defer.Deferred.fromCoroutine(coroutine)

    # ---- the public stages -----------------------------------------------------------

    def connect(
        self, macros: Mapping[str, str] | None, hostname: str, family: str = codec.FAMILY_UNKNOWN,
        port: int = 0, address: str = "",
    ) -> defer.Deferred[Verdict]:
        """SMFIC_CONNECT (opens the milter connection first); family is codec.FAMILY_*."""
        command = codec.Connect(hostname, family, port, address)
        return self._run(self._stage(command, macros, self.settings.command_timeout))

    def helo(self, name: str, macros: Mapping[str, str] | None = None) -> defer.Deferred[Verdict]:
        return self._run(self._stage(codec.Helo(name), macros, self.settings.command_timeout))

    def mail_from(
        self, args: Sequence[str], macros: Mapping[str, str] | None = None
    ) -> defer.Deferred[Verdict]:
        """SMFIC_MAIL: C{args} is C{["<sender>", "SIZE=123", ...]}; starts a new message."""
        self._skip_message = False
        self._skip_body = False
        return self._run(self._stage(codec.Mail(tuple(args)), macros, self.settings.command_timeout))

    def rcpt(
        self, args: Sequence[str], macros: Mapping[str, str] | None = None
    ) -> defer.Deferred[Verdict]:
        """SMFIC_RCPT: a reject or tempfail verdict refuses this recipient only."""
        return self._run(self._stage(codec.Rcpt(tuple(args)), macros, self.settings.command_timeout))

    def data(self, macros: Mapping[str, str] | None = None) -> defer.Deferred[Verdict]:
        return self._run(self._stage(codec.Data(), macros, self.settings.command_timeout))

    def header(self, name: str, value: str) -> defer.Deferred[Verdict]:
        """One header; C{value} is the text after the colon, folded lines joined by LF."""
        if not self.steps & codec.SMFIP_HDR_LEADSPC:
            value = value.lstrip(" \t")
        return self._run(self._stage(codec.Header(name, value), None, self.settings.content_timeout))

    def eoh(self, macros: Mapping[str, str] | None = None) -> defer.Deferred[Verdict]:
        return self._run(self._stage(codec.EndOfHeaders(), macros, self.settings.content_timeout))

    def body(self, chunk: bytes) -> defer.Deferred[Verdict]:
        """Body bytes (CRLF lines), sent in pieces of at most 65535 bytes."""
        return self._run(self._body(chunk))

    async def _body(self, chunk: bytes) -> Verdict:
        verdict = CONTINUE_VERDICT
        for piece in codec.body_chunks(chunk):
            if self._skip_body:
                break
            verdict = await self._stage(piece, None, self.settings.content_timeout)
            if verdict.action != CONTINUE:
                break
        return verdict

    def eom(self, macros: Mapping[str, str] | None = None) -> defer.Deferred[Verdict]:
        """End of message: the final verdict with the modifications and quarantine."""
        return self._run(self._eom(macros))

    async def _eom(self, macros: Mapping[str, str] | None) -> Verdict:
        verdict = await self._stage(codec.EndOfMessage(), macros, self.settings.content_timeout)
        if verdict.quarantine is None and self._quarantine is not None:
            verdict = Verdict(verdict.action, verdict.error, verdict.modifications,
                              self._quarantine, verdict.default)  # fmt: skip
        self._quarantine = None
        self._skip_message = False
        return verdict

    def unknown(self, command: str, macros: Mapping[str, str] | None = None) -> defer.Deferred[Verdict]:
        """SMFIC_UNKNOWN: an SMTP command the server does not know (it is refused anyway)."""
        return self._run(self._stage(codec.Unknown(command), macros, self.settings.command_timeout))

    def abort(self) -> None:
        """SMFIC_ABORT: the current message is abandoned (RSET, or after a final reply)."""
        self._skip_message = False
        self._skip_body = False
        self._quarantine = None
        if self.failed is None and self.protocol is not None and not self._skip_connection:
            try:
                self.protocol.send([codec.Abort()])
            except MilterUnavailable as e:
                self._failure(str(e))

    def quit(self) -> defer.Deferred[None]:
        """SMFIC_QUIT and close the milter connection; fires once it is closed."""
        protocol, self.protocol = self.protocol, None
        if protocol is None or protocol.lost is not None or protocol.transport is None:
            return defer.succeed(None)
        closed = protocol.when_closed()
        if self.failed is None:
            protocol.transport.write(codec.encode(codec.Quit()))
        protocol.transport.loseConnection()
        return closed


async def send_headers(session: Any, message: bytes, macros: Mapping[str, str] | None = None) -> Verdict:
    """Each header of C{message} (its header block is enough), then end of headers; stops at a final verdict."""
    for name, value in milter_headers(message):
        verdict = await session.header(name, value)
        if verdict.action != CONTINUE:
            return verdict
    return await session.eoh(macros)


async def check_message(
    session: MilterSession, message: bytes, macros: Mapping[str, str] | None = None
) -> Verdict:
    """
    Send a whole message (after DATA): its headers, end of headers, body
    and end of message; the first verdict other than continue ends it.
    """
    verdict = await send_headers(session, message, macros)
    if verdict.action != CONTINUE:
        return verdict
    body = milter_body(message)
    if body:
        verdict = await session.body(body)
        if verdict.action != CONTINUE:
            return verdict
    return await session.eom(macros)
