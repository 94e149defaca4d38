"""
The declared parameters (one table), their expansion and typing -> a frozen
Config.

Parsing and checking are pure (L{parse_config}); L{load_config} adds the
one file read.  Every problem carries the file and line of the setting it
is about; errors are collected and raised together as a ConfigError.
"""

from __future__ import annotations

import difflib
import os
import socket
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence, Union

from mailserver.config.embedded import EMBEDDED_MAIN_CF
from mailserver.config.endpoints import bind_to, parse_endpoint
from mailserver.config.expand import ExpansionError, expand
from mailserver.config.maincf import RawSetting, parse_main_cf
from mailserver.config.policy_values import DnsblSites, Milters, SignedInteger, Words
from mailserver.config.values import (
    Boolean,
    BoundedInteger,
    Delimiter,
    DomainList,
    Endpoints,
    Enum,
    EnumList,
    FolderName,
    Hostname,
    Integer,
    Interfaces,
    MaildirPath,
    QuotaRule,
    Networks,
    Path,
    Protocols,
    Relayhost,
    ServiceEndpoints,
    Size,
    Tables,
    Text,
    Time,
    TlsProtocols,
    ValueType,
)
from mailserver.errors import ConfigError, Problem

DEFAULT = "<default>"
EMBEDDED = "<embedded>"
COMMAND_LINE = "<command line>"

POSTFIX, DOVECOT, OWN = "Postfix", "Dovecot", "own"


class _Defaults:
    """What computed defaults may look at."""

    def __init__(
        self, get: Callable[[str], str], fqdn: Callable[[], str], config_directory: str
    ) -> None:
        self.get = get
        self.fqdn = fqdn
        self.config_directory = config_directory


DefaultValue = Union[str, Callable[[_Defaults], str]]


@dataclass(frozen=True)
class Parameter:
    """A declared parameter: its type, default (main.cf text), origin and meaning."""

    name: str
    type: ValueType
    default: DefaultValue
    origin: str
    doc: str


def _config_directory(d: _Defaults) -> str:
    """the main file's directory"""
    return d.config_directory


def _myhostname(d: _Defaults) -> str:
    """the host's FQDN (with .localdomain if it has no dot)"""
    name = d.fqdn().rstrip(".")
    return name if "." in name else f"{name}.localdomain"


def _mydomain(d: _Defaults) -> str:
    """myhostname minus its first label"""
    _, dot, parent = d.get("myhostname").partition(".")
    return parent if dot and parent else "localdomain"


TEXT, BOOL, INT, SIZE, TIME, PATH = Text(), Boolean(), Integer(), Size(), Time(), Path()
ENDPOINTS, DOMAINS = Endpoints(), DomainList()
HASH_TABLES = Tables(("hash", "lmdb", "btree", "dbm", "texthash"), "hash")
CHECK_TABLES = Tables(("regexp", "pcre"), None)
TLS_LEVEL = Enum("none", "may", "encrypt")
AUTH_ACTION = Enum("reject", "quarantine", "header")
FOLDER = FolderName()
DELIVERY_KINDS = EnumList("alias", "forward", "include")
MILTERS, WORDS = Milters(), Words()

TLS_HIGH_CIPHERLIST = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305"
)

