"""
Pure: the Sendmail milter protocol, version 6, on the wire.

A packet is a 4-byte big-endian length, then one command byte, then
C{length - 1} bytes of data.  Strings are NUL-terminated.  This module turns
typed values (one frozen dataclass per SMFIC_* command and SMFIR_* reply)
into packets and back, and L{Decoder} splits a byte stream into packets with
a bound on their size.  Malformed input raises L{MilterProtocolError}.

Strings are decoded as UTF-8 with C{surrogateescape}, so any bytes survive a
round trip.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Union

VERSION = 6
#: The longest body chunk sent in one SMFIC_BODY (libmilter's MILTER_CHUNK_SIZE).
CHUNK_SIZE = 65535
#: The default bound on one packet (length field): 1 MiB of data (SMFIP_MDS_1M) and the command.
MAX_PACKET = 1024 * 1024 + 1

# Actions a milter may take (SMFIF_*), negotiated in SMFIC_OPTNEG.
SMFIF_ADDHDRS = 0x01
SMFIF_CHGBODY = 0x02
SMFIF_ADDRCPT = 0x04
SMFIF_DELRCPT = 0x08
SMFIF_CHGHDRS = 0x10
SMFIF_QUARANTINE = 0x20
SMFIF_CHGFROM = 0x40
SMFIF_ADDRCPT_PAR = 0x80
SMFIF_SETSYMLIST = 0x100
SMFIF_ALL = 0x1FF

# Protocol steps (SMFIP_*): steps the milter does not want, replies it will not send.
SMFIP_NOCONNECT = 0x01
SMFIP_NOHELO = 0x02
SMFIP_NOMAIL = 0x04
SMFIP_NORCPT = 0x08
SMFIP_NOBODY = 0x10
SMFIP_NOHDRS = 0x20
SMFIP_NOEOH = 0x40
SMFIP_NR_HDR = 0x80
SMFIP_NOUNKNOWN = 0x100
SMFIP_NODATA = 0x200
SMFIP_SKIP = 0x400
SMFIP_RCPT_REJ = 0x800
SMFIP_NR_CONN = 0x1000
SMFIP_NR_HELO = 0x2000
SMFIP_NR_MAIL = 0x4000
SMFIP_NR_RCPT = 0x8000
SMFIP_NR_DATA = 0x10000
SMFIP_NR_UNKN = 0x20000
SMFIP_NR_EOH = 0x40000
SMFIP_NR_BODY = 0x80000
SMFIP_HDR_LEADSPC = 0x100000
SMFIP_MDS_256K = 0x10000000
SMFIP_MDS_1M = 0x20000000

# Macro stages (SMFIM_*) in the SMFIC_OPTNEG reply's symbol lists.
SMFIM_CONNECT, SMFIM_HELO, SMFIM_ENVFROM, SMFIM_ENVRCPT, SMFIM_DATA, SMFIM_EOM, SMFIM_EOH = range(7)

# SMFIC_CONNECT address families.
FAMILY_UNKNOWN, FAMILY_UNIX, FAMILY_INET, FAMILY_INET6 = "U", "L", "4", "6"

_U32 = struct.Struct("!I")
_U16 = struct.Struct("!H")


class MilterProtocolError(Exception):
    """Bytes that are not a valid milter packet (or not the one expected)."""


def _text(value: str) -> bytes:
    data = value.encode("utf-8", "surrogateescape")
    if b"\0" in data:
        raise ValueError("a milter string cannot contain NUL")
    return data + b"\0"


def _strings(data: bytes) -> list[str]:
    """NUL-terminated strings filling C{data} exactly."""
    if not data:
        return []
    if not data.endswith(b"\0"):
        raise MilterProtocolError("string not NUL-terminated")
    return [part.decode("utf-8", "surrogateescape") for part in data[:-1].split(b"\0")]


def _exactly(data: bytes, count: int, what: str) -> list[str]:
    strings = _strings(data)
    if len(strings) != count:
        raise MilterProtocolError(f"{what}: expected {count} string(s), got {len(strings)}")
    return strings


def _u32(data: bytes, what: str) -> tuple[int, bytes]:
    if len(data) < 4:
        raise MilterProtocolError(f"{what}: truncated")
    return _U32.unpack_from(data)[0], data[4:]


@dataclass(frozen=True)
class Packet:
    """One framed packet: its command byte and its data."""

    command: bytes
    data: bytes = b""

    def encode(self) -> bytes:
        return _U32.pack(len(self.data) + 1) + self.command + self.data


# Typed messages.  Each has C{code} (the command byte), C{data()} and a
# C{parse(data)} classmethod; L{encode} and L{decode_command}/L{decode_reply} use them.


class _Empty:
    code: ClassVar[bytes] = b""

    def data(self) -> bytes:
        return b""

    @classmethod
    def parse(cls, data: bytes):  # type: ignore[no-untyped-def]
        if data:
            raise MilterProtocolError(f"{cls.__name__}: unexpected data")
        return cls()


class _OneString:
    code: ClassVar[bytes] = b""

    def data(self) -> bytes:
        return _text(getattr(self, self._field))  # type: ignore[attr-defined]

    @classmethod
    def parse(cls, data: bytes):  # type: ignore[no-untyped-def]
        return cls(*_exactly(data, 1, cls.__name__))


class _Arguments:
    """A list of strings (SMFIC_MAIL, SMFIC_RCPT): the address, then ESMTP arguments."""

    code: ClassVar[bytes] = b""
    args: tuple[str, ...]

    def data(self) -> bytes:
        return b"".join(_text(a) for a in self.args)

    @classmethod
    def parse(cls, data: bytes):  # type: ignore[no-untyped-def]
        args = tuple(_strings(data))
        if not args:
            raise MilterProtocolError(f"{cls.__name__}: no address")
        return cls(args)


class _Pair:
    code: ClassVar[bytes] = b""
    name: str
    value: str

    def data(self) -> bytes:
        return _text(self.name) + _text(self.value)

    @classmethod
    def parse(cls, data: bytes):  # type: ignore[no-untyped-def]
        return cls(*_exactly(data, 2, cls.__name__))


class _IndexedPair:
    code: ClassVar[bytes] = b""
    index: int
    name: str
    value: str

    def data(self) -> bytes:
        return _U32.pack(self.index) + _text(self.name) + _text(self.value)

    @classmethod
    def parse(cls, data: bytes):  # type: ignore[no-untyped-def]
        index, rest = _u32(data, cls.__name__)
        return cls(index, *_exactly(rest, 2, cls.__name__))


class _Chunk:
    code: ClassVar[bytes] = b""
    chunk: bytes

    def data(self) -> bytes:
        return self.chunk

    @classmethod
    def parse(cls, data: bytes):  # type: ignore[no-untyped-def]
        return cls(data)


# ---- Options negotiation (both directions) ------------------------------------------------


@dataclass(frozen=True)
class OptNeg:
    """SMFIC_OPTNEG: version, action flags, protocol flags; a milter's reply may add macro lists."""

    version: int = VERSION
    actions: int = 0
    protocol: int = 0
    macros: tuple[tuple[int, str], ...] = ()  # (SMFIM_* stage, "space separated names")
    code: ClassVar[bytes] = b"O"

    def data(self) -> bytes:
        lists = b"".join(_U32.pack(stage) + _text(names) for stage, names in self.macros)
        return struct.pack("!III", self.version, self.actions, self.protocol) + lists

    @classmethod
    def parse(cls, data: bytes) -> "OptNeg":
        if len(data) < 12:
            raise MilterProtocolError("OptNeg: truncated")
        version, actions, protocol = struct.unpack_from("!III", data)
        rest = data[12:]
        macros = []
        while rest:  # bounded: each turn consumes at least 5 bytes
            stage, rest = _u32(rest, "OptNeg macro list")
            end = rest.find(b"\0")
            if end < 0:
                raise MilterProtocolError("OptNeg: macro list not NUL-terminated")
            macros.append((stage, rest[:end].decode("utf-8", "surrogateescape")))
            rest = rest[end + 1 :]
        return cls(version, actions, protocol, tuple(macros))


