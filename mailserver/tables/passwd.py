"""
Pure: Dovecot's passwd-file format -> user records, located by file:line.

One user per line::

    user[@domain]:{SCHEME}hash:uid:gid:gecos:home:shell:extra_fields

Fields after the password are optional; C{extra_fields} is a
space-separated list of C{key=value} (or a bare C{key}, value C{""}).  As
in Dovecot, any colons after the seventh field belong to the extra fields.
Lines starting with C{#} and blank lines are ignored.  A password without a
C{{SCHEME}} prefix is Dovecot's default C{CRYPT}: accepted only when it is
a crypt string whose algorithm we can verify (C{$2y$}, C{$6$}, C{$5$},
C{$argon2id$}), and recorded under that scheme.
"""

from __future__ import annotations

import re
import stat
from dataclasses import dataclass, field

from mailserver.address import user_name_problem
from mailserver.config.lines import split_lines, strip, unicode_space, words
from mailserver.errors import Problem
from mailserver.quota_rule import user_rule_problem

#: Schemes whose hashes this server can verify; the aliases map onto them.
SCHEMES = frozenset({"ARGON2ID", "ARGON2I", "BLF-CRYPT", "SHA512-CRYPT", "SHA256-CRYPT", "PLAIN"})
_ALIASES = {"CLEAR": "PLAIN", "CLEARTEXT": "PLAIN"}

#: Crypt prefixes -> scheme, for C{{CRYPT}} and unprefixed passwords.
_CRYPT_PREFIXES = (
    ("$argon2id$", "ARGON2ID"),
    ("$argon2i$", "ARGON2I"),
    ("$2y$", "BLF-CRYPT"),
    ("$2b$", "BLF-CRYPT"),
    ("$2a$", "BLF-CRYPT"),
    ("$6$", "SHA512-CRYPT"),
    ("$5$", "SHA256-CRYPT"),
)
_SCHEME_PREFIX = re.compile(r"\{([A-Za-z0-9._-]+)\}")
_BAD_NAME_CHARS = re.compile(r"[\s:\x00-\x1f\x7f]")


@dataclass(frozen=True)
class UserRecord:
    """One passwd-file user: how to check the password, where the mail lives."""

    name: str  # as written, domain lower-cased
    scheme: str  # canonical upper-case scheme, never CRYPT
    password: str  # the hash text after C{{SCHEME}}
    uid: int | None = None
    gid: int | None = None
    home: str | None = None
    extra: dict[str, str] = field(default_factory=dict, hash=False, compare=True)

    @property
    def key(self) -> str:
        """The lookup key of this user (see L{lookup_key})."""
        return lookup_key(self.name)

    @property
    def domain(self) -> str:
        """The lower-cased domain, or C{""} for a bare user name."""
        return self.name.rpartition("@")[2] if "@" in self.name else ""


def lookup_key(name: str) -> str:
    """C{"Alice@Example.COM"} -> C{"alice@example.com"}; C{"Bob"} -> C{"bob"}."""
    local, at, domain = name.rpartition("@")
    if not at:
        return name.lower()
    return f"{local.lower()}@{domain.lower()}"


def check_user_name(name: str) -> str:
    """
    L{check_name}, and also a name that can be a mail user and a Maildir
    (see L{mailserver.address.user_name_problem}): what C{user add} accepts.

    @raise ValueError: with the reason.
    """
    name = check_name(name)
    unusable = user_name_problem(name)
    if unusable is not None:
        raise ValueError(unusable)
    return name


def check_name(name: str) -> str:
    """
    Validate a user name's passwd-file syntax and return it with its domain
    lower-cased (L{check_user_name} also checks it can be a mail user).

    @raise ValueError: empty, a colon, white space or control characters,
        a leading C{#}, more than one C{@}, or an empty local part or domain.
    """
    if not name:
        raise ValueError("empty user name")
    if _BAD_NAME_CHARS.search(name):
        raise ValueError(f"user name {name!r} contains a colon, white space or a control character")
    if name.startswith("#"):
        raise ValueError(f"user name {name!r} starts with '#'")
    if name.count("@") > 1:
        raise ValueError(f"user name {name!r} has more than one '@'")
    local, at, domain = name.partition("@")
    if at and not (local and domain):
        raise ValueError(f"user name {name!r} has an empty local part or domain")
    return f"{local}@{domain.lower()}" if at else name


def crypt_scheme(hashed: str) -> str | None:
    """The scheme of a crypt(3) string by its prefix, or None if unsupported."""
    for prefix, scheme in _CRYPT_PREFIXES:
        if hashed.startswith(prefix):
            return scheme
    return None


def split_password(field_text: str) -> tuple[str, str]:
    """
    C{"{SHA512-CRYPT}$6$..."} -> C{("SHA512-CRYPT", "$6$...")}.

    @raise ValueError: empty, an unknown scheme, a hash that does not fit its
        scheme, or a bare/C{{CRYPT}} hash of an unsupported crypt algorithm.
    """
    if field_text == "":
        raise ValueError("empty password field")
    match = _SCHEME_PREFIX.match(field_text)
    if match is None:
        scheme, hashed = "CRYPT", field_text
    else:
        scheme, hashed = match.group(1).upper(), field_text[match.end() :]
    scheme = _ALIASES.get(scheme, scheme)
    if scheme == "CRYPT":
        mapped = crypt_scheme(hashed)
        if mapped is None:
            how = "{CRYPT} password" if match else "password without a {SCHEME} prefix"
            raise ValueError(f"{how} is not a supported crypt hash ($2y$, $6$, $5$, $argon2id$)")
        return mapped, hashed
    if scheme not in SCHEMES:
        raise ValueError(f"unknown password scheme {{{scheme}}}")
    if hashed == "":
        raise ValueError(f"empty {{{scheme}}} password")
    if scheme != "PLAIN" and crypt_scheme(hashed) != scheme:
        raise ValueError(f"the hash after {{{scheme}}} is not a {scheme} hash")
    return scheme, hashed