P = Parameter
PARAMETERS: tuple[Parameter, ...] = (
    # Site and domains.
    P("config_directory", PATH, _config_directory, POSTFIX,
      "directory of the main configuration file (derived, not settable)"),
    P("mail_name", TEXT, "mailserver", POSTFIX, "the server's name in the banner"),
    P("myhostname", Hostname(), _myhostname, POSTFIX,
      "this host's name (default: the FQDN; .localdomain is added if it has no dot)"),
    P("mydomain", Hostname(), _mydomain, POSTFIX,
      "this host's domain: myhostname minus its first label, or localdomain"),
    P("myorigin", Hostname(), "$myhostname", POSTFIX, "domain added to bare local senders"),
    P("mydestination", DOMAINS, "$myhostname, localhost.$mydomain, localhost", POSTFIX,
      "domains delivered locally (users from passwd_file and aliases)"),
    P("virtual_mailbox_domains", DOMAINS, "", POSTFIX,
      "more local domains whose users are in passwd_file"),
    # Network.
    P("inet_interfaces", Interfaces(), "all", POSTFIX,
      "addresses listeners bind when their endpoint names no interface="),
    P("inet_protocols", Protocols(), "all", POSTFIX,
      "address families used for loopback-only and address lists"),
    P("mynetworks", Networks(), "127.0.0.0/8 [::1]/128", POSTFIX,
      "clients allowed to relay without authentication"),
    # SMTP server limits.
    P("message_size_limit", SIZE, "10240000", POSTFIX, "largest message accepted (0: no limit)"),
    P("smtpd_recipient_limit", INT, "1000", POSTFIX, "most recipients per message"),
    P("smtpd_timeout", TIME, "300s", POSTFIX, "idle time before an SMTP client is dropped"),
    P("smtpd_data_time_limit", TIME, "600s", OWN,
      "longest DATA phase, 354 to end of data (0: no limit); then 421 4.4.2"),
    P("smtpd_min_data_rate", INT, "500", POSTFIX,
      "bytes/s a DATA phase must keep up: each N bytes extend its smtpd_timeout deadline by N/rate s "
      "(0: off)"),
    P("smtpd_hard_error_limit", INT, "20", POSTFIX, "errors before a client is disconnected"),
    P("smtpd_client_connection_count_limit", INT, "50", POSTFIX,
      "simultaneous connections per client IP (0: no limit)"),
    P("smtpd_max_connections", INT, "500", OWN, "simultaneous SMTP connections in all"),
    P("smtpd_stress_timeout", TIME, "10s", OWN,
      "idle time allowed outside a mail transaction once SMTP connections reach 80% of "
      "smtpd_max_connections (Postfix's smtpd_timeout under stress); such idle sessions are also "
      "closed to make room for new ones"),
    P("line_length_limit", INT, "2048", POSTFIX,
      "longest SMTP command line (message lines are bounded by message_size_limit)"),
    P("smtpd_forbid_bare_newline", Enum("normalize", "reject"), "normalize", POSTFIX,
      "normalize: a bare LF in DATA is a line end but never ends the data; reject: 550 5.5.2"),
    P("smtpd_banner", TEXT, "$myhostname ESMTP $mail_name", POSTFIX, "text of the 220 greeting"),
    P("recipient_delimiter", Delimiter(), "", POSTFIX,
      "separator(s) of address extensions: user+ext@domain"),
    # Mailboxes and users.
    P("home_mailbox", MaildirPath(), "Maildir/", POSTFIX,
      "Maildir relative to a user's home (must end in /; mbox is not supported)"),
    P("data_directory", PATH, "/var/lib/mailserver", POSTFIX,
      "state: queue, hold area, incoming/ (DATA being received), generated TLS key, mailboxes of "
      "users without a home"),
    P("virtual_mailbox_base", PATH, "$data_directory/mail", POSTFIX,
      "Maildirs of users without a home: base/domain/user/"),
    P("passwd_file", PATH, "$config_directory/passwd", OWN, "Dovecot passwd-file of the users"),
    P("default_password_scheme", Enum("ARGON2ID", "BLF-CRYPT", "SHA512-CRYPT"), "ARGON2ID",
      DOVECOT, "scheme for new password hashes"),
    # Listeners (Twisted endpoint descriptions; empty disables).
    P("listen_backlog", INT, "0", OWN,
      "listen queue of every listener whose endpoint gives no backlog= "
      "(0: the kernel's net.core.somaxconn, at most 4096; 100 if unknown)"),
    P("smtpd_listen", ENDPOINTS, "tcp:25", OWN, "SMTP (MX) listeners"),
    P("submission_listen", ENDPOINTS, "tcp:587", OWN, "submission listeners (STARTTLS + AUTH)"),
    P("smtps_listen", ENDPOINTS, "tcp:465", OWN, "submission over implicit TLS"),
    P("pop3_listen", ENDPOINTS, "tcp:110", OWN, "POP3 listeners"),
    P("pop3s_listen", ENDPOINTS, "tcp:995", OWN, "POP3 over implicit TLS"),
    P("imap_listen", ENDPOINTS, "tcp:143", OWN, "IMAP4 listeners"),
    P("imaps_listen", ENDPOINTS, "tcp:993", OWN, "IMAP4 over implicit TLS"),
    P("managesieve_listen", ENDPOINTS, "tcp:4190", OWN, "ManageSieve (RFC 5804) listeners"),
    P("lmtp_listen", ENDPOINTS, "", OWN,
      "LMTP listeners for a local MTA, e.g. unix:/run/mailserver/lmtp:mode=660 (empty: none; docs/lmtp.rst)"),
    # Observability (docs/metrics.rst).
    P("metrics_listen", ServiceEndpoints(), "", OWN,
      "Prometheus /metrics listeners, e.g. tcp:9154:interface=127.0.0.1 (empty: off)"),
    P("metrics_allow", Networks(), "127.0.0.0/8 [::1]/128", OWN,
      "clients allowed to scrape /metrics; others get 403"),
    # LMTP (docs/lmtp.rst) and quotas (docs/quota.rst).
    P("lmtp_tls_security_level", Enum("none", "may"), "none", OWN,
      "offer STARTTLS on tcp LMTP listeners (may) or not (none)"),
    P("lmtp_content_checks", BOOL, "yes", OWN,
      "apply header_checks, body_checks and the other content checks to mail received by LMTP"),
    P("lmtp_mail_authentication_checks", BOOL, "no", OWN,
      "check SPF, DKIM, ARC and DMARC of mail received by LMTP (the handing MTA usually did)"),
    P("quota_rule", QuotaRule(), "", DOVECOT,
      "default quota of every user: *:storage=SIZE[:messages=N] (units B k M G T; empty: none); "
      "a passwd-file extra field userdb_quota_rule= overrides it per user"),
    P("quota_warning", INT, "90", OWN,
      "percent of a quota at which a notice is delivered once into the user's INBOX (0: none)"),
    # Aliases and checks.
    P("alias_maps", HASH_TABLES, "", POSTFIX, "aliases(5) files for local domains"),
    P("virtual_alias_maps", HASH_TABLES, "", POSTFIX, "address rewriting tables for all domains"),
    P("allow_mail_to_files", DELIVERY_KINDS, "alias, forward", POSTFIX,
      "sources allowed to deliver to /file/name destinations"),
    P("allow_mail_to_commands", DELIVERY_KINDS, "alias, forward", POSTFIX,
      "sources allowed to deliver to commands (pipes)"),
    P("default_privs", TEXT, "nobody", POSTFIX,
      "user that alias file and command deliveries run as"),
    P("command_time_limit", TIME, "1000s", POSTFIX, "time limit of a |command alias delivery"),
    P("header_checks", CHECK_TABLES, "", POSTFIX, "regexp:/pcre: tables for message headers"),
    P("mime_header_checks", CHECK_TABLES, "$header_checks", POSTFIX,
      "tables for MIME part headers"),
    P("nested_header_checks", CHECK_TABLES, "$header_checks", POSTFIX,
      "tables for headers of attached messages"),
    P("body_checks", CHECK_TABLES, "", POSTFIX, "tables for body lines"),
    P("body_checks_size_limit", SIZE, "51200", POSTFIX, "bytes of each body part checked"),
    P("header_checks_decode", BOOL, "yes", OWN, "decode RFC 2047 words before header checks"),
    P("mime_nesting_limit", INT, "100", POSTFIX,
      "deepest MIME nesting the content checks inspect; deeper is refused (550 5.6.0)"),
    # IMAP and POP3.
    P("imap_timeout", TIME, "30m", OWN, "idle time before an IMAP client is dropped"),
    P("pop3_timeout", TIME, "10m", OWN, "idle time before a POP3 client is dropped"),
    P("imap_literal_limit", SIZE, "$message_size_limit", OWN, "largest IMAP literal (APPEND)"),
    P("mail_max_userip_connections", INT, "10", DOVECOT,
      "logged-in sessions per user and client IP, IMAP and POP3 counted apart (0: no limit); over it: "
      "NO [LIMIT] / -ERR [IN-USE]"),
    P("imap_client_limit", INT, "1000", OWN,
      "simultaneous IMAP connections, IMAP and IMAPS together, before and after login (0: no limit); "
      "over it: * BYE [UNAVAILABLE]"),
    P("pop3_client_limit", INT, "500", OWN,
      "simultaneous POP3 connections, POP3 and POP3S together (0: no limit); over it: -ERR [SYS/TEMP]"),
    P("login_per_ip_limit", INT, "50", OWN,
      "simultaneous IMAP (and, apart, POP3) connections from one client IP (0: no limit)"),
    P("login_timeout", TIME, "60s", OWN,
      "time an IMAP or POP3 client has from connecting to logging in (0: only the idle timeouts)"),
    P("imap_literal_deadline", TIME, "1h", OWN, "time an IMAP literal (APPEND) may take in all"),
    P("imap_literal_min_rate", INT, "500", OWN,
      "octets per second an IMAP literal must keep up after its first minute (0: no minimum)"),
    P("auth_failure_delay", TIME, "2s", DOVECOT, "delay before replying to a failed login"),
    # TLS and authentication.
    P("smtpd_tls_cert_file", PATH, "", POSTFIX,
      "PEM certificate chain (empty: self-signed, generated in data_directory)"),
    P("smtpd_tls_key_file", PATH, "$smtpd_tls_cert_file", POSTFIX, "PEM private key"),
    P("smtpd_tls_security_level", TLS_LEVEL, "may", POSTFIX,
      "STARTTLS offered (may) or required (encrypt) on port 25"),
    P("smtpd_tls_mandatory_protocols", TlsProtocols(), ">=TLSv1.2", POSTFIX,
      "TLS versions accepted"),
    P("tls_high_cipherlist", TEXT, TLS_HIGH_CIPHERLIST, POSTFIX,
      "OpenSSL cipher list for TLS 1.2"),
    P("imap_tls_cert_file", PATH, "$smtpd_tls_cert_file", OWN, "IMAP certificate"),
    P("imap_tls_key_file", PATH, "$smtpd_tls_key_file", OWN, "IMAP private key"),
    P("pop3_tls_cert_file", PATH, "$smtpd_tls_cert_file", OWN, "POP3 certificate"),
    P("pop3_tls_key_file", PATH, "$smtpd_tls_key_file", OWN, "POP3 private key"),
    P("disable_plaintext_auth", BOOL, "yes", DOVECOT,
      "refuse passwords without TLS (loopback clients excepted)"),
    P("smtpd_sasl_auth_enable", BOOL, "yes", POSTFIX, "offer SMTP AUTH (after TLS)"),
    P("auth_cache_size", SIZE, "1048576", DOVECOT,
      "bytes of memory for remembering passwords that verified, so they are not hashed again (0: no cache)"),
    P("auth_cache_ttl", TIME, "1h", DOVECOT, "how long a verified password is remembered (0: no cache)"),
    P("auth_failure_limit", INT, "10", OWN, "failed logins from one address within 10 minutes that ban it for 10 minutes"),
    # Outbound queue.
    P("relayhost", Relayhost(), "", POSTFIX, "smart host for all non-local mail (empty: MX)"),
    P("minimal_backoff_time", TIME, "300s", POSTFIX, "shortest wait before retrying"),
    P("maximal_backoff_time", TIME, "4000s", POSTFIX, "longest wait before retrying"),
    P("maximal_queue_lifetime", TIME, "5d", POSTFIX, "age at which a message is bounced"),
    P("bounce_queue_lifetime", TIME, "5d", POSTFIX, "age at which a bounce is given up"),
    P("queue_run_delay", TIME, "300s", POSTFIX, "interval between deferred queue scans"),
    P("default_destination_concurrency_limit", INT, "20", POSTFIX,
      "parallel deliveries per destination domain"),
    P("smtp_tls_security_level", TLS_LEVEL, "may", POSTFIX, "STARTTLS use when relaying"),
    P("smtp_connect_timeout", TIME, "30s", POSTFIX, "time allowed to connect to a remote MX"),
    P("smtp_helo_name", Hostname(), "$myhostname", POSTFIX, "name sent in EHLO when relaying"),
    P("smtp_sasl_password_maps", HASH_TABLES, "", POSTFIX,
      "tables of destination -> user:password for relaying"),
    # Mail authentication (docs/internet.rst).
    P("smtp_mta_sts", BOOL, "yes", OWN,
      "apply destinations' MTA-STS policies (RFC 8461) when relaying by MX: under mode: enforce only "
      "the MX hosts the policy names, with a verified certificate, else the mail is deferred"),
    P("dkim_key_directory", PATH, "$data_directory/dkim", OWN,
      "DKIM private keys, DIRECTORY/DOMAIN/SELECTOR.rsa.key and .ed25519.key (0600), written by "
      "mailserver dkim keygen"),
    P("dkim_selector", Hostname(), "mail", OWN,
      "selector outgoing mail is signed with (SELECTOR._domainkey.DOMAIN)"),
    P("dkim_signing_domains", DOMAINS, "$mydestination, $virtual_mailbox_domains", OWN,
      "From: domains (and their subdomains) whose mail from SASL users, mynetworks, sendmail and "
      "bounces is DKIM-signed when a key exists"),
    P("authserv_id", Hostname(), "$myhostname", OWN,
      "authserv-id of the Authentication-Results header; incoming ones with this id are removed as forged"),
    P("dmarc_reject_action", AUTH_ACTION, "reject", OWN,
      "DMARC failure under p=reject: 550 5.7.1 at end of DATA, the user's Junk folder, or only the header"),
    P("dmarc_quarantine_action", AUTH_ACTION, "quarantine", OWN,
      "what a DMARC failure under p=quarantine gets: reject, quarantine, header"),
    P("spf_fail_action", AUTH_ACTION, "header", OWN,
      "what an SPF fail (-all) of the MAIL FROM (or HELO) domain gets: reject (550 5.7.23 at MAIL FROM), "
      "quarantine, header"),
    P("dmarc_own_domain_fail_action", Enum("reject", "quarantine"), "reject", OWN,
      "mail whose From: is one of our domains without an aligned SPF or DKIM pass, even if the domain "
      "publishes no DMARC record"),
    P("mail_authentication_checks", BOOL, "yes", OWN,
      "check SPF (at MAIL FROM), DKIM, ARC and DMARC of mail from untrusted clients and prepend "
      "Authentication-Results at end of DATA"),
    P("mail_authentication_verify_processes", BoundedInteger(64), "1", OWN,
      "worker processes checking inbound mail outside the server's GIL: DKIM and ARC signatures, DMARC "
      "and the verdict, with the DNS answers the server fetches for them (started and stopped with the "
      "server, replaced when one dies); 0: on the server, signatures in two threads of its own "
      "(better on a machine with one CPU)"),
    P("junk_folder", FOLDER, "Junk", OWN,
      "folder of each recipient's mailbox that quarantined mail is delivered to (created when missing)"),
    # Milters (docs/spam.rst).
    P("smtpd_milters", MILTERS, "", POSTFIX,
      "milters for mail received over SMTP: inet:host:port, unix:/path, { address, name = value }"),
    P("non_smtpd_milters", MILTERS, "", POSTFIX,
      "milters for mail submitted with sendmail (pickup) and bounces"),
    P("milter_default_action", Enum("tempfail", "accept", "reject", "quarantine"), "tempfail",
      POSTFIX, "what an unreachable, timed-out or broken milter means"),
    P("milter_protocol", Enum("2", "3", "4", "6"), "6", POSTFIX,
      "milter protocol version offered"),
    P("milter_connect_timeout", TIME, "30s", POSTFIX,
      "time to connect to a milter and negotiate options"),
    P("milter_command_timeout", TIME, "30s", POSTFIX,
      "time for a milter to answer an SMTP command (connect, HELO, MAIL, RCPT, DATA)"),
    P("milter_content_timeout", TIME, "300s", POSTFIX,
      "time for a milter to answer message content (headers, body, end of message)"),
    P("milter_macro_daemon_name", TEXT, "$myhostname", POSTFIX, "the {daemon_name} macro"),
    P("milter_macro_v", TEXT, "$mail_name", POSTFIX, "the v macro (server name and version)"),
    P("milter_connect_macros", WORDS, "j {daemon_name} {daemon_addr} v _", POSTFIX,
      "macros sent with the connection"),
    P("milter_helo_macros", WORDS,
      "{tls_version} {cipher} {cipher_bits} {cert_subject} {cert_issuer}", POSTFIX,
      "macros sent with HELO/EHLO"),
    P("milter_mail_macros", WORDS,
      "i {auth_type} {auth_authen} {auth_author} {mail_addr} {mail_host} {mail_mailer}",
      POSTFIX, "macros sent with MAIL FROM"),
    P("milter_rcpt_macros", WORDS, "i {rcpt_addr} {rcpt_host} {rcpt_mailer}", POSTFIX,
      "macros sent with RCPT TO"),
    P("milter_data_macros", WORDS, "i", POSTFIX, "macros sent with DATA"),
    P("milter_end_of_header_macros", WORDS, "i", POSTFIX, "macros sent at the end of the headers"),
    P("milter_end_of_data_macros", WORDS, "i", POSTFIX, "macros sent at the end of the message"),
    P("milter_unknown_command_macros", WORDS, "", POSTFIX,
      "macros sent with an unknown SMTP command"),
    # Built-in checks (docs/spam.rst).
    P("postscreen_dnsbl_sites", DnsblSites(), "", POSTFIX,
      "DNS block/allow lists: domain[=filter][*weight], e.g. zen.spamhaus.org=127.0.0.[2..11]*3"),
    P("postscreen_dnsbl_threshold", SignedInteger(), "1", POSTFIX,
      "DNSBL score at which a client is rejected"),
    P("postscreen_dnsbl_allowlist_threshold", SignedInteger(), "0", POSTFIX,
      "DNSBL score (when negative) at or below which a client skips the other tests"),
    P("postscreen_dnsbl_timeout", TIME, "10s", POSTFIX, "time allowed for the DNSBL look-ups"),
    P("postscreen_greet_enable", BOOL, "no", OWN,
      "run postscreen's pregreet test in front of the port-25 listener (smtpd_listen)"),
    P("postscreen_greet_wait", TIME, "6s", POSTFIX,
      "time a client must stay silent after the first greeting line (pregreet test)"),
    P("postscreen_greet_action", Enum("ignore", "drop"), "ignore", POSTFIX,
      "a client talking before the greeting: ignore (log only) or drop (521, disconnect)"),
    P("postscreen_greet_ttl", TIME, "1d", POSTFIX,
      "how long a client that passed the pregreet test is greeted without waiting"),
    P("postscreen_greet_banner", TEXT, "$smtpd_banner", POSTFIX,
      "text of the first greeting line (220-) sent before the wait"),
    P("greylisting", BOOL, "no", OWN,
      "greylist new (client network, sender, recipient) triplets at RCPT (Postgrey's rules)"),
    P("greylist_delay", TIME, "300s", OWN,
      "how long a new (client, sender, recipient) triplet is deferred (Postgrey --delay)"),
    P("greylist_retry_window", TIME, "2d", OWN,
      "how long after the delay a retry still passes (Postgrey --retry-window)"),
    P("greylist_max_age", TIME, "35d", OWN,
      "triplets and clients unseen this long are forgotten (Postgrey --max-age)"),
    P("greylist_auto_whitelist_clients", INT, "5", OWN,
      "passes after which a client is no longer greylisted (0: never; Postgrey)"),
    P("smtpd_client_connection_rate_limit", INT, "0", POSTFIX,
      "connections per client and anvil_rate_time_unit (0: no limit)"),
    P("smtpd_client_message_rate_limit", INT, "0", POSTFIX,
      "messages per client and anvil_rate_time_unit (0: no limit)"),
    P("anvil_rate_time_unit", TIME, "60s", POSTFIX, "the time unit of the client rate limits"),
    P("smtpd_client_event_limit_exceptions", Networks(), "$mynetworks", POSTFIX,
      "clients exempt from the client rate limits"),
    # Sieve at delivery and ManageSieve (Pigeonhole's names).
    P("sieve_before", TEXT, "", DOVECOT,
      "global scripts (files, or directories of *.sieve) run before the user's script"),
    P("sieve_after", TEXT, "", DOVECOT, "global scripts run after the user's script"),
    P("sieve_global", PATH, "", DOVECOT, "directory of the scripts include :global names"),
    P("sieve_max_script_size", SIZE, "1048576", DOVECOT, "largest Sieve script"),
    P("sieve_max_actions", INT, "32", DOVECOT, "most actions one Sieve run may take"),
    P("sieve_max_redirects", INT, "4", DOVECOT, "most redirects one Sieve run may do"),
    P("sieve_quota_max_scripts", INT, "100", DOVECOT, "most scripts per user (ManageSieve; 0: no limit)"),
    P("sieve_quota_max_storage", SIZE, "10485760", DOVECOT,
      "bytes of scripts per user (ManageSieve; 0: no limit)"),
    P("sieve_vacation_min_period", TIME, "1d", DOVECOT, "shortest vacation :days period"),
    P("sieve_vacation_default_period", TIME, "7d", DOVECOT, "vacation period without :days"),
    P("sieve_vacation_max_period", TIME, "60d", DOVECOT, "longest vacation period"),
    P("lda_mailbox_autocreate", BOOL, "no", DOVECOT,
      "fileinto creates a missing folder even without :create (no: the message goes to INBOX)"),
    P("managesieve_timeout", TIME, "10m", OWN, "idle time before a ManageSieve client is dropped"),
)  # fmt: skip
del P