# ---- Commands (MTA -> milter) -------------------------------------------------------------


@dataclass(frozen=True)
class Macro:
    """SMFIC_MACRO: the macros for the command C{stage} (a command byte) that follows."""

    stage: bytes
    macros: tuple[tuple[str, str], ...] = ()
    code: ClassVar[bytes] = b"D"

    def data(self) -> bytes:
        return self.stage + b"".join(_text(n) + _text(v) for n, v in self.macros)

    @classmethod
    def parse(cls, data: bytes) -> "Macro":
        if not data:
            raise MilterProtocolError("Macro: no stage")
        strings = _strings(data[1:])
        if len(strings) % 2:
            raise MilterProtocolError("Macro: a name without a value")
        return cls(data[:1], tuple(zip(strings[::2], strings[1::2])))


@dataclass(frozen=True)
class Connect:
    """SMFIC_CONNECT: client host name, family (FAMILY_*), port and address."""

    hostname: str
    family: str = FAMILY_UNKNOWN
    port: int = 0
    address: str = ""
    code: ClassVar[bytes] = b"C"

    def data(self) -> bytes:
        head = _text(self.hostname) + self.family.encode("ascii")
        if self.family == FAMILY_UNKNOWN:
            return head
        return head + _U16.pack(self.port) + _text(self.address)

    @classmethod
    def parse(cls, data: bytes) -> "Connect":
        end = data.find(b"\0")
        if end < 0 or len(data) < end + 2:
            raise MilterProtocolError("Connect: truncated")
        hostname = data[:end].decode("utf-8", "surrogateescape")
        family = data[end + 1 : end + 2].decode("ascii", "replace")
        rest = data[end + 2 :]
        if family == FAMILY_UNKNOWN:
            if rest:
                raise MilterProtocolError("Connect: data after an unknown family")
            return cls(hostname)
        if family not in (FAMILY_UNIX, FAMILY_INET, FAMILY_INET6) or len(rest) < 2:
            raise MilterProtocolError(f"Connect: bad family {family!r} or truncated")
        (port,) = _U16.unpack_from(rest)
        (address,) = _exactly(rest[2:], 1, "Connect address")
        return cls(hostname, family, port, address)


