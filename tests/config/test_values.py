"""Each parameter type: good values typed, bad values reported at file:line."""

from __future__ import annotations

from ipaddress import ip_network

from twisted.trial.unittest import SynchronousTestCase

from mailserver.config.values import TableRef, tls_protocol_range
from tests.config.helpers import build, problems_of

# Line 4 of the file is the setting under test.
PREFIX = "# test file\n\nmail_name = test\n"

GOOD = [
    # boolean
    ("header_checks_decode", "yes", True),
    ("header_checks_decode", "NO", False),
    ("header_checks_decode", "true", True),
    ("header_checks_decode", "False", False),
    # integer and size
    ("smtpd_recipient_limit", "0", 0),
    ("smtpd_recipient_limit", "25", 25),
    ("message_size_limit", "52428800", 52428800),
    # time
    ("smtpd_timeout", "300", 300),
    ("smtpd_timeout", "45s", 45),
    ("smtpd_timeout", "5m", 300),
    ("smtpd_timeout", "2h", 7200),
    ("maximal_queue_lifetime", "1d", 86400),
    ("maximal_queue_lifetime", "2w", 1209600),
    ("imap_timeout", "30M", 1800),
    # list syntax (a domain list): commas and/or white space
    (
        "mydestination",
        "a.example, b.example c.example,,d.example",
        ("a.example", "b.example", "c.example", "d.example"),
    ),
    ("mydestination", "", ()),
    ("mydestination", "Example.COM. example.com", ("example.com",)),
    ("virtual_mailbox_domains", "example.net", ("example.net",)),
    # path
    ("data_directory", "/srv/mail", "/srv/mail"),
    ("data_directory", "data", "/etc/mailserver/data"),
    ("data_directory", "../spool//x/", "/etc/spool/x"),
    ("smtpd_tls_cert_file", "", ""),
    # endpoint list
    ("smtpd_listen", "tcp:25 tcp6:25:interface=\\:\\:1", ("tcp:25", "tcp6:25:interface=\\:\\:1")),
    ("smtpd_listen", "tcp:25, unix:/run/smtp.sock", ("tcp:25", "unix:/run/smtp.sock")),
    ("submission_listen", "", ()),
    # network list
    (
        "mynetworks",
        "10.0.0.0/8, 192.0.2.1 [2001:db8::]/32 [::1] ::1/128",
        tuple(
            ip_network(n)
            for n in ["10.0.0.0/8", "192.0.2.1/32", "2001:db8::/32", "::1/128", "::1/128"]
        ),
    ),
    ("mynetworks", "", ()),
    # enums
    ("default_password_scheme", "blf-crypt", "BLF-CRYPT"),
    ("smtpd_forbid_bare_newline", "normalize", "normalize"),
    ("smtpd_tls_security_level", "ENCRYPT", "encrypt"),
    ("allow_mail_to_files", "alias forward, include", ("alias", "forward", "include")),
    ("allow_mail_to_commands", "", ()),
    # tables
    (
        "alias_maps",
        "/etc/aliases, texthash:aliases2",
        (TableRef("hash", "/etc/aliases"), TableRef("texthash", "/etc/mailserver/aliases2")),
    ),
    ("header_checks", "pcre:/etc/mailserver/hc", (TableRef("pcre", "/etc/mailserver/hc"),)),
    # interfaces and protocols
    ("inet_interfaces", "127.0.0.1, [::1]", ("127.0.0.1", "::1")),
    ("inet_interfaces", "LOOPBACK-ONLY", ("loopback-only",)),
    ("inet_protocols", "ipv6", ("ipv6",)),
    ("inet_protocols", "ipv6, ipv4", ("ipv4", "ipv6")),
    # checked strings
    ("home_mailbox", ".maildir/", ".maildir/"),
    ("recipient_delimiter", "+-", "+-"),
    ("smtpd_tls_mandatory_protocols", "!SSLv2, !SSLv3", "!SSLv2, !SSLv3"),
    ("relayhost", "[smtp.example.net]:587", "[smtp.example.net]:587"),
    ("relayhost", "relay.example.net", "relay.example.net"),
    ("relayhost", "[192.0.2.1]", "[192.0.2.1]"),
    ("myhostname", "Mail.Example.COM", "Mail.Example.COM"),
    ("smtpd_banner", "$myhostname ESMTP ready", "mx.example.org ESMTP ready"),
]

