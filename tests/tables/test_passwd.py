"""Tests for mailserver.tables.passwd: the Dovecot passwd-file parser."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from mailserver.errors import Problem
from mailserver.tables.passwd import (
    UserRecord,
    check_name,
    format_passwd_line,
    lookup_key,
    parse_passwd,
    parse_passwd_line,
    replace_password,
    split_password,
)

ARGON = "$argon2id$v=19$m=65536,t=3,p=1$AU1Ow78+T2dNQdrsWiw8hQ$gNOWyu9pFbSnCWAxcrOnDFKkogLciWj2vp4sHh+E0cI"
BCRYPT = "$2y$05$abcdefghijklmnopqrstuu8J3SjO9LQpndv9O3HW/e0PB1xKk.PJu"
SHA512 = "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1"
SHA256 = "$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5"


class ParseLineTests(SynchronousTestCase):
    def test_full_line(self) -> None:
        record = parse_passwd_line(
            f"Alice@Example.COM:{{ARGON2ID}}{ARGON}:5000:5000:Alice A:/var/mail/alice::quota_rule=*:storage=1G nopassword"
        )
        self.assertEqual(record.name, "Alice@example.com")
        self.assertEqual(record.key, "alice@example.com")
        self.assertEqual(record.domain, "example.com")
        self.assertEqual(record.scheme, "ARGON2ID")
        self.assertEqual(record.password, ARGON)
        self.assertEqual((record.uid, record.gid, record.home), (5000, 5000, "/var/mail/alice"))
        # Colons after the seventh field belong to the extra fields, as in Dovecot.
        self.assertEqual(record.extra, {"quota_rule": "*:storage=1G", "nopassword": ""})

    def test_minimal_line(self) -> None:
        record = parse_passwd_line(f"bob:{{SHA512-CRYPT}}{SHA512}")
        self.assertEqual(record, UserRecord("bob", "SHA512-CRYPT", SHA512))
        self.assertEqual(record.domain, "")

    def test_empty_trailing_fields_are_none(self) -> None:
        record = parse_passwd_line(f"bob:{{BLF-CRYPT}}{BCRYPT}::::::")
        self.assertEqual((record.uid, record.gid, record.home, record.extra), (None, None, None, {}))

    def test_scheme_is_case_insensitive(self) -> None:
        self.assertEqual(split_password(f"{{sha256-crypt}}{SHA256}"), ("SHA256-CRYPT", SHA256))

    def test_plain_aliases(self) -> None:
        self.assertEqual(split_password("{CLEARTEXT}secret"), ("PLAIN", "secret"))
        self.assertEqual(split_password("{plain}secret"), ("PLAIN", "secret"))

    def test_unprefixed_crypt_strings_are_mapped(self) -> None:
        self.assertEqual(split_password(BCRYPT), ("BLF-CRYPT", BCRYPT))
        self.assertEqual(split_password("$2b$" + BCRYPT[4:]), ("BLF-CRYPT", "$2b$" + BCRYPT[4:]))
        self.assertEqual(split_password(SHA512), ("SHA512-CRYPT", SHA512))
        self.assertEqual(split_password(ARGON), ("ARGON2ID", ARGON))
        self.assertEqual(split_password("{CRYPT}" + SHA256), ("SHA256-CRYPT", SHA256))

    def test_unsupported_crypt_strings_are_refused(self) -> None:
        for text in ("secret", "$1$salt$UsdFqFVB.FsuinRDK5eE..", "abJnggxhB/yWI", "{CRYPT}$1$x$y"):
            with self.assertRaises(ValueError, msg=text):
                split_password(text)

    def test_hash_must_fit_its_scheme(self) -> None:
        with self.assertRaises(ValueError) as caught:
            split_password("{SHA512-CRYPT}" + BCRYPT)
        self.assertIn("not a SHA512-CRYPT hash", str(caught.exception))

    def test_names(self) -> None:
        self.assertEqual(check_name("Alice@Example.COM"), "Alice@example.com")
        self.assertEqual(check_name("postmaster"), "postmaster")
        for bad in ("", "a b@x", "a:b", "#root", "a@b@c", "@example.com", "alice@", "a\tb", "a\x00"):
            with self.assertRaises(ValueError, msg=repr(bad)):
                check_name(bad)

    def test_lookup_key(self) -> None:
        self.assertEqual(lookup_key("Alice@Example.COM"), "alice@example.com")
        self.assertEqual(lookup_key("Bob"), "bob")


class ParseFileTests(SynchronousTestCase):
    def parse(self, text: str):
        return parse_passwd(text, "/etc/mailserver/passwd")

    def test_comments_blank_lines_and_crlf(self) -> None:
        records, problems = self.parse(
            "# users\r\n\r\n   \n  # indented comment\n"
            f"alice@example.com:{{ARGON2ID}}{ARGON}\r\n"
            f"bob@example.org:{{SHA512-CRYPT}}{SHA512}:1:2::/home/bob"
        )
        self.assertEqual(problems, [])
        self.assertEqual(list(records), ["alice@example.com", "bob@example.org"])
        self.assertEqual(records["alice@example.com"].password, ARGON)  # no CR kept
        self.assertEqual(records["bob@example.org"].home, "/home/bob")

    def test_regression_unusable_user_names_are_skipped_with_file_and_line(self) -> None:
        """Issue 17 item 3: path-like names are left out (a warning at file:line), the rest load."""
        records, problems = self.parse(
            f"../x@example.test:{{PLAIN}}a\n"
            f"x@../../tmp:{{PLAIN}}a\n"
            f"../../../tmp/pwned:{{PLAIN}}a\n"
            f"x@example.test.:{{PLAIN}}a\n"
            f"bob@example.test:{{ARGON2ID}}{ARGON}\n"
        )
        self.assertEqual(list(records), ["bob@example.test"])
        skipped = [p for p in problems if "entry skipped" in p.message]
        self.assertEqual([(p.file, p.line, p.severity) for p in skipped],
                         [("/etc/mailserver/passwd", n, "warning") for n in (1, 2, 3, 4)])

    def test_bad_lines_are_reported_with_file_and_line(self) -> None:
        records, problems = self.parse(
            "# header\n"
            "nopassword\n"  # 2
            "empty:\n"  # 3
            "weird:{MD5}abc\n"  # 4
            f"baduid:{{ARGON2ID}}{ARGON}:x:1\n"  # 5
            f"badgid:{{ARGON2ID}}{ARGON}:1:-1\n"  # 6
            f"big:{{ARGON2ID}}{ARGON}:4294967296\n"  # 7
            f"good@Example.com:{{ARGON2ID}}{ARGON}\n"  # 8
        )
        self.assertEqual(list(records), ["good@example.com"])
        self.assertEqual([(p.file, p.line, p.severity) for p in problems], [
            ("/etc/mailserver/passwd", n, "error") for n in (2, 3, 4, 5, 6, 7)
        ])
        messages = [p.message for p in problems]
        self.assertIn("empty password field", messages[1])
        self.assertIn("unknown password scheme {MD5}", messages[2])
        self.assertIn("bad uid 'x'", messages[3])
        self.assertIn("bad gid '-1'", messages[4])
        self.assertIn("bad uid '4294967296'", messages[5])
        self.assertEqual(str(problems[2]), "/etc/mailserver/passwd:4: error: unknown password scheme {MD5}")

    def test_duplicate_is_an_error_and_first_wins(self) -> None:
        records, problems = self.parse(
            f"alice@example.com:{{ARGON2ID}}{ARGON}:1:1\n" f"ALICE@EXAMPLE.COM:{{SHA512-CRYPT}}{SHA512}:2:2\n"
        )
        self.assertEqual(records["alice@example.com"].uid, 1)
        self.assertEqual(len(problems), 1)
        self.assertEqual((problems[0].line, problems[0].severity), (2, "error"))
        self.assertIn("duplicate user", problems[0].message)
        self.assertIn("first at line 1", problems[0].message)

    def test_plain_is_a_warning(self) -> None:
        records, problems = self.parse("# x\ntest@example.com:{PLAIN}secret\n")
        self.assertEqual(records["test@example.com"].password, "secret")
        self.assertEqual(problems, [Problem("/etc/mailserver/passwd", 2, "plaintext password for 'test@example.com'", "warning")])

    def test_empty_file(self) -> None:
        self.assertEqual(self.parse(""), ({}, []))


class FormatTests(SynchronousTestCase):
    def test_round_trip(self) -> None:
        records = [
            UserRecord("alice@example.com", "ARGON2ID", ARGON),
            UserRecord("bob", "BLF-CRYPT", BCRYPT, 10, 20),
            UserRecord("carol@example.org", "SHA512-CRYPT", SHA512, None, None, "/srv/carol"),
            UserRecord("dave", "PLAIN", "pw", 1, 1, "/h", {"quota_rule": "*:storage=1G", "flag": ""}),
        ]
        for record in records:
            line = format_passwd_line(record)
            self.assertEqual(parse_passwd_line(line), record, line)
        self.assertEqual(format_passwd_line(records[0]), f"alice@example.com:{{ARGON2ID}}{ARGON}")
        self.assertEqual(format_passwd_line(records[1]), f"bob:{{BLF-CRYPT}}{BCRYPT}:10:20")
        self.assertEqual(format_passwd_line(records[3]), "dave:{PLAIN}pw:1:1::/h::quota_rule=*:storage=1G flag")

    def test_refuses_fields_that_would_not_parse_back(self) -> None:
        for record in (
            UserRecord("a:b", "PLAIN", "x"),
            UserRecord("a", "PLAIN", "x:y"),
            UserRecord("a", "PLAIN", "x", home="/a:b"),
            UserRecord("a", "PLAIN", "x", home="/a\nb"),
            UserRecord("a", "PLAIN", "x", extra={"k": "two words"}),
        ):
            with self.assertRaises(ValueError, msg=repr(record)):
                format_passwd_line(record)

    def test_replace_password_keeps_other_fields(self) -> None:
        self.assertEqual(
            replace_password("Alice@example.com:{PLAIN}old:1:2:gecos, text:/h:/bin/sh:a=b", "{PLAIN}new"),
            "Alice@example.com:{PLAIN}new:1:2:gecos, text:/h:/bin/sh:a=b",
        )
        self.assertEqual(replace_password("bob:{PLAIN}old", "{PLAIN}new"), "bob:{PLAIN}new")
