"""
Pure: the values of the Sendmail macros Postfix sends to milters.

The SMTP session fills a L{MacroContext} as it learns things (client at
connect, TLS and HELO, SASL login, queue id and sender at MAIL, recipient
at RCPT) and passes C{context.values()} to every stage; the milter session
sends each stage the names its C{milter_*_macros} list (or the milter)
asks for.  Empty values are not sent.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any


def _host(address: str) -> str:
    return address.rpartition("@")[2] if "@" in address else ""


@dataclass(frozen=True)
class MacroContext:
    """What is known about the SMTP session so far (str fields; empty = unknown)."""

    myhostname: str = ""  # j
    daemon_name: str = ""  # {daemon_name}: milter_macro_daemon_name
    version: str = ""  # v: milter_macro_v
    daemon_addr: str = ""
    daemon_port: int = 0
    client_addr: str = ""
    client_port: int = 0
    client_name: str = ""  # verified name or "unknown"
    client_ptr: str = ""  # reverse name, unverified
    helo: str = ""
    tls_version: str = ""
    cipher: str = ""
    cipher_bits: str = ""
    cert_subject: str = ""
    cert_issuer: str = ""
    auth_type: str = ""
    auth_authen: str = ""
    auth_author: str = ""
    queue_id: str = ""  # i
    mail_addr: str = ""
    rcpt_addr: str = ""
    rcpt_mailer: str = ""  # local, smtp, relay...

    @classmethod
    def from_config(cls, config: Any, **known: Any) -> "MacroContext":
        return cls(
            myhostname=config.myhostname, daemon_name=config.milter_macro_daemon_name,
            version=config.milter_macro_v, **known,
        )  # fmt: skip

    def with_(self, **changes: Any) -> "MacroContext":
        return replace(self, **changes)

    def values(self) -> dict[str, str]:
        client_name = self.client_name or ("unknown" if self.client_addr else "")
        values = {
            "j": self.myhostname,
            "{daemon_name}": self.daemon_name,
            "v": self.version,
            "{daemon_addr}": self.daemon_addr,
            "{daemon_port}": str(self.daemon_port) if self.daemon_port else "",
            "_": f"{client_name} [{self.client_addr}]" if self.client_addr else "",
            "{client_addr}": self.client_addr,
            "{client_port}": str(self.client_port) if self.client_port else "",
            "{client_name}": client_name,
            "{client_ptr}": self.client_ptr or client_name,
            "{tls_version}": self.tls_version,
            "{cipher}": self.cipher,
            "{cipher_bits}": self.cipher_bits,
            "{cert_subject}": self.cert_subject,
            "{cert_issuer}": self.cert_issuer,
            "{auth_type}": self.auth_type,
            "{auth_authen}": self.auth_authen,
            "{auth_author}": self.auth_author,
            "i": self.queue_id,
            "{mail_addr}": self.mail_addr,
            "{mail_host}": _host(self.mail_addr),
            "{mail_mailer}": "smtp" if self.mail_addr else "",
            "{rcpt_addr}": self.rcpt_addr,
            "{rcpt_host}": _host(self.rcpt_addr),
            "{rcpt_mailer}": self.rcpt_mailer,
        }
        return {name: value for name, value in values.items() if value}
