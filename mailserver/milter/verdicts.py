"""
Pure: the actions a milter's verdict can carry, Postfix's reply texts for
them, and the SMFIC_CONNECT address family: what the SMTP session needs to
turn a verdict into a reply without depending on the milter client.
"""

from __future__ import annotations

import socket

from mailserver.errors import MailError
from mailserver.milter import codec

CONTINUE, ACCEPT, REJECT, TEMPFAIL, DISCARD, SHUTDOWN = (
    "continue", "accept", "reject", "tempfail", "discard", "shutdown",
)  # fmt: skip
#: Postfix's texts for replies without a SMFIR_REPLYCODE.
REJECT_ERROR = MailError(550, "5.7.1", "Command rejected")
TEMPFAIL_ERROR = MailError(451, "4.7.1", "Service unavailable - try again later")
SHUTDOWN_ERROR = MailError(421, "4.7.0", "Server closing connection")
DEFAULT_TEMPFAIL_ERROR = MailError(451, "4.3.5", "Server configuration problem - try again later")
DEFAULT_REJECT_ERROR = MailError(550, "5.5.0", "Service unavailable")


def family_of(address: str) -> str:
    """The SMFIC_CONNECT family of a client address (FAMILY_INET6 for IPv6)."""
    try:
        socket.inet_pton(socket.AF_INET6, address)
        return codec.FAMILY_INET6
    except OSError:
        pass
    try:
        socket.inet_pton(socket.AF_INET, address)
        return codec.FAMILY_INET
    except OSError:
        return codec.FAMILY_UNKNOWN
