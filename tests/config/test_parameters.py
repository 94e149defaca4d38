"""Tests for expansion, defaults, the Config object, loading and listeners."""

from __future__ import annotations

import ipaddress
import os
from ipaddress import ip_network

from twisted.internet import endpoints
from twisted.internet.testing import MemoryReactor
from twisted.trial.unittest import SynchronousTestCase

from mailserver.config.parameters import (
    DECLARED,
    LISTENERS,
    PARAMETERS,
    listen_endpoints,
    load_config,
)
from mailserver.config.values import TableRef
from mailserver.milter.settings import MilterSpec
from mailserver.policy.dnsbl_sites import parse_sites
from mailserver.errors import ConfigError
from mailserver.quota_rule import QuotaLimits
from tests.config.helpers import build, problems_of

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LISTENER_PORTS = {
    "smtpd_listen": 3025,
    "submission_listen": 3587,
    "smtps_listen": 3465,
    "pop3_listen": 3110,
    "pop3s_listen": 3995,
    "imap_listen": 3143,
    "imaps_listen": 3993,
    "managesieve_listen": 34190,
    "lmtp_listen": 3024,
}


class ExpansionTests(SynchronousTestCase):
    def test_forms(self) -> None:
        """$name, ${name}, ${name?value} and ${name:value} use other parameters."""
        config, _ = build(
            "mail_name = Example\n"
            "recipient_delimiter = +\n"
            "smtpd_banner = $myhostname ESMTP ${mail_name}"
            "${recipient_delimiter? ext}${relayhost: direct}${relayhost?relayed}\n"
        )
        self.assertEqual(config.smtpd_banner, "mx.example.org ESMTP Example ext direct")

    def test_recursive(self) -> None:
        """Expansion is recursive, through defaults and settings alike."""
        config, _ = build("data_directory = /srv/$mail_name\nmail_name = ms\n")
        self.assertEqual(config.virtual_mailbox_base, "/srv/ms/mail")
        self.assertEqual(config.imap_literal_limit, config.message_size_limit)

    def test_user_defined_parameter(self) -> None:
        """An undeclared parameter that is referenced is used, without a warning."""
        config, problems = build("site = example.net\nmydestination = $site, mail.$site\n")
        self.assertEqual(config.mydestination, ("example.net", "mail.example.net"))
        self.assertEqual(problems, [])

    def test_unknown_reference(self) -> None:
        """An unknown $name expands to nothing, with a warning at the line."""
        config, problems = build("# c\nsmtpd_banner = $myhostname $nosuch ESMTP\n")
        self.assertEqual(config.smtpd_banner, "mx.example.org  ESMTP")
        self.assertEqual(
            [str(p) for p in problems],
            ["main.cf:2: warning: smtpd_banner: unknown parameter $nosuch expands to nothing"],
        )

    def test_loop_through_default(self) -> None:
        """A loop is one error at the line that made it, not at the defaults."""
        self.assertEqual(
            problems_of("mail_name = x\nmyhostname = $smtp_helo_name\n"),
            [
                "main.cf:2: error: myhostname: expansion loop:"
                " $myhostname -> $smtp_helo_name -> $myhostname"
            ],
        )

    def test_loop_between_settings(self) -> None:
        self.assertEqual(
            problems_of("mail_name = $smtpd_banner\nsmtpd_banner = $mail_name\n"),
            [
                "main.cf:1: error: mail_name: expansion loop: $mail_name -> $smtpd_banner -> $mail_name",
                "main.cf:2: error: smtpd_banner: expansion loop: $smtpd_banner -> $mail_name -> $smtpd_banner",
            ],
        )

    def test_self_loop(self) -> None:
        self.assertEqual(
            problems_of("\nmail_name = x${mail_name}\n"),
            ["main.cf:2: error: mail_name: expansion loop: $mail_name -> $mail_name"],
        )

    def test_syntax_error(self) -> None:
        """A malformed $ is reported where written; values using it are not."""
        self.assertEqual(
            problems_of("myhostname = ${mail_name\n"),
            ["main.cf:1: error: myhostname: missing '}' after '${'"],
        )

    def test_bad_value_reported_once(self) -> None:
        """imap_literal_limit ($message_size_limit) does not repeat the error."""
        self.assertEqual(
            problems_of("message_size_limit = big\n"),
            ["main.cf:1: error: message_size_limit: expected a non-negative integer, got 'big'"],
        )

    def test_too_deep(self) -> None:
        """A chain deeper than the interpreter's stack is an error, not a crash."""
        chain = "".join(f"p{i} = $p{i + 1}\n" for i in range(3000))
        problems = problems_of(f"mail_name = $p0\n{chain}")
        self.assertEqual(problems[0], "main.cf:1: error: mail_name: expansion nested too deeply")

    def test_dollar_dollar(self) -> None:
        config, _ = build("smtpd_banner = $myhostname costs $$0\n")
        self.assertEqual(config.smtpd_banner, "mx.example.org costs $0")