def _parse_id(text: str, what: str) -> int | None:
    if text == "":
        return None
    if not text.isascii() or not text.isdigit() or int(text) > 0xFFFFFFFF:
        raise ValueError(f"bad {what} {text!r}: expected a number from 0 to 4294967295")
    return int(text)


def _parse_extra(text: str) -> dict[str, str]:
    extra: dict[str, str] = {}
    for word in words(text):
        odd = unicode_space(word)
        if odd:
            raise ValueError(f"bad extra field {word!r}: contains {odd} (separate fields with spaces)")
        key, _, value = word.partition("=")
        if not key:
            raise ValueError(f"bad extra field {word!r}: expected key=value")
        extra[key] = value
    return extra


def parse_passwd_line(line: str) -> UserRecord:
    """
    Parse one non-comment line (no line ending).

    @raise ValueError: with a message naming the bad field.
    """
    fields = line.split(":")
    if len(fields) < 2:
        raise ValueError("expected user:{SCHEME}password[:uid:gid:gecos:home:shell:extra_fields]")
    name = check_name(fields[0])
    scheme, hashed = split_password(fields[1])
    uid = _parse_id(fields[2], "uid") if len(fields) > 2 else None
    gid = _parse_id(fields[3], "gid") if len(fields) > 3 else None
    home = (fields[5] or None) if len(fields) > 5 else None
    extra = _parse_extra(":".join(fields[7:])) if len(fields) > 7 else {}
    return UserRecord(name, scheme, hashed, uid, gid, home, extra)


def iter_lines(text: str) -> list[str]:
    """Split on LF only (as Dovecot does), dropping a CR before it."""
    return split_lines(text)


def is_entry(line: str) -> bool:
    """False for blank lines and C{#} comments."""
    stripped = strip(line)
    return bool(stripped) and not stripped.startswith("#")


def parse_passwd(text: str, filename: str) -> tuple[dict[str, UserRecord], list[Problem]]:
    """
    Parse a whole passwd-file.

    @return: the records keyed by L{lookup_key}, in file order, and the
        problems found.  A bad line is left out (an error); a duplicate user
        is an error and the first line wins; C{{PLAIN}} is a warning.
    """
    records: dict[str, UserRecord] = {}
    first_seen: dict[str, int] = {}
    problems: list[Problem] = []
    for number, line in enumerate(iter_lines(text), 1):
        if not is_entry(line):
            continue
        try:
            record = parse_passwd_line(line)
        except ValueError as error:
            problems.append(Problem(filename, number, str(error)))
            continue
        unusable = user_name_problem(record.name)
        if unusable is not None:
            problems.append(Problem(filename, number, f"{unusable}; entry skipped", "warning"))
            continue
        key = record.key
        if key in records:
            problems.append(
                Problem(filename, number, f"duplicate user {record.name!r} (first at line {first_seen[key]}); ignored")
            )
            continue
        if record.scheme == "PLAIN":
            problems.append(
                Problem(filename, number, f"plaintext password for {record.name!r}", severity="warning")
            )
        bad_quota = user_rule_problem(record.extra)
        if bad_quota is not None:
            problems.append(Problem(filename, number, f"{bad_quota}; quota_rule applies to {record.name!r}", "warning"))
        records[key] = record
        first_seen[key] = number
    return records, problems


def _check_field(value: str, what: str, allow_colon: bool = False) -> str:
    if "\n" in value or "\r" in value or (":" in value and not allow_colon):
        raise ValueError(f"{what} {value!r} cannot contain a colon or a line break")
    return value


def format_password(scheme: str, hashed: str) -> str:
    """The password field: C{{SCHEME}hash}."""
    return "{%s}%s" % (scheme, _check_field(hashed, "password hash"))


def format_passwd_line(record: UserRecord) -> str:
    """
    One passwd-file line for C{record} (no line ending); trailing empty
    fields are left out, gecos and shell are empty.

    @raise ValueError: a field that would not parse back the same.
    """
    extras = []
    for key, value in record.extra.items():
        if not key or any(c.isspace() for c in key + value) or "=" in key:
            raise ValueError(f"extra field {key!r}={value!r} cannot contain white space or '='")
        extras.append(f"{key}={value}" if value else key)
    fields = [
        _check_field(check_name(record.name), "user name"),
        format_password(record.scheme, record.password),
        "" if record.uid is None else str(record.uid),
        "" if record.gid is None else str(record.gid),
        "",
        _check_field(record.home or "", "home"),
        "",
        _check_field(" ".join(extras), "extra fields", allow_colon=True),
    ]
    while fields[-1] == "":
        fields.pop()
    return ":".join(fields)


def replace_password(line: str, password_field: str) -> str:
    """C{line} with only its password field replaced, the rest kept as written."""
    name, sep, rest = line.partition(":")
    if not sep:
        return f"{name}:{password_field}"
    _, colon, tail = rest.partition(":")
    return f"{name}:{password_field}{colon}{tail}"


def mode_problem(path: str, mode: int) -> str | None:
    """The warning when the passwd-file's C{mode} lets every user read or write it (daemon and check)."""
    if mode & (stat.S_IROTH | stat.S_IWOTH):
        return f"passwd file {path} is accessible by all users; chmod 0600 or 0640"
    return None
