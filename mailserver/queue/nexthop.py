"""
Pure: where outbound mail goes and how it is put on the wire.

C{relayhost} syntax as Postfix: C{[host]:port} means that host, no MX
lookup; C{host:port} or C{host} means an MX lookup for C{host}.  The
C{smtp_sasl_password_maps} file has lines C{key user:password}, where the
key is the next hop as written in C{relayhost} or a remote host name.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Mapping

from mailserver.config.lines import SPACE, split_lines, strip, unicode_space
from mailserver.errors import MailError

_HOST = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)(?:\.(?!-)[A-Za-z0-9_-]{1,63}(?<!-))*\.?\Z")
_ENHANCED = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})(?=\s|\Z)")
_LINE_END = re.compile(rb"\r\n|\r|\n")
_DOT_LINE = re.compile(rb"^\.", re.MULTILINE)


@dataclass(frozen=True)
class NextHop:
    """A destination: a domain (with C{mx}) or a host, a port, and its table key."""

    host: str
    port: int
    mx: bool
    key: str  # as written: "example.org", "[smtp.example.com]:587"

    def __str__(self) -> str:
        return self.key


def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def parse_relayhost(text: str, default_port: int = 25) -> NextHop | None:
    """
    Parse C{relayhost}; None when empty (deliver by MX).

    @raise ValueError: bad syntax or port.
    """
    text = text.strip()
    if not text:
        return None
    port = default_port
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"relayhost {text!r}: missing ]")
        host, rest = text[1:end], text[end + 1 :]
        if host.lower().startswith("ipv6:"):
            host = host[5:]
        mx = False
    else:
        host, sep, port_text = text.rpartition(":") if text.count(":") == 1 else (text, "", "")
        rest = f":{port_text}" if sep else ""
        mx = True
    if rest:
        if not rest.startswith(":") or not rest[1:].isdigit():
            raise ValueError(f"relayhost {text!r}: bad port")
        port = int(rest[1:])
    if not 0 < port < 65536:
        raise ValueError(f"relayhost {text!r}: port out of range")
    if not (is_ip(host) or _HOST.match(host)):
        raise ValueError(f"relayhost {text!r}: bad host name")
    return NextHop(host.rstrip(".").lower(), port, mx and not is_ip(host), text)


def nexthop_for(recipient: str, port: int = 25) -> NextHop:
    """
    The next hop for a recipient address: its domain (MX lookup), or the
    address in a domain literal C{user@[192.0.2.1]}.

    @raise MailError: 5.1.3 when the address has no usable domain.
    """
    local, at, domain = recipient.rpartition("@")
    if not at or not local or not domain:
        raise MailError(550, "5.1.3", f"bad address syntax <{recipient}>")
    if domain.startswith("[") and domain.endswith("]"):
        literal = domain[1:-1]
        if literal.lower().startswith("ipv6:"):
            literal = literal[5:]
        if not is_ip(literal):
            raise MailError(550, "5.1.3", f"bad address literal <{recipient}>")
        return NextHop(literal, port, False, domain.lower())
    if not _HOST.match(domain):
        raise MailError(550, "5.1.2", f"bad destination domain <{recipient}>")
    domain = domain.rstrip(".").lower()
    return NextHop(domain, port, True, domain)


def parse_sasl_passwords(text: str, source: str = "smtp_sasl_password_maps") -> dict[str, tuple[str, str]]:
    """
    Parse C{key user:password} lines into C{{key: (user, password)}}.

    Keys are case-folded; comments (C{#}) and blank lines are skipped.

    @raise ValueError: naming C{source}:line for a malformed line.
    """
    table: dict[str, tuple[str, str]] = {}
    for number, line in enumerate(split_lines(text), 1):
        stripped = strip(line)
        if not stripped or stripped.startswith("#"):
            continue
        parts = re.split(f"[{re.escape(SPACE)}]+", stripped, maxsplit=1)
        if len(parts) != 2 or ":" not in parts[1]:
            odd = unicode_space(stripped)
            hint = f" ({odd} is not white space here: use spaces and tabs)" if odd else ""
            raise ValueError(f"{source}:{number}: expected 'host user:password'{hint}")
        user, _, password = parts[1].partition(":")
        if not user:
            raise ValueError(f"{source}:{number}: empty user name")
        table[parts[0].lower()] = (user, password)
    return table


def load_sasl_passwords(spec) -> dict[str, tuple[str, str]]:
    """
    Read the files named by C{smtp_sasl_password_maps} (blocking; call at start-up).

    C{spec} is the configured value: a string (C{"hash:/etc/sasl_passwd"},
    several separated by commas or spaces) or a sequence of table
    references (objects with a C{path}, or such strings).  A Postfix map
    type prefix is dropped: the text source file is read.  When several
    tables hold a key, the first wins, as Postfix searches them in order.
    """
    items = spec.replace(",", " ").split() if isinstance(spec, str) else list(spec or ())
    table: dict[str, tuple[str, str]] = {}
    for item in items:
        path = getattr(item, "path", item)
        kind, sep, rest = path.partition(":")
        if sep and kind.isalpha() and not rest.startswith("//"):
            path = rest
        with open(path, encoding="utf-8") as f:
            for key, value in parse_sasl_passwords(f.read(), path).items():
                table.setdefault(key, value)
    return table


def credentials_for(
    table: Mapping[str, tuple[str, str]], nexthop: NextHop, host_name: str
) -> tuple[str, str] | None:
    """The C{(user, password)} for a session, looked up as Postfix does."""
    if not table:
        return None
    keys = [
        host_name,
        nexthop.key,
        f"[{nexthop.host}]:{nexthop.port}",
        f"[{nexthop.host}]",
        f"{nexthop.host}:{nexthop.port}",
        nexthop.host,
    ]
    for key in keys:
        found = table.get(key.lower())
        if found is not None:
            return found
    return None


def smtp_payload(message: bytes) -> bytes:
    """
    The message as DATA content: every line ending (LF, CRLF or a bare CR)
    made CRLF, lines starting with a dot doubled, a final CRLF ensured.
    Normalising bare CRs as well means no line can ever end the data early
    at a remote that accepts them (SMTP smuggling).
    """
    text = _LINE_END.sub(b"\r\n", message)
    if text and not text.endswith(b"\r\n"):
        text += b"\r\n"
    return _DOT_LINE.sub(b"..", text)


def enhanced_status(code: int, text: str) -> str:
    """The RFC 3463 code at the start of a reply text, or one derived from C{code}."""
    match = _ENHANCED.match(text)
    if match and match.group(1) == str(code)[:1]:
        return f"{match.group(1)}.{match.group(2)}.{match.group(3)}"
    return {2: "2.0.0", 4: "4.0.0", 5: "5.0.0"}.get(code // 100, "4.0.0")