class DefaultTests(SynchronousTestCase):
    def test_postfix_defaults(self) -> None:
        config, problems = build("")
        self.assertEqual(problems, [])
        self.assertEqual(config.myhostname, "mx.example.org")
        self.assertEqual(config.mydomain, "example.org")
        self.assertEqual(config.myorigin, "mx.example.org")
        self.assertEqual(config.mydestination, ("mx.example.org", "localhost.example.org", "localhost"))
        self.assertEqual(config.smtpd_banner, "mx.example.org ESMTP mailserver")
        self.assertEqual(config.inet_interfaces, ("all",))
        self.assertEqual([str(n) for n in config.mynetworks], ["127.0.0.0/8", "::1/128"])
        self.assertEqual(config.message_size_limit, 10240000)
        self.assertEqual(config.smtpd_timeout, 300)
        self.assertEqual(config.home_mailbox, "Maildir/")
        self.assertEqual(config.data_directory, "/var/lib/mailserver")
        self.assertEqual(config.virtual_mailbox_base, "/var/lib/mailserver/mail")
        self.assertEqual(config.passwd_file, "/etc/mailserver/passwd")
        self.assertEqual(config.config_directory, "/etc/mailserver")
        self.assertEqual(config.smtpd_listen, ("tcp:25",))
        self.assertEqual(config.imaps_listen, ("tcp:993",))
        self.assertEqual(config.allow_mail_to_commands, ("alias", "forward"))
        self.assertEqual(config.maximal_queue_lifetime, 5 * 86400)
        self.assertEqual(config.imap_timeout, 1800)
        self.assertEqual(config.smtpd_tls_cert_file, "")
        self.assertEqual(config.smtpd_tls_mandatory_protocols, ">=TLSv1.2")
        self.assertEqual(config.recipient_delimiter, "")
        self.assertIs(config.smtpd_sasl_auth_enable, True)

    def test_hostname_without_dot(self) -> None:
        """A single-label host name gets .localdomain, as mydomain shows."""
        config, _ = build("", fqdn="box")
        self.assertEqual((config.myhostname, config.mydomain), ("box.localdomain", "localdomain"))
        self.assertEqual(config.mydestination, ("box.localdomain", "localhost.localdomain", "localhost"))

    def test_mydomain_follows_myhostname(self) -> None:
        config, _ = build("myhostname = mail.Example.COM\n")
        self.assertEqual(config.mydomain, "Example.COM")
        self.assertEqual(config.mydestination, ("mail.example.com", "localhost.example.com", "localhost"))
        config, _ = build("myhostname = mail\n")
        self.assertEqual(config.mydomain, "localdomain")

    def test_checks_follow_header_checks(self) -> None:
        config, _ = build("header_checks = regexp:hc\n")
        expected = (TableRef("regexp", "/etc/mailserver/hc"),)
        self.assertEqual(config.mime_header_checks, expected)
        self.assertEqual(config.nested_header_checks, expected)
        self.assertEqual(config.body_checks, ())

    def test_tls_files_follow_smtpd(self) -> None:
        config, _ = build("smtpd_tls_cert_file = tls/all.pem\n")
        for name in ("smtpd_tls_key_file", "imap_tls_cert_file", "imap_tls_key_file",
                     "pop3_tls_cert_file", "pop3_tls_key_file"):  # fmt: skip
            self.assertEqual(getattr(config, name), "/etc/mailserver/tls/all.pem", name)

    def test_declarations(self) -> None:
        """Names are unique, origins known, and every default is valid."""
        self.assertEqual(len(DECLARED), len(PARAMETERS))
        self.assertEqual({p.origin for p in PARAMETERS}, {"Postfix", "Dovecot", "own"})
        config, problems = build("")
        self.assertEqual(problems, [])
        self.assertEqual(sorted(config.names()), sorted(DECLARED))


