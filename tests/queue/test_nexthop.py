"""relayhost syntax, SASL password maps, and the bytes put on the wire."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from mailserver.errors import MailError
from mailserver.queue.nexthop import (
    NextHop,
    credentials_for,
    enhanced_status,
    load_sasl_passwords,
    nexthop_for,
    parse_relayhost,
    parse_sasl_passwords,
    smtp_payload,
)


class RelayhostTests(SynchronousTestCase):
    def test_empty_is_none(self) -> None:
        self.assertIsNone(parse_relayhost(""))
        self.assertIsNone(parse_relayhost("  "))

    def test_brackets_mean_no_mx_lookup(self) -> None:
        self.assertEqual(
            parse_relayhost("[smtp.example.com]:587"),
            NextHop("smtp.example.com", 587, False, "[smtp.example.com]:587"),
        )
        self.assertEqual(parse_relayhost("[smtp.example.com]").port, 25)

    def test_bare_host_means_mx_lookup(self) -> None:
        hop = parse_relayhost("Example.COM:2525")
        self.assertEqual((hop.host, hop.port, hop.mx), ("example.com", 2525, True))

    def test_ip_literals(self) -> None:
        self.assertEqual(parse_relayhost("[127.0.0.1]:2525").host, "127.0.0.1")
        self.assertEqual(parse_relayhost("[ipv6:::1]:2525").host, "::1")
        self.assertFalse(parse_relayhost("[::1]").mx)

    def test_bad_values(self) -> None:
        for bad in ("[host", "host:abc", "[host]:0", "[host]:70000", "bad host", "[host]x"):
            self.assertRaises(ValueError, parse_relayhost, bad)


class NexthopForTests(SynchronousTestCase):
    def test_domain(self) -> None:
        self.assertEqual(nexthop_for("bob@Example.ORG", 2525), NextHop("example.org", 2525, True, "example.org"))

    def test_domain_literal(self) -> None:
        hop = nexthop_for("bob@[127.0.0.1]")
        self.assertEqual((hop.host, hop.mx), ("127.0.0.1", False))

    def test_bad_addresses(self) -> None:
        for bad in ("bob", "@example.org", "bob@", "bob@[999.1.1.1]", "bob@exa mple"):
            self.assertRaises(MailError, nexthop_for, bad)


class SaslPasswordTests(SynchronousTestCase):
    def test_parse(self) -> None:
        table = parse_sasl_passwords("# comment\n\n[smtp.Example.com]:587 user@example.com:pa:ss\n")
        self.assertEqual(table, {"[smtp.example.com]:587": ("user@example.com", "pa:ss")})

    def test_bad_line_names_file_and_line(self) -> None:
        error = self.assertRaises(ValueError, parse_sasl_passwords, "ok user:pw\nbroken\n", "sasl_passwd")
        self.assertIn("sasl_passwd:2", str(error))

    def test_regression_unicode_space_in_sasl_passwd(self) -> None:
        """A U+00A0 between host and credentials is an error at file:line; inside a password it is kept."""
        for space in ("\u00a0", "\u3000", "\x1c", "\x1f"):
            error = self.assertRaises(
                ValueError, parse_sasl_passwords, f"ok user:pw\n[smtp.example.com]{space}user:pw\n", "sasl_passwd"
            )
            self.assertIn("sasl_passwd:2", str(error))
            self.assertIn(f"U+{ord(space):04X}", str(error))
            table = parse_sasl_passwords(f"[smtp.example.com] user:pw{space}\n")
            self.assertEqual(table["[smtp.example.com]"], ("user", f"pw{space}"))

    def test_load_strips_map_type(self) -> None:
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("relay.example user:secret\n")
        self.assertEqual(load_sasl_passwords(f"hash:{path}"), {"relay.example": ("user", "secret")})
        self.assertEqual(load_sasl_passwords(""), {})

    def test_lookup_order(self) -> None:
        hop = parse_relayhost("[smtp.example.com]:587")
        table = {"[smtp.example.com]:587": ("a", "1"), "mx1.example.com": ("b", "2")}
        self.assertEqual(credentials_for(table, hop, "mx1.example.com"), ("b", "2"))
        self.assertEqual(credentials_for(table, hop, "other"), ("a", "1"))
        self.assertIsNone(credentials_for({}, hop, "x"))


class PayloadTests(SynchronousTestCase):
    def test_crlf_and_final_line_end(self) -> None:
        self.assertEqual(smtp_payload(b"a\nb"), b"a\r\nb\r\n")
        self.assertEqual(smtp_payload(b"a\r\nb\r\n"), b"a\r\nb\r\n")
        self.assertEqual(smtp_payload(b""), b"")

    def test_dot_stuffing_everywhere(self) -> None:
        self.assertEqual(smtp_payload(b".start\nmid\n.\n..x\n"), b"..start\r\nmid\r\n..\r\n...x\r\n")

    def test_dot_stuffing_is_not_chunk_dependent(self) -> None:
        # twisted's per-chunk transform misses a dot at a 16 KiB chunk start
        message = b"x" * 16383 + b"\n.\nafter\n"
        payload = smtp_payload(message)
        self.assertNotIn(b"\r\n.\r\n", payload)

    def test_bare_cr_cannot_end_data(self) -> None:
        # SMTP smuggling: "\n.\r\n" or "\r.\r" must not reach the wire as an end of data
        payload = smtp_payload(b"a\n.\r\nMAIL FROM:<x>\rb\r.\r\n")
        self.assertNotIn(b"\r\n.\r\n", payload)
        self.assertNotIn(b"\r.\r", payload)


class EnhancedStatusTests(SynchronousTestCase):
    def test_from_reply_text(self) -> None:
        self.assertEqual(enhanced_status(550, "5.1.1 User unknown"), "5.1.1")

    def test_derived_when_missing_or_inconsistent(self) -> None:
        self.assertEqual(enhanced_status(550, "User unknown"), "5.0.0")
        self.assertEqual(enhanced_status(450, "5.1.1 inconsistent"), "4.0.0")
        self.assertEqual(enhanced_status(250, "Ok"), "2.0.0")


class SaslTableReferenceTests(SynchronousTestCase):
    def test_table_references_first_wins(self) -> None:
        from collections import namedtuple

        Ref = namedtuple("Ref", "kind path")
        first, second = self.mktemp(), self.mktemp()
        with open(first, "w") as f:
            f.write("relay.example a:1\n")
        with open(second, "w") as f:
            f.write("relay.example b:2\nother.example c:3\n")
        table = load_sasl_passwords((Ref("hash", first), Ref("hash", second)))
        self.assertEqual(table, {"relay.example": ("a", "1"), "other.example": ("c", "3")})