@dataclass(frozen=True)
class Helo(_OneString):
    name: str
    code: ClassVar[bytes] = b"H"
    _field: ClassVar[str] = "name"


@dataclass(frozen=True)
class Mail(_Arguments):
    """SMFIC_MAIL: C{<sender>} then ESMTP arguments."""

    args: tuple[str, ...]
    code: ClassVar[bytes] = b"M"


@dataclass(frozen=True)
class Rcpt(_Arguments):
    """SMFIC_RCPT: C{<recipient>} then ESMTP arguments."""

    args: tuple[str, ...]
    code: ClassVar[bytes] = b"R"


@dataclass(frozen=True)
class Data(_Empty):
    code: ClassVar[bytes] = b"T"


@dataclass(frozen=True)
class Header(_Pair):
    name: str
    value: str
    code: ClassVar[bytes] = b"L"


@dataclass(frozen=True)
class EndOfHeaders(_Empty):
    code: ClassVar[bytes] = b"N"


@dataclass(frozen=True)
class Body(_Chunk):
    """SMFIC_BODY: at most L{CHUNK_SIZE} bytes of body (CRLF lines)."""

    chunk: bytes
    code: ClassVar[bytes] = b"B"


@dataclass(frozen=True)
class EndOfMessage(_Chunk):
    """SMFIC_BODYEOB (may carry a last body chunk; we send it empty)."""

    chunk: bytes = b""
    code: ClassVar[bytes] = b"E"


@dataclass(frozen=True)
class Abort(_Empty):
    code: ClassVar[bytes] = b"A"


@dataclass(frozen=True)
class Quit(_Empty):
    code: ClassVar[bytes] = b"Q"


@dataclass(frozen=True)
class QuitNewConnection(_Empty):
    """SMFIC_QUIT_NC: end this SMTP connection, keep the milter connection for another."""

    code: ClassVar[bytes] = b"K"