class ConfigObjectTests(SynchronousTestCase):
    def test_where(self) -> None:
        config, _ = build("# c\nmail_name = x\n")
        self.assertEqual(config.where("mail_name"), ("main.cf", 2))
        self.assertEqual(config.where("smtpd_banner"), ("<default>", 0))
        self.assertRaises(KeyError, config.where, "nosuch")

    def test_raw(self) -> None:
        config, _ = build("mail_name = ${myhostname}x\n")
        self.assertEqual(config.raw("mail_name"), "${myhostname}x")
        self.assertEqual(config.raw("smtpd_banner"), "$myhostname ESMTP $mail_name")
        self.assertEqual(config.raw("myhostname"), "mx.example.org")

    def test_frozen(self) -> None:
        config, _ = build("")
        self.assertRaises(AttributeError, setattr, config, "mail_name", "x")
        self.assertRaises(AttributeError, setattr, config, "new", "x")
        self.assertRaises(AttributeError, delattr, config, "mail_name")
        self.assertRaises(AttributeError, getattr, config, "nosuch")
        self.assertEqual(config.mail_name, "mailserver")
        self.assertIn("mail_name", dir(config))

    def test_unknown_parameter_warning(self) -> None:
        config, problems = build("mail_name = x\nsmtpd_baner = hello\n")
        self.assertEqual(
            [str(p) for p in problems],
            ["main.cf:2: warning: smtpd_baner: unknown parameter (did you mean smtpd_banner?)"],
        )
        self.assertFalse(hasattr(config, "smtpd_baner"))

    def test_duplicate_warning(self) -> None:
        config, problems = build("mail_name = a\nmail_name = b\n")
        self.assertEqual(config.mail_name, "b")
        self.assertEqual(config.where("mail_name"), ("main.cf", 2))
        self.assertEqual(
            [str(p) for p in problems], ["main.cf:2: warning: mail_name: overrides the setting at line 1"]
        )

    def test_config_directory_is_derived(self) -> None:
        config, problems = build("config_directory = /elsewhere\n")
        self.assertEqual(config.config_directory, "/etc/mailserver")
        self.assertEqual(config.where("config_directory"), ("<default>", 0))
        self.assertEqual(
            [str(p) for p in problems],
            [
                "main.cf:1: warning: config_directory: is derived from the main"
                " file's location; the setting is ignored"
            ],
        )

    def test_overrides(self) -> None:
        """Overrides win over the file and are located on the command line."""
        config, _ = build("mail_name = file\n", overrides=[("mail_name", "cli")])
        self.assertEqual(config.mail_name, "cli")
        self.assertEqual(config.where("mail_name"), ("<command line>", 1))
        problems = problems_of_overrides([("smtpd_timeout", "x")])
        self.assertEqual(
            problems,
            ["<command line>:1: error: smtpd_timeout: expected a time like 300s, 30m, 5d, got 'x'"],
        )


def problems_of_overrides(overrides: list[tuple[str, str]]) -> list[str]:
    try:
        build("", overrides=overrides)
    except ConfigError as e:
        return [str(p) for p in e.problems]
    raise AssertionError("no ConfigError raised")