DECLARED: dict[str, Parameter] = {p.name: p for p in PARAMETERS}
# Parameters whose value is derived and cannot be set.
DERIVED = frozenset({"config_directory"})
# The listener parameters (endpoint lists), in declaration order.
LISTENERS = tuple(p.name for p in PARAMETERS if isinstance(p.type, Endpoints))


class Config:
    """
    The configuration: one read-only attribute per declared parameter,
    named as the parameter, holding its typed value (lists are tuples).
    """

    __slots__ = ("_values", "_where", "_raw", "path")

    def __init__(
        self,
        values: dict[str, Any],
        where: dict[str, tuple[str, int]],
        raw: dict[str, str],
        path: str,
    ) -> None:
        object.__setattr__(self, "_values", dict(values))
        object.__setattr__(self, "_where", dict(where))
        object.__setattr__(self, "_raw", dict(raw))
        object.__setattr__(self, "path", path)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(f"no configuration parameter {name!r}") from None

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Config is frozen")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("Config is frozen")

    def __dir__(self) -> list[str]:
        return sorted(set(object.__dir__(self)) | set(self._values))

    def __repr__(self) -> str:
        return f"<Config {self.path}>"

    def where(self, name: str) -> tuple[str, int]:
        """The (file, line) that set C{name}, or C{("<default>", 0)}."""
        if name not in self._values:
            raise KeyError(name)
        return self._where.get(name, (DEFAULT, 0))

    def raw(self, name: str) -> str:
        """C{name}'s text before expansion (what C{postconf} would show)."""
        if name not in self._values:
            raise KeyError(name)
        return self._raw[name]

    def names(self) -> list[str]:
        """The declared parameters, in declaration order."""
        return [p.name for p in PARAMETERS]