@dataclass(frozen=True)
class Unknown(_OneString):
    """SMFIC_UNKNOWN: an SMTP command the MTA did not recognise."""

    command: str
    code: ClassVar[bytes] = b"U"
    _field: ClassVar[str] = "command"


# ---- Replies (milter -> MTA) --------------------------------------------------------------


@dataclass(frozen=True)
class Accept(_Empty):
    code: ClassVar[bytes] = b"a"


@dataclass(frozen=True)
class Continue(_Empty):
    code: ClassVar[bytes] = b"c"


@dataclass(frozen=True)
class Discard(_Empty):
    code: ClassVar[bytes] = b"d"


@dataclass(frozen=True)
class Reject(_Empty):
    code: ClassVar[bytes] = b"r"


@dataclass(frozen=True)
class Tempfail(_Empty):
    code: ClassVar[bytes] = b"t"


@dataclass(frozen=True)
class Skip(_Empty):
    """SMFIR_SKIP: send no more body chunks."""

    code: ClassVar[bytes] = b"s"


@dataclass(frozen=True)
class Progress(_Empty):
    """SMFIR_PROGRESS: still working; the MTA restarts its timeout."""

    code: ClassVar[bytes] = b"p"


@dataclass(frozen=True)
class Shutdown(_Empty):
    """SMFIR_SHUTDOWN: 421, close the SMTP connection."""

    code: ClassVar[bytes] = b"4"


@dataclass(frozen=True)
class ConnectionFail(_Empty):
    code: ClassVar[bytes] = b"f"


@dataclass(frozen=True)
class ReplyCode(_OneString):
    """SMFIR_REPLYCODE: a full SMTP reply, C{"550 5.7.1 text"} (lines joined by CRLF)."""

    text: str
    code: ClassVar[bytes] = b"y"
    _field: ClassVar[str] = "text"


@dataclass(frozen=True)
class AddHeader(_Pair):
    name: str
    value: str
    code: ClassVar[bytes] = b"h"


@dataclass(frozen=True)
class InsertHeader(_IndexedPair):
    """SMFIR_INSHEADER: insert at position C{index} (0: first header)."""

    index: int
    name: str
    value: str
    code: ClassVar[bytes] = b"i"


@dataclass(frozen=True)
class ChangeHeader(_IndexedPair):
    """SMFIR_CHGHEADER: the C{index}-th (from 1) header C{name}; an empty value deletes it."""

    index: int
    name: str
    value: str
    code: ClassVar[bytes] = b"m"


@dataclass(frozen=True)
class AddRecipient(_OneString):
    recipient: str
    code: ClassVar[bytes] = b"+"
    _field: ClassVar[str] = "recipient"


@dataclass(frozen=True)
class AddRecipientPar:
    """SMFIR_ADDRCPT_PAR: a recipient and its ESMTP arguments."""

    recipient: str
    args: str = ""
    code: ClassVar[bytes] = b"2"

    def data(self) -> bytes:
        return _text(self.recipient) + (_text(self.args) if self.args else b"")

    @classmethod
    def parse(cls, data: bytes) -> "AddRecipientPar":
        strings = _strings(data)
        if len(strings) not in (1, 2):
            raise MilterProtocolError("AddRecipientPar: expected 1 or 2 strings")
        return cls(*strings)


@dataclass(frozen=True)
class DeleteRecipient(_OneString):
    recipient: str
    code: ClassVar[bytes] = b"-"
    _field: ClassVar[str] = "recipient"


@dataclass(frozen=True)
class ChangeFrom:
    """SMFIR_CHGFROM: a new envelope sender and its ESMTP arguments."""

    sender: str
    args: str = ""
    code: ClassVar[bytes] = b"e"

    def data(self) -> bytes:
        return _text(self.sender) + (_text(self.args) if self.args else b"")

    @classmethod
    def parse(cls, data: bytes) -> "ChangeFrom":
        strings = _strings(data)
        if len(strings) not in (1, 2):
            raise MilterProtocolError("ChangeFrom: expected 1 or 2 strings")
        return cls(*strings)


@dataclass(frozen=True)
class ReplaceBody(_Chunk):
    """SMFIR_REPLBODY: a chunk of the new body; chunks are concatenated."""

    chunk: bytes
    code: ClassVar[bytes] = b"b"