class LoadConfigTests(SynchronousTestCase):
    def test_file_paths_relative_to_its_directory(self) -> None:
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        path = os.path.join(directory, "mailserver.cf")
        with open(path, "w", encoding="utf-8") as f:
            f.write("data_directory = data\nalias_maps = aliases\n")
        config, problems = load_config(path, fqdn=lambda: "mx.example.org")
        self.assertEqual(problems, [])
        self.assertEqual(config.path, path)
        self.assertEqual(config.config_directory, directory)
        self.assertEqual(config.data_directory, os.path.join(directory, "data"))
        self.assertEqual(config.passwd_file, os.path.join(directory, "passwd"))
        self.assertEqual(config.alias_maps, (TableRef("hash", os.path.join(directory, "aliases")),))
        self.assertEqual(config.where("alias_maps"), (path, 2))

    def test_missing_file(self) -> None:
        path = self.mktemp()
        error = self.assertRaises(ConfigError, load_config, path)
        self.assertEqual(
            [str(p) for p in error.problems],
            [f"{path}: error: cannot read the configuration: No such file or directory"],
        )

    def test_not_utf8(self) -> None:
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"mail_name = \xff\n")
        error = self.assertRaises(ConfigError, load_config, path)
        self.assertIn("cannot read the configuration", str(error))

    def test_errors_in_file(self) -> None:
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as f:
            f.write("# sample\nsmtpd_listen = tcp:25\n   tcp:http\n")
        error = self.assertRaises(ConfigError, load_config, path)
        self.assertEqual(
            [str(p) for p in error.problems],
            [
                f"{path}:2: error: smtpd_listen: 'tcp:http': port must be a number"
                " from 0 to 65535, got 'http'"
            ],
        )

    def test_sample_file(self) -> None:
        """etc/mailserver.cf loads without a problem and says what it should."""
        path = os.path.join(REPO, "etc", "mailserver.cf")
        config, problems = load_config(path, fqdn=lambda: "ignored.example")
        self.assertEqual(problems, [])
        self.assertEqual(config.myhostname, "mail.example.com")
        self.assertEqual(
            config.mydestination,
            ("mail.example.com", "localhost.example.com", "localhost", "example.com"),
        )
        self.assertEqual(config.inet_interfaces, ("all",))
        self.assertEqual(config.smtpd_listen, ("tcp:25",))
        self.assertEqual(config.submission_listen, ("tcp:587",))
        self.assertEqual(config.imaps_listen, ("tcp:993",))
        self.assertEqual(config.alias_maps, (TableRef("hash", "/etc/mailserver/aliases"),))
        self.assertEqual(config.passwd_file, "/etc/mailserver/passwd")
        self.assertEqual(config.header_checks, (TableRef("regexp", "/etc/mailserver/header_checks"),))
        self.assertEqual(config.body_checks, (TableRef("regexp", "/etc/mailserver/body_checks"),))
        self.assertEqual(config.data_directory, "/var/lib/mailserver")
        self.assertEqual(config.recipient_delimiter, "+")


class EmbeddedDefaultTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.config, self.problems = load_config(None, fqdn=lambda: "box.example.net")

    def test_no_problems(self) -> None:
        self.assertEqual(self.problems, [])
        self.assertEqual(self.config.path, "<embedded>")

    def test_values(self) -> None:
        config, cwd = self.config, os.getcwd()
        self.assertEqual(config.inet_interfaces, ("loopback-only",))
        self.assertEqual(config.data_directory, os.path.join(cwd, "mailserver-data"))
        self.assertEqual(config.passwd_file, os.path.join(cwd, "mailserver-data", "passwd"))
        self.assertEqual(config.recipient_delimiter, "+")
        self.assertEqual(config.myhostname, "box.example.net")
        self.assertEqual(config.where("inet_interfaces")[0], "<embedded>")

    def test_greenmail_ports_on_loopback(self) -> None:
        self.assertEqual(self.config.lmtp_listen, ())  # LMTP only when asked for
        for name, port in LISTENER_PORTS.items():
            if name == "lmtp_listen":
                continue
            self.assertEqual(getattr(self.config, name), (f"tcp:{port}",))
            self.assertEqual(
                listen_endpoints(self.config, name),
                [f"tcp:{port}:interface=127.0.0.1", f"tcp6:{port}:interface=\\:\\:1"],
            )


