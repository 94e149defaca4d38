"""The milter codec: every packet type round-trips; bad input is a MilterProtocolError."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from mailserver.milter import codec
from mailserver.milter.codec import MilterProtocolError, Packet

COMMANDS = [
    codec.OptNeg(6, codec.SMFIF_ALL, codec.SMFIP_NR_HDR | codec.SMFIP_SKIP),
    codec.Macro(b"C", (("j", "mx.example.com"), ("{daemon_name}", "mx"))),
    codec.Macro(b"E"),
    codec.Connect("client.example.com", codec.FAMILY_INET, 4567, "192.0.2.1"),
    codec.Connect("[2001:db8::1]", codec.FAMILY_INET6, 25, "2001:db8::1"),
    codec.Connect("localhost", codec.FAMILY_UNIX, 0, "/run/socket"),
    codec.Connect("unknown"),
    codec.Helo("client.example.com"),
    codec.Mail(("<a@example.com>", "SIZE=100", "BODY=8BITMIME")),
    codec.Rcpt(("<b@example.org>",)),
    codec.Data(),
    codec.Header("Subject", "h\u00e9llo\n\tthere"),
    codec.EndOfHeaders(),
    codec.Body(b"line\r\n" * 3),
    codec.EndOfMessage(),
    codec.Abort(),
    codec.Quit(),
    codec.QuitNewConnection(),
    codec.Unknown("XFOO bar"),
]
REPLIES = [
    codec.OptNeg(6, codec.SMFIF_ADDHDRS, codec.SMFIP_NOHELO, ((codec.SMFIM_CONNECT, "j {daemon_name}"),)),
    codec.Accept(), codec.Continue(), codec.Discard(), codec.Reject(), codec.Tempfail(),
    codec.Skip(), codec.Progress(), codec.Shutdown(), codec.ConnectionFail(),
    codec.ReplyCode("554 5.7.1 Spam message rejected"),
    codec.AddHeader("X-Spam", "Yes"),
    codec.InsertHeader(1, "Authentication-Results", "mx; spf=none"),
    codec.ChangeHeader(2, "Subject", ""),
    codec.AddRecipient("<c@example.net>"),
    codec.AddRecipientPar("<d@example.net>", "NOTIFY=NEVER"),
    codec.AddRecipientPar("<e@example.net>"),
    codec.DeleteRecipient("<b@example.org>"),
    codec.ChangeFrom("<bounce@example.com>", "SIZE=10"),
    codec.ChangeFrom("<>"),
    codec.ReplaceBody(b"new body\r\n"),
    codec.Quarantine("suspicious"),
]  # fmt: skip


def _packet(data: bytes) -> Packet:
    packets = codec.Decoder().feed(data)
    assert len(packets) == 1
    return packets[0]


class RoundTripTests(SynchronousTestCase):
    def test_every_command(self) -> None:
        """Each SMFIC_* command encodes to one packet that decodes to the same value."""
        for command in COMMANDS:
            self.assertEqual(codec.decode_command(_packet(codec.encode(command))), command)

    def test_every_reply(self) -> None:
        """Each SMFIR_* reply encodes to one packet that decodes to the same value."""
        for reply in REPLIES:
            self.assertEqual(codec.decode_reply(_packet(codec.encode(reply))), reply)

    def test_wire_format(self) -> None:
        """4-byte big-endian length (command byte included), command byte, data."""
        self.assertEqual(codec.encode(codec.Helo("x")), b"\x00\x00\x00\x03Hx\x00")
        self.assertEqual(codec.encode(codec.Continue()), b"\x00\x00\x00\x01c")
        self.assertEqual(
            codec.encode(codec.OptNeg(6, 1, 2)),
            b"\x00\x00\x00\x0dO\x00\x00\x00\x06\x00\x00\x00\x01\x00\x00\x00\x02",
        )
        self.assertEqual(
            codec.encode(codec.Connect("h", codec.FAMILY_INET, 25, "1.2.3.4")),
            b"\x00\x00\x00\x0eCh\x004\x00\x191.2.3.4\x00",
        )

    def test_bytes_survive(self) -> None:
        """Strings that are not UTF-8 round-trip byte for byte."""
        packet = Packet(b"L", b"X-Raw\x00\xff\xfe\x00")
        header = codec.decode_command(packet)
        self.assertEqual(codec.encode(header)[4:], b"LX-Raw\x00\xff\xfe\x00")

    def test_body_chunks(self) -> None:
        """Bodies are cut into SMFIC_BODY chunks of at most 65535 bytes."""
        chunks = codec.body_chunks(b"x" * 140000)
        self.assertEqual([len(c.chunk) for c in chunks], [65535, 65535, 8930])
        self.assertEqual(codec.body_chunks(b""), [])

    def test_nul_in_string_refused(self) -> None:
        self.assertRaises(ValueError, codec.encode, codec.Helo("a\0b"))


class DecoderTests(SynchronousTestCase):
    def test_split_anywhere(self) -> None:
        """Packets arriving a byte at a time, or several at once, come out whole."""
        stream = b"".join(codec.encode(r) for r in REPLIES)
        decoder = codec.Decoder()
        packets = []
        for i in range(len(stream)):
            packets.extend(decoder.feed(stream[i : i + 1]))
        self.assertEqual([codec.decode_reply(p) for p in packets], REPLIES)
        self.assertEqual(len(codec.Decoder().feed(stream)), len(REPLIES))

    def test_oversized(self) -> None:
        """A length above the maximum is refused before its data is buffered, and for good."""
        decoder = codec.Decoder(max_packet=100)
        self.assertEqual(len(decoder.feed(codec.encode(codec.Body(b"x" * 99)))), 1)
        self.assertRaises(MilterProtocolError, decoder.feed, b"\x00\x00\x00\x65")
        self.assertRaises(MilterProtocolError, decoder.feed, codec.encode(codec.Continue()))

    def test_zero_length(self) -> None:
        self.assertRaises(MilterProtocolError, codec.Decoder().feed, b"\x00\x00\x00\x00")

    def test_malformed(self) -> None:
        """Unknown codes, truncated or unterminated data: MilterProtocolError."""
        bad_replies = [
            Packet(b"Z"), Packet(b"O", b"\x00\x00\x00\x06"), Packet(b"y", b"550 no NUL"),
            Packet(b"h", b"OnlyName\x00"), Packet(b"m", b"\x00\x00"), Packet(b"a", b"extra"),
            Packet(b"O", b"\x00" * 12 + b"\x00\x00\x00\x01j"), Packet(b"e", b""),
        ]  # fmt: skip
        for packet in bad_replies:
            self.assertRaises(MilterProtocolError, codec.decode_reply, packet)
        bad_commands = [
            Packet(b"C", b"host"), Packet(b"C", b"host\x00X\x00\x19a\x00"),
            Packet(b"C", b"host\x004\x00"), Packet(b"M", b""), Packet(b"D", b""),
            Packet(b"D", b"Cname\x00"),
        ]  # fmt: skip
        for packet in bad_commands:
            self.assertRaises(MilterProtocolError, codec.decode_command, packet)