BAD = [
    ("header_checks_decode", "maybe", "expected yes or no, got 'maybe'"),
    ("smtpd_recipient_limit", "-1", "expected a non-negative integer, got '-1'"),
    ("message_size_limit", "10M", "expected a non-negative integer, got '10M'"),
    ("mail_authentication_verify_processes", "65", "expected at most 64, got 65"),
    ("mail_authentication_verify_processes", "-1", "expected a non-negative integer, got '-1'"),
    ("smtpd_timeout", "5x", "expected a time like 300s, 30m, 5d, got '5x'"),
    ("smtpd_timeout", "", "expected a time like 300s, 30m, 5d, got ''"),
    ("smtpd_listen", "tcp:smtp", "'tcp:smtp': port must be a number from 0 to 65535, got 'smtp'"),
    ("imap_listen", "143", "'143': write tcp:143 for a TCP port"),
    (
        "mynetworks",
        "127.0.0.0/8 10.1.1.1/8",
        "non-null host address bits in '10.1.1.1/8', perhaps you should use 10.0.0.0/8",
    ),
    (
        "mynetworks",
        "example.com",
        "expected an address or network like 10.0.0.0/8 or [::1]/128, got 'example.com'",
    ),
    (
        "default_password_scheme",
        "MD5-CRYPT",
        "expected one of ARGON2ID, BLF-CRYPT, SHA512-CRYPT, got 'MD5-CRYPT'",
    ),
    ("smtpd_forbid_bare_newline", "yes", "expected one of normalize, reject, got 'yes'"),
    ("allow_mail_to_files", "alias, pipe", "expected one of alias, forward, include, got 'pipe'"),
    (
        "mydestination",
        "hash:/etc/domains",
        "lookup tables and files are not supported here: 'hash:/etc/domains'",
    ),
    ("mydestination", "bad..name", "expected a domain name, got 'bad..name'"),
    ("myhostname", "-bad-.example", "expected a domain name, got '-bad-.example'"),
    (
        "alias_maps",
        "cdb:/etc/aliases",
        "'cdb:/etc/aliases': unsupported table type 'cdb' (use hash, lmdb, btree, dbm, texthash)",
    ),
    ("alias_maps", "hash:", "'hash:': missing file name after the table type"),
    ("header_checks", "/etc/hc", "'/etc/hc': name the table type, e.g. regexp:/etc/hc"),
    ("inet_interfaces", "all, 127.0.0.1", "all cannot be combined with other values"),
    ("inet_interfaces", "localhost", "expected an IP address, got 'localhost'"),
    ("inet_interfaces", "", "expected all, loopback-only or IP addresses"),
    ("inet_protocols", "ipx", "expected all, ipv4, ipv6 or 'ipv4, ipv6', got 'ipx'"),
    (
        "home_mailbox",
        "Mailbox",
        "'Mailbox' names an mbox file, which is not supported; end it with '/' for a Maildir",
    ),
    ("home_mailbox", "/var/mail/", "'/var/mail/' must be relative to the home directory"),
    ("recipient_delimiter", "@", "'@': white space, '@' and '\"' cannot be delimiters"),
    (
        "smtpd_tls_mandatory_protocols",
        "TLSv9",
        "unknown TLS protocol 'TLSv9' (known: SSLv2, SSLv3, TLSv1, TLSv1.1, TLSv1.2, TLSv1.3)",
    ),
    (
        "smtpd_tls_mandatory_protocols",
        ">=TLSv1.3, <=TLSv1.2",
        "'>=TLSv1.3, <=TLSv1.2' excludes every protocol",
    ),
    ("smtpd_tls_mandatory_protocols", "=>TLSv1.2", "'=>TLSv1.2': use NAME, !NAME, >=NAME or <=NAME"),
    ("relayhost", "[smtp.example.net]:99999", "port must be from 1 to 65535, got 99999"),
    (
        "relayhost",
        "smtp.example.net:25:x",
        "expected host, [host] or [host]:port, got 'smtp.example.net:25:x'",
    ),
    ("data_directory", "a\x00b", "a path must not contain NUL"),
]


class TypedValueTests(SynchronousTestCase):
    def test_good_values(self) -> None:
        for name, value, expected in GOOD:
            config, problems = build(f"{PREFIX}{name} = {value}\n")
            self.assertEqual(getattr(config, name), expected, f"{name} = {value}")
            self.assertEqual(config.where(name), ("main.cf", 4))
            self.assertEqual(problems, [])

    def test_bad_values(self) -> None:
        """A bad value is one error: file:line: parameter: what is wrong."""
        for name, value, message in BAD:
            problems = problems_of(f"{PREFIX}{name} = {value}\n")
            self.assertEqual(problems, [f"main.cf:4: error: {name}: {message}"], f"{name} = {value}")

    def test_all_errors_collected(self) -> None:
        """Every bad line is reported, in file order, in one ConfigError."""
        text = "smtpd_timeout = soon\nmail_name = fine\nmessage_size_limit = big\nbad line\n"
        self.assertEqual(
            problems_of(text),
            [
                "main.cf:1: error: smtpd_timeout: expected a time like 300s, 30m, 5d, got 'soon'",
                "main.cf:3: error: message_size_limit: expected a non-negative integer, got 'big'",
                "main.cf:4: error: expected 'name = value', got 'bad line'",
            ],
        )


class TlsProtocolRangeTests(SynchronousTestCase):
    def test_ranges(self) -> None:
        self.assertEqual(tls_protocol_range(">=TLSv1.2"), ("TLSv1.2", "TLSv1.3"))
        self.assertEqual(tls_protocol_range("!SSLv2, !SSLv3, !TLSv1"), ("TLSv1.1", "TLSv1.3"))
        self.assertEqual(tls_protocol_range("TLSv1.3"), ("TLSv1.3", "TLSv1.3"))
        self.assertEqual(tls_protocol_range("<=TLSv1.2 >=TLSv1.1"), ("TLSv1.1", "TLSv1.2"))
        self.assertEqual(tls_protocol_range(""), ("SSLv2", "TLSv1.3"))
        self.assertRaises(ValueError, tls_protocol_range, ">=TLSv1.3 !TLSv1.3")