class ListenEndpointsTests(SynchronousTestCase):
    def endpoints(self, text: str, name: str = "smtpd_listen") -> list[str]:
        config, _ = build(text)
        return listen_endpoints(config, name)

    def test_all_unchanged(self) -> None:
        self.assertEqual(self.endpoints("smtpd_listen = tcp:25 tcp6:2525\n"), ["tcp:25", "tcp6:2525"])

    def test_loopback_only(self) -> None:
        result = self.endpoints("inet_interfaces = loopback-only\nsmtpd_listen = tcp:25\n")
        self.assertEqual(result, ["tcp:25:interface=127.0.0.1", "tcp6:25:interface=\\:\\:1"])
        reactor = MemoryReactor()
        bound = [endpoints.serverFromString(reactor, d) for d in result]
        self.assertEqual([(e._port, e._interface) for e in bound], [(25, "127.0.0.1"), (25, "::1")])

    def test_addresses(self) -> None:
        """One description per address; tcp/tcp6 follow the address family."""
        text = "inet_interfaces = 192.0.2.1, [2001:db8::1]\nsmtpd_listen = tcp:25 tcp6:26\n"
        self.assertEqual(
            self.endpoints(text),
            [
                "tcp:25:interface=192.0.2.1",
                "tcp6:25:interface=2001\\:db8\\:\\:1",
                "tcp:26:interface=192.0.2.1",
                "tcp6:26:interface=2001\\:db8\\:\\:1",
            ],
        )

    def test_inet_protocols(self) -> None:
        text = "inet_interfaces = loopback-only\ninet_protocols = ipv4\nimap_listen = tcp:143\n"
        self.assertEqual(self.endpoints(text, "imap_listen"), ["tcp:143:interface=127.0.0.1"])

    def test_own_interface_and_unix_unchanged(self) -> None:
        text = (
            "inet_interfaces = loopback-only\n"
            "smtpd_listen = tcp:25:interface=192.0.2.7 unix:/run/smtp.sock"
            " systemd:domain=INET:index=0\n"
        )
        self.assertEqual(
            self.endpoints(text),
            ["tcp:25:interface=192.0.2.7", "unix:/run/smtp.sock", "systemd:domain=INET:index=0"],
        )

    def test_ssl_keeps_type(self) -> None:
        text = "inet_interfaces = ::1\nimaps_listen = ssl:993:privateKey=/k.pem\n"
        self.assertEqual(
            self.endpoints(text, "imaps_listen"), ["ssl:993:privateKey=/k.pem:interface=\\:\\:1"]
        )

    def test_duplicates_dropped(self) -> None:
        text = "inet_interfaces = 127.0.0.1\nsmtpd_listen = tcp:25 tcp6:25\n"
        self.assertEqual(self.endpoints(text), ["tcp:25:interface=127.0.0.1"])

    def test_disabled(self) -> None:
        self.assertEqual(self.endpoints("submission_listen =\n", "submission_listen"), [])

    def test_listeners(self) -> None:
        """LISTENERS names the eight endpoint parameters; others are refused."""
        self.assertEqual(LISTENERS, tuple(LISTENER_PORTS))
        config, _ = build("")
        self.assertRaises(KeyError, listen_endpoints, config, "myhostname")