class _Loop(Exception):
    def __init__(self, chain: list[str]) -> None:
        self.chain = chain


class _Failed(Exception):
    """Expanding a parameter failed; C{origin} is the parameter at fault."""

    def __init__(self, origin: str, message: str) -> None:
        self.origin = origin
        self.message = message


class _Expander:
    """Recursive, memoised expansion of every parameter, with loop detection."""

    def __init__(
        self, settings: dict[str, RawSetting], fqdn: Callable[[], str], config_directory: str
    ) -> None:
        self.settings = settings
        self.defaults = _Defaults(self._plain, fqdn, config_directory)
        self.values: dict[str, str] = {}
        self.stack: list[str] = []
        self.depends: dict[str, set[str]] = {}
        self.unknown: dict[str, list[str]] = {}
        self.referenced: set[str] = set()

    def _plain(self, name: str) -> str:
        return self.value(name) or ""

    def value(self, name: str) -> str | None:
        """The expanded value of C{name}; None for an unknown name."""
        if self.stack:
            self.depends.setdefault(self.stack[-1], set()).add(name)
            self.referenced.add(name)
        if name in self.values:
            return self.values[name]
        if name in self.stack:
            raise _Loop(self.stack[self.stack.index(name) :] + [name])
        setting = self.settings.get(name)
        declared = DECLARED.get(name)
        if declared is not None and (name in DERIVED or setting is None):
            source: DefaultValue = declared.default
        elif setting is not None:
            source = setting.value
        else:
            return None
        self.stack.append(name)
        try:
            if callable(source):
                result = source(self.defaults)
            else:
                try:
                    result, unknown = expand(source, self.value)
                except ExpansionError as e:
                    raise _Failed(name, str(e)) from None
                self.unknown[name] = unknown
        finally:
            self.stack.pop()
        self.values[name] = result
        return result

    def closure(self, name: str) -> set[str]:
        """Every parameter C{name}'s value was built from."""
        seen: set[str] = set()
        todo = list(self.depends.get(name, ()))
        while todo:
            dep = todo.pop()
            if dep not in seen:
                seen.add(dep)
                todo.extend(self.depends.get(dep, ()))
        return seen


