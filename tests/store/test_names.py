"""Tests for mailserver.store.names: Maildir file names, made and parsed."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from mailserver.store.names import (
    MaildirName,
    escape_host,
    make_name,
    parse_name,
    split_name,
    virtual_size,
)


class MakeNameTests(SynchronousTestCase):
    def test_format(self) -> None:
        """Seconds, M<usec>, P<pid>, Q<counter>, host and ,S=<size>."""
        self.assertEqual(
            make_name(1700000000.5, 4242, 7, "mx.example.org", 1234),
            "1700000000.M500000P4242Q7.mx.example.org,S=1234",
        )

    def test_virtual_size(self) -> None:
        """A known CRLF size is appended as ,W=."""
        self.assertEqual(
            make_name(12.25, 1, 2, "h", 10, vsize=12),
            "12.M250000P1Q2.h,S=10,W=12",
        )

    def test_whole_second(self) -> None:
        self.assertEqual(make_name(5.0, 1, 1, "h", 0), "5.M0P1Q1.h,S=0")

    def test_host_escaped(self) -> None:
        """'/' and ':' become \\057 and \\072 (Maildir spec); ',' \\054."""
        self.assertEqual(escape_host("a/b:c,d"), "a\\057b\\072c\\054d")
        name = make_name(1.0, 1, 1, "a/b:c,S=9", 3)
        self.assertNotIn("/", name)
        self.assertNotIn(":", name)
        self.assertEqual(parse_name(name).size, 3)

    def test_negative_rejected(self) -> None:
        for args in [(-1.0, 1, 1, "h", 1), (1.0, -1, 1, "h", 1), (1.0, 1, -1, "h", 1),
                     (1.0, 1, 1, "h", -1)]:
            self.assertRaises(ValueError, make_name, *args)
        self.assertRaises(ValueError, make_name, 1.0, 1, 1, "h", 1, -2)


class ParseNameTests(SynchronousTestCase):
    def test_round_trip(self) -> None:
        name = make_name(1700000000.5, 4242, 7, "mx.example.org", 1234, 1300)
        self.assertEqual(
            parse_name(name),
            MaildirName("1700000000.M500000P4242Q7.mx.example.org", 1234, None),
        )
        self.assertEqual(virtual_size(name), 1300)

    def test_info(self) -> None:
        """Everything after ':' is the info, flags included."""
        self.assertEqual(
            parse_name("1.M2P3Q4.host,S=10,W=12:2,FS"),
            ("1.M2P3Q4.host", 10, "2,FS"),
        )
        self.assertEqual(parse_name("1.M2P3Q4.host,S=10:2,"), ("1.M2P3Q4.host", 10, "2,"))

    def test_legacy_name(self) -> None:
        """qmail-style names without fields have no size."""
        self.assertEqual(parse_name("1234.5678.host"), ("1234.5678.host", None, None))
        self.assertEqual(parse_name("1234.5678.host:2,S"), ("1234.5678.host", None, "2,S"))
        self.assertIsNone(virtual_size("1234.5678.host"))

    def test_field_order(self) -> None:
        """,W= before ,S= parses the same."""
        self.assertEqual(parse_name("u,W=12,S=10"), ("u", 10, None))
        self.assertEqual(virtual_size("u,W=12,S=10"), 12)

    def test_non_field_commas_stay_unique(self) -> None:
        """A comma that does not start a K=V field belongs to the unique part."""
        self.assertEqual(parse_name("1.2.ho,st,S=5"), ("1.2.ho,st", 5, None))
        self.assertEqual(parse_name("1.2.host,junk"), ("1.2.host,junk", None, None))
        self.assertEqual(
            split_name("1.2.h,X=a,S=5:2,T"), ("1.2.h", {"X": "a", "S": "5"}, "2,T")
        )

    def test_bad_size(self) -> None:
        """A non-numeric ,S= counts as absent (readers stat() instead)."""
        self.assertEqual(parse_name("u,S=abc"), ("u", None, None))
        self.assertEqual(parse_name("u,S="), ("u", None, None))
        self.assertEqual(parse_name("u,S=-1"), ("u", None, None))
        self.assertEqual(parse_name("u,S=\u0661"), ("u", None, None))

    def test_escaped_host(self) -> None:
        name = make_name(1.0, 2, 3, "a:b", 4)
        self.assertEqual(parse_name(name + ":2,S"), ("1.M0P2Q3.a\\072b", 4, "2,S"))