# Every parameter but the derived config_directory, with a non-default value.
FULL_SAMPLE = r"""
# A configuration that sets every parameter.
mail_name = ExampleMail
myhostname = mail.example.com
mydomain = example.com
myorigin = $mydomain
mydestination = $myhostname, localhost.$mydomain, localhost, $mydomain
virtual_mailbox_domains = example.net,
    example.org
inet_interfaces = 127.0.0.1, [::1]
inet_protocols = ipv4
mynetworks = 127.0.0.0/8, 192.0.2.0/24 [2001:db8::]/32
message_size_limit = 20480000
smtpd_recipient_limit = 100
smtpd_timeout = 1m
smtpd_data_time_limit = 20m
smtpd_min_data_rate = 1000
smtpd_hard_error_limit = 5
smtpd_client_connection_count_limit = 10
smtpd_max_connections = 100
smtpd_stress_timeout = 5s
listen_backlog = 1024
line_length_limit = 1000
smtpd_forbid_bare_newline = normalize
smtpd_banner = $myhostname ESMTP $mail_name
recipient_delimiter = +-
home_mailbox = .maildir/
data_directory = /srv/mailserver
virtual_mailbox_base = $data_directory/vmail
passwd_file = users
default_password_scheme = SHA512-CRYPT
smtpd_listen = tcp:2525
submission_listen = tcp:2587
smtps_listen = tcp:2465
pop3_listen = tcp:2110
pop3s_listen =
imap_listen = tcp:2143
imaps_listen = tcp:2993:interface=127.0.0.1
alias_maps = hash:aliases
virtual_alias_maps = texthash:/etc/mailserver/virtual
allow_mail_to_files = alias
allow_mail_to_commands =
default_privs = mail
command_time_limit = 2m
header_checks = regexp:/etc/mailserver/header_checks
mime_header_checks = pcre:mime_header_checks
nested_header_checks =
body_checks = regexp:body_checks
body_checks_size_limit = 1024
header_checks_decode = no
mime_nesting_limit = 20
imap_timeout = 1h
pop3_timeout = 5m
imap_literal_limit = 1000000
mail_max_userip_connections = 3
imap_client_limit = 200
pop3_client_limit = 100
login_per_ip_limit = 7
login_timeout = 30s
imap_literal_deadline = 20m
imap_literal_min_rate = 1000
auth_failure_delay = 5
smtpd_tls_cert_file = tls/cert.pem
smtpd_tls_key_file = tls/key.pem
smtpd_tls_security_level = encrypt
smtpd_tls_mandatory_protocols = TLSv1.3
tls_high_cipherlist = ECDHE+AESGCM
imap_tls_cert_file = tls/imap.pem
imap_tls_key_file = tls/imap.key
pop3_tls_cert_file = tls/pop3.pem
pop3_tls_key_file = tls/pop3.key
disable_plaintext_auth = no
smtpd_sasl_auth_enable = false
auth_failure_limit = 3
auth_cache_size = 65536
auth_cache_ttl = 10m
relayhost = [smtp.example.net]:587
minimal_backoff_time = 1m
maximal_backoff_time = 1h
maximal_queue_lifetime = 2d
bounce_queue_lifetime = 1d
queue_run_delay = 2m
default_destination_concurrency_limit = 5
smtp_tls_security_level = none
smtp_connect_timeout = 10s
smtp_helo_name = out.example.com
smtp_sasl_password_maps = lmdb:sasl_passwd
smtp_mta_sts = no
dkim_key_directory = dkim
dkim_selector = s2026
dkim_signing_domains = example.com, example.org
authserv_id = mx.example.com
dmarc_reject_action = quarantine
dmarc_quarantine_action = header
spf_fail_action = reject
dmarc_own_domain_fail_action = quarantine
mail_authentication_checks = no
mail_authentication_verify_processes = 2
junk_folder = Spam/Suspect
smtpd_milters = inet:127.0.0.1:11332
non_smtpd_milters = { unix:/run/opendkim.sock, default_action = accept }
milter_default_action = quarantine
milter_protocol = 4
milter_connect_timeout = 5s
milter_command_timeout = 10s
milter_content_timeout = 1m
milter_macro_daemon_name = mx
milter_macro_v = ExampleMail 1
milter_connect_macros = j
milter_helo_macros = {tls_version}
milter_mail_macros = i {auth_authen}
milter_rcpt_macros = i {rcpt_addr}
milter_data_macros =
milter_end_of_header_macros = {mail_addr}
milter_end_of_data_macros = i j
milter_unknown_command_macros = i
postscreen_dnsbl_sites = zen.spamhaus.org=127.0.0.[2..11]*3, list.dnswl.org*-2
postscreen_dnsbl_threshold = 2
postscreen_dnsbl_allowlist_threshold = -1
postscreen_dnsbl_timeout = 5s
postscreen_greet_wait = 3s
postscreen_greet_action = drop
postscreen_greet_banner = welcome
postscreen_greet_ttl = 2d
greylisting = yes
postscreen_greet_enable = yes
greylist_delay = 60s
greylist_retry_window = 1d
greylist_max_age = 10d
greylist_auto_whitelist_clients = 3
smtpd_client_connection_rate_limit = 30
smtpd_client_message_rate_limit = 100
anvil_rate_time_unit = 120s
smtpd_client_event_limit_exceptions = 192.0.2.0/24
sieve_before = /etc/mailserver/sieve/before.sieve
sieve_after = /etc/mailserver/sieve/after.d
sieve_global = sieve/global
sieve_max_script_size = 65536
sieve_max_actions = 10
sieve_max_redirects = 2
sieve_quota_max_scripts = 5
sieve_quota_max_storage = 1048576
sieve_vacation_min_period = 1h
sieve_vacation_default_period = 3d
sieve_vacation_max_period = 30d
lda_mailbox_autocreate = yes
managesieve_listen = tcp:4190:interface=127.0.0.1
managesieve_timeout = 5m
metrics_listen = tcp:9154:interface=127.0.0.1
metrics_allow = 10.0.0.0/8, [::1]/128
lmtp_listen = unix:/run/mailserver/lmtp:mode=660
lmtp_tls_security_level = may
lmtp_content_checks = no
lmtp_mail_authentication_checks = yes
quota_rule = *:storage=1G:messages=10000
quota_warning = 80
"""