@dataclass(frozen=True)
class Quarantine(_OneString):
    reason: str
    code: ClassVar[bytes] = b"q"
    _field: ClassVar[str] = "reason"


Command = Union[
    OptNeg, Macro, Connect, Helo, Mail, Rcpt, Data, Header, EndOfHeaders, Body,
    EndOfMessage, Abort, Quit, QuitNewConnection, Unknown,
]  # fmt: skip
Reply = Union[
    OptNeg, Accept, Continue, Discard, Reject, Tempfail, Skip, Progress, Shutdown,
    ConnectionFail, ReplyCode, AddHeader, InsertHeader, ChangeHeader, AddRecipient,
    AddRecipientPar, DeleteRecipient, ChangeFrom, ReplaceBody, Quarantine,
]  # fmt: skip

COMMANDS: dict[bytes, Callable[[bytes], Command]] = {
    c.code: c.parse  # type: ignore[attr-defined]
    for c in (OptNeg, Macro, Connect, Helo, Mail, Rcpt, Data, Header, EndOfHeaders, Body,
              EndOfMessage, Abort, Quit, QuitNewConnection, Unknown)
}  # fmt: skip
REPLIES: dict[bytes, Callable[[bytes], Reply]] = {
    c.code: c.parse  # type: ignore[attr-defined]
    for c in (OptNeg, Accept, Continue, Discard, Reject, Tempfail, Skip, Progress, Shutdown,
              ConnectionFail, ReplyCode, AddHeader, InsertHeader, ChangeHeader, AddRecipient,
              AddRecipientPar, DeleteRecipient, ChangeFrom, ReplaceBody, Quarantine)
}  # fmt: skip
#: Replies that change the message or envelope at end of message (not final).
MODIFICATIONS = (
    AddHeader, InsertHeader, ChangeHeader, AddRecipient, AddRecipientPar, DeleteRecipient,
    ChangeFrom, ReplaceBody, Quarantine,
)  # fmt: skip


def encode(message: Command | Reply) -> bytes:
    """The packet bytes of a typed command or reply."""
    return Packet(message.code, message.data()).encode()


def _decode(packet: Packet, table: dict[bytes, Callable[[bytes], object]], kind: str) -> object:
    parse = table.get(packet.command)
    if parse is None:
        raise MilterProtocolError(f"unknown {kind} {packet.command!r}")
    return parse(packet.data)


def decode_command(packet: Packet) -> Command:
    """The typed SMFIC_* command of a packet (what a milter receives)."""
    return _decode(packet, COMMANDS, "command")  # type: ignore[return-value]


def decode_reply(packet: Packet) -> Reply:
    """The typed SMFIR_* reply of a packet (what the MTA receives)."""
    return _decode(packet, REPLIES, "reply")  # type: ignore[return-value]


def body_chunks(body: bytes, size: int = CHUNK_SIZE) -> list[Body]:
    """C{body} as SMFIC_BODY commands of at most C{size} bytes."""
    return [Body(body[i : i + size]) for i in range(0, len(body), size)]


@dataclass
class Decoder:
    """
    Incremental packet splitter: C{feed} bytes, get the complete packets.

    A length of 0 or above C{max_packet} raises L{MilterProtocolError};
    after an error the decoder refuses further input.
    """

    max_packet: int = MAX_PACKET
    _buffer: bytearray = field(default_factory=bytearray)
    _failed: bool = False

    def feed(self, data: bytes) -> list[Packet]:
        if self._failed:
            raise MilterProtocolError("decoder already failed")
        self._buffer += data
        packets: list[Packet] = []
        while len(self._buffer) >= 4:  # bounded: each turn consumes a packet or stops
            (length,) = _U32.unpack_from(self._buffer)
            if length == 0 or length > self.max_packet:
                self._failed = True
                raise MilterProtocolError(f"packet length {length} outside 1..{self.max_packet}")
            if len(self._buffer) < 4 + length:
                break
            packets.append(Packet(bytes(self._buffer[4:5]), bytes(self._buffer[5 : 4 + length])))
            del self._buffer[: 4 + length]
        return packets
