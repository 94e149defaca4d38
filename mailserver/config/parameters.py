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
from mailserver.config.values import (
    Boolean,
    Delimiter,
    DomainList,
    Endpoints,
    Enum,
    EnumList,
    Hostname,
    Integer,
    Interfaces,
    MaildirPath,
    Networks,
    Path,
    Protocols,
    Relayhost,
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


def _myhostname(d: _Defaults) -> str:
    name = d.fqdn().rstrip(".")
    return name if "." in name else f"{name}.localdomain"


def _mydomain(d: _Defaults) -> str:
    _, dot, parent = d.get("myhostname").partition(".")
    return parent if dot and parent else "localdomain"


TEXT, BOOL, INT, SIZE, TIME, PATH = Text(), Boolean(), Integer(), Size(), Time(), Path()
ENDPOINTS, DOMAINS = Endpoints(), DomainList()
HASH_TABLES = Tables(("hash", "lmdb", "btree", "dbm", "texthash"), "hash")
CHECK_TABLES = Tables(("regexp", "pcre"), None)
TLS_LEVEL = Enum("none", "may", "encrypt")
DELIVERY_KINDS = EnumList("alias", "forward", "include")

TLS_HIGH_CIPHERLIST = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305"
)

P = Parameter
PARAMETERS: tuple[Parameter, ...] = (
    # Site and domains.
    P("config_directory", PATH, lambda d: d.config_directory, POSTFIX,
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
      "bytes/s a DATA phase must keep up: each N bytes extend its smtpd_timeout deadline by N/rate s (0: off)"),
    P("smtpd_hard_error_limit", INT, "20", POSTFIX, "errors before a client is disconnected"),
    P("smtpd_client_connection_count_limit", INT, "50", POSTFIX,
      "simultaneous connections per client IP (0: no limit)"),
    P("smtpd_max_connections", INT, "500", OWN, "simultaneous SMTP connections in all"),
    P("smtpd_stress_timeout", TIME, "10s", OWN,
      "idle time allowed outside a mail transaction once SMTP connections reach 80% of "
      "smtpd_max_connections (Postfix's smtpd_timeout under stress)"),
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
      "state: queue, generated TLS key, mailboxes of users without a home"),
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
    # IMAP and POP3.
    P("imap_timeout", TIME, "30m", OWN, "idle time before an IMAP client is dropped"),
    P("pop3_timeout", TIME, "10m", OWN, "idle time before a POP3 client is dropped"),
    P("imap_literal_limit", SIZE, "$message_size_limit", OWN, "largest IMAP literal (APPEND)"),
    P("mail_max_userip_connections", INT, "10", DOVECOT,
      "logged-in sessions per user and client IP, IMAP and POP3 counted apart (0: no limit)"),
    P("imap_client_limit", INT, "1000", OWN,
      "simultaneous IMAP connections, IMAP and IMAPS together (0: no limit)"),
    P("pop3_client_limit", INT, "500", OWN,
      "simultaneous POP3 connections, POP3 and POP3S together (0: no limit)"),
    P("login_per_ip_limit", INT, "50", OWN,
      "simultaneous IMAP (and, apart, POP3) connections from one client IP (0: no limit)"),
    P("login_timeout", TIME, "60s", OWN, "time an IMAP or POP3 client has to log in (0: only the idle timeouts)"),
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
) -> tuple[Config, list[Problem]]:
    """
    Read and check the main configuration file; None means the embedded
    default (loopback only, unprivileged ports, data in ./mailserver-data).
    Returns the Config and the warnings; raises ConfigError on any error,
    including a file that cannot be read.
    """
    if path is None:
        return parse_config(
            EMBEDDED_MAIN_CF, EMBEDDED, base_directory=os.getcwd(),
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