FULL_EXPECTED = {
    "mail_name": "ExampleMail",
    "myhostname": "mail.example.com",
    "mydomain": "example.com",
    "myorigin": "example.com",
    "mydestination": ("mail.example.com", "localhost.example.com", "localhost", "example.com"),
    "virtual_mailbox_domains": ("example.net", "example.org"),
    "inet_interfaces": ("127.0.0.1", "::1"),
    "inet_protocols": ("ipv4",),
    "message_size_limit": 20480000,
    "smtpd_recipient_limit": 100,
    "smtpd_timeout": 60,
    "smtpd_data_time_limit": 1200,
    "smtpd_min_data_rate": 1000,
    "smtpd_hard_error_limit": 5,
    "smtpd_client_connection_count_limit": 10,
    "smtpd_max_connections": 100,
    "smtpd_stress_timeout": 5,
    "listen_backlog": 1024,
    "line_length_limit": 1000,
    "smtpd_forbid_bare_newline": "normalize",
    "smtpd_banner": "mail.example.com ESMTP ExampleMail",
    "recipient_delimiter": "+-",
    "home_mailbox": ".maildir/",
    "data_directory": "/srv/mailserver",
    "virtual_mailbox_base": "/srv/mailserver/vmail",
    "passwd_file": "/etc/mailserver/users",
    "default_password_scheme": "SHA512-CRYPT",
    "smtpd_listen": ("tcp:2525",),
    "submission_listen": ("tcp:2587",),
    "smtps_listen": ("tcp:2465",),
    "pop3_listen": ("tcp:2110",),
    "pop3s_listen": (),
    "imap_listen": ("tcp:2143",),
    "imaps_listen": ("tcp:2993:interface=127.0.0.1",),
    "alias_maps": (TableRef("hash", "/etc/mailserver/aliases"),),
    "virtual_alias_maps": (TableRef("texthash", "/etc/mailserver/virtual"),),
    "allow_mail_to_files": ("alias",),
    "allow_mail_to_commands": (),
    "default_privs": "mail",
    "command_time_limit": 120,
    "header_checks": (TableRef("regexp", "/etc/mailserver/header_checks"),),
    "mime_header_checks": (TableRef("pcre", "/etc/mailserver/mime_header_checks"),),
    "nested_header_checks": (),
    "body_checks": (TableRef("regexp", "/etc/mailserver/body_checks"),),
    "body_checks_size_limit": 1024,
    "header_checks_decode": False,
    "mime_nesting_limit": 20,
    "imap_timeout": 3600,
    "pop3_timeout": 300,
    "imap_literal_limit": 1000000,
    "mail_max_userip_connections": 3,
    "imap_client_limit": 200,
    "pop3_client_limit": 100,
    "login_per_ip_limit": 7,
    "login_timeout": 30,
    "imap_literal_deadline": 1200,
    "imap_literal_min_rate": 1000,
    "auth_failure_delay": 5,
    "smtpd_tls_cert_file": "/etc/mailserver/tls/cert.pem",
    "smtpd_tls_key_file": "/etc/mailserver/tls/key.pem",
    "smtpd_tls_security_level": "encrypt",
    "smtpd_tls_mandatory_protocols": "TLSv1.3",
    "tls_high_cipherlist": "ECDHE+AESGCM",
    "imap_tls_cert_file": "/etc/mailserver/tls/imap.pem",
    "imap_tls_key_file": "/etc/mailserver/tls/imap.key",
    "pop3_tls_cert_file": "/etc/mailserver/tls/pop3.pem",
    "pop3_tls_key_file": "/etc/mailserver/tls/pop3.key",
    "disable_plaintext_auth": False,
    "smtpd_sasl_auth_enable": False,
    "auth_failure_limit": 3,
    "auth_cache_size": 65536,
    "auth_cache_ttl": 600,
    "relayhost": "[smtp.example.net]:587",
    "minimal_backoff_time": 60,
    "maximal_backoff_time": 3600,
    "maximal_queue_lifetime": 172800,
    "bounce_queue_lifetime": 86400,
    "queue_run_delay": 120,
    "default_destination_concurrency_limit": 5,
    "smtp_tls_security_level": "none",
    "smtp_connect_timeout": 10,
    "smtp_helo_name": "out.example.com",
    "smtp_sasl_password_maps": (TableRef("lmdb", "/etc/mailserver/sasl_passwd"),),
    "smtp_mta_sts": False,
    "dkim_key_directory": "/etc/mailserver/dkim",
    "dkim_selector": "s2026",
    "dkim_signing_domains": ("example.com", "example.org"),
    "authserv_id": "mx.example.com",
    "dmarc_reject_action": "quarantine",
    "dmarc_quarantine_action": "header",
    "spf_fail_action": "reject",
    "dmarc_own_domain_fail_action": "quarantine",
    "mail_authentication_checks": False,
    "mail_authentication_verify_processes": 2,
    "junk_folder": "Spam/Suspect",
    "smtpd_milters": (MilterSpec("inet", host="127.0.0.1", port=11332),),
    "non_smtpd_milters": (
        MilterSpec("unix", path="/run/opendkim.sock", overrides=(("default_action", "accept"),)),
    ),
    "milter_default_action": "quarantine",
    "milter_protocol": "4",
    "milter_connect_timeout": 5,
    "milter_command_timeout": 10,
    "milter_content_timeout": 60,
    "milter_macro_daemon_name": "mx",
    "milter_macro_v": "ExampleMail 1",
    "milter_connect_macros": ("j",),
    "milter_helo_macros": ("{tls_version}",),
    "milter_mail_macros": ("i", "{auth_authen}"),
    "milter_rcpt_macros": ("i", "{rcpt_addr}"),
    "milter_data_macros": (),
    "milter_end_of_header_macros": ("{mail_addr}",),
    "milter_end_of_data_macros": ("i", "j"),
    "milter_unknown_command_macros": ("i",),
    "postscreen_dnsbl_sites": parse_sites("zen.spamhaus.org=127.0.0.[2..11]*3 list.dnswl.org*-2"),
    "postscreen_dnsbl_threshold": 2,
    "postscreen_dnsbl_allowlist_threshold": -1,
    "postscreen_dnsbl_timeout": 5,
    "postscreen_greet_wait": 3,
    "postscreen_greet_action": "drop",
    "postscreen_greet_banner": "welcome",
    "postscreen_greet_ttl": 172800,
    "greylisting": True,
    "postscreen_greet_enable": True,
    "greylist_delay": 60,
    "greylist_retry_window": 86400,
    "greylist_max_age": 864000,
    "greylist_auto_whitelist_clients": 3,
    "smtpd_client_connection_rate_limit": 30,
    "smtpd_client_message_rate_limit": 100,
    "anvil_rate_time_unit": 120,
    "smtpd_client_event_limit_exceptions": (ipaddress.ip_network("192.0.2.0/24"),),
    "sieve_before": "/etc/mailserver/sieve/before.sieve",
    "sieve_after": "/etc/mailserver/sieve/after.d",
    "sieve_global": "/etc/mailserver/sieve/global",
    "sieve_max_script_size": 65536,
    "sieve_max_actions": 10,
    "sieve_max_redirects": 2,
    "sieve_quota_max_scripts": 5,
    "sieve_quota_max_storage": 1048576,
    "sieve_vacation_min_period": 3600,
    "sieve_vacation_default_period": 3 * 86400,
    "sieve_vacation_max_period": 30 * 86400,
    "lda_mailbox_autocreate": True,
    "managesieve_listen": ("tcp:4190:interface=127.0.0.1",),
    "managesieve_timeout": 300,
    "metrics_listen": ("tcp:9154:interface=127.0.0.1",),
    "metrics_allow": (ip_network("10.0.0.0/8"), ip_network("::1/128")),
    "lmtp_listen": ("unix:/run/mailserver/lmtp:mode=660",),
    "lmtp_tls_security_level": "may",
    "lmtp_content_checks": False,
    "lmtp_mail_authentication_checks": True,
    "quota_rule": QuotaLimits(storage=1 << 30, messages=10000),
    "quota_warning": 80,
}