def _location(name: str, settings: dict[str, RawSetting]) -> tuple[str, int]:
    setting = settings.get(name)
    if setting is None or name in DERIVED:
        return DEFAULT, 0
    return setting.file, setting.line


def parse_config(
    text: str,
    filename: str,
    *,
    base_directory: str,
    overrides: Iterable[tuple[str, str]] = (),
    fqdn: Callable[[], str] = socket.getfqdn,
) -> tuple[Config, list[Problem]]:
    """
    Build a Config from main.cf text (pure but for C{fqdn}).

    Relative paths resolve against C{base_directory}, which is also
    C{config_directory}.  C{overrides} are (name, value) pairs applied after
    the file, as C{postconf -o} does.  Returns the Config and the warnings;
    raises ConfigError with every problem if there is any error.
    """
    base = os.path.abspath(base_directory)
    raw_settings, problems = parse_main_cf(text, filename)
    settings = {s.name: s for s in raw_settings}
    for index, (name, value) in enumerate(overrides, start=1):
        settings[name] = RawSetting(name, value, COMMAND_LINE, index)

    expander = _Expander(settings, fqdn, base)
    values: dict[str, Any] = {}
    failed: set[str] = set()
    located: list[tuple[str, Problem]] = []

    def report(name: str, message: str, severity: str = "error") -> None:
        setting = settings.get(name)
        file, line = (setting.file, setting.line) if setting else (DEFAULT, 0)
        located.append((name, Problem(file, line, f"{name}: {message}", severity)))

    invalid: dict[str, str] = {}
    for parameter in PARAMETERS:
        name = parameter.name
        try:
            text_value = expander.value(name) or ""
        except _Loop as loop:
            failed.add(name)
            # Report a loop where the user wrote it, not at the defaults in it.
            if name in loop.chain and name in settings:
                report(name, "expansion loop: " + " -> ".join(f"${n}" for n in loop.chain))
            continue
        except _Failed as failure:
            failed.add(name)
            if failure.origin == name:
                report(name, failure.message)
            continue
        except RecursionError:
            failed.add(name)
            expander.stack.clear()
            report(name, "expansion nested too deeply")
            continue
        try:
            values[name] = parameter.type.parse(text_value, base)
        except ValueError as e:
            failed.add(name)
            invalid[name] = str(e)
    for name, message in invalid.items():
        # A value built from a bad one is not reported again.
        if not expander.closure(name) & failed:
            report(name, message)

    for name, setting in settings.items():
        if name in DERIVED:
            report(name, "is derived from the main file's location; the setting is ignored",
                   "warning")
        elif name not in DECLARED and name not in expander.referenced:
            hint = difflib.get_close_matches(name, DECLARED, n=1)
            more = f" (did you mean {hint[0]}?)" if hint else ""
            report(name, f"unknown parameter{more}", "warning")
    for name, unknown in expander.unknown.items():
        for missing in dict.fromkeys(unknown):
            report(name, f"unknown parameter ${missing} expands to nothing", "warning")

    problems.extend(problem for _, problem in located)
    problems.sort(key=lambda p: (p.file != filename, p.file, p.line))
    if any(p.severity == "error" for p in problems):
        raise ConfigError(problems)
    where = {name: _location(name, settings) for name in DECLARED}
    raw = {
        p.name: (settings[p.name].value if p.name in settings and p.name not in DERIVED
                 else p.default if isinstance(p.default, str) else expander.values[p.name])
        for p in PARAMETERS
    }  # fmt: skip
    return Config(values, where, raw, filename), problems


def load_config(
    path: str | None,
    *,
    overrides: Sequence[tuple[str, str]] = (),
    fqdn: Callable[[], str] = socket.getfqdn,
    base_directory: str | None = None,
) -> tuple[Config, list[Problem]]:
    """
    Read and check the main configuration file; None means the embedded
    default (loopback only, unprivileged ports, data in ./mailserver-data,
    relative to C{base_directory}, by default the current directory).
    Returns the Config and the warnings; raises ConfigError on any error,
    including a file that cannot be read.
    """
    if path is None:
        return parse_config(
            EMBEDDED_MAIN_CF, EMBEDDED, base_directory=base_directory or os.getcwd(),
            overrides=overrides, fqdn=fqdn,
        )  # fmt: skip
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise ConfigError([Problem(path, 0, f"cannot read the configuration: {reason}")]) from e
    return parse_config(
        text, path, base_directory=os.path.dirname(os.path.abspath(path)),
        overrides=overrides, fqdn=fqdn,
    )  # fmt: skip


def _interface_addresses(config: Config) -> list[str] | None:
    """The addresses listeners bind, or None for all interfaces."""
    interfaces = config.inet_interfaces
    if interfaces == ("all",):
        return None
    if interfaces == ("loopback-only",):
        interfaces = ("127.0.0.1", "::1")
    families = {"ipv4": 4, "ipv6": 6}
    wanted = {families[p] for p in config.inet_protocols}
    return [a for a in interfaces if (6 if ":" in a else 4) in wanted]


def listen_endpoints(config: Config, name: str) -> list[str]:
    """
    The endpoint descriptions of listener parameter C{name}, each bound to
    the C{inet_interfaces} addresses unless it names its own interface=.
    """
    if name not in LISTENERS:
        raise KeyError(f"{name} is not a listener parameter")
    addresses = _interface_addresses(config)
    result: list[str] = []
    for description in getattr(config, name):
        endpoint = parse_endpoint(description)
        binds = endpoint.type in ("tcp", "tcp6", "ssl") and "interface" not in endpoint.arguments
        if addresses is None or not binds:
            candidates = [description]
        else:
            candidates = [bind_to(endpoint, address) for address in addresses]
        result.extend(c for c in candidates if c not in result)
    return result