class FullSampleTests(SynchronousTestCase):
    def test_every_parameter(self) -> None:
        """A file setting every parameter gives exactly the typed values."""
        config, problems = build(FULL_SAMPLE)
        self.assertEqual(problems, [])
        self.assertEqual(set(FULL_EXPECTED) | {"config_directory", "mynetworks"}, set(DECLARED))
        for name, expected in FULL_EXPECTED.items():
            self.assertEqual(getattr(config, name), expected, name)
            self.assertNotEqual(config.where(name), ("<default>", 0), name)
        self.assertEqual(
            [str(n) for n in config.mynetworks], ["127.0.0.0/8", "192.0.2.0/24", "2001:db8::/32"]
        )
        self.assertEqual(config.where("virtual_mailbox_domains"), ("main.cf", 8))
        self.assertEqual(
            listen_endpoints(config, "smtpd_listen"), ["tcp:2525:interface=127.0.0.1"]
        )

    def test_round_trip(self) -> None:
        """Writing every raw value back as main.cf text gives the same Config."""
        config, _ = build(FULL_SAMPLE)
        text = "".join(
            f"{name} = {config.raw(name)}\n" for name in config.names() if name != "config_directory"
        )
        again, problems = build(text, "again.cf")
        self.assertEqual(problems, [])
        for name in config.names():
            self.assertEqual(getattr(again, name), getattr(config, name), name)
