"""
The anvil client rate limits at the SMTP session's two points: connection
(C{smtpd_client_connection_rate_limit}: 421 and close before the banner)
and MAIL FROM (C{smtpd_client_message_rate_limit}: 421 and close), each
with Postfix's warning line and reject line.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

from mailserver.policy.logline import reject_line
from mailserver.policy.rates import connection_error, message_error, warning_line

log = Logger(namespace="mailserver.smtp")


def connection_rate_allowed(rates: Any, transport: Any, ip: str, now: float) -> bool:
    """Count the connection; over the limit: 421 written, connection closed, False."""
    if rates is None:
        return True
    decision = rates.connection(ip, now)
    if decision.allowed:
        return True
    error = connection_error("unknown", ip)
    log.warn("{warning_line}", warning_line=warning_line("Connection", decision.count, "unknown", ip))
    log.info("{reject_line}", reject_line=reject_line(error, client="unknown", address=ip, stage="CONNECT", proto="SMTP"))
    transport.write(f"{error.code} {error.enhanced} {error.text}\r\n".encode())
    transport.loseConnection()
    return False


def check_message_rate(rates: Any, ip: str, now: float) -> None:
    """Count a MAIL FROM; over the limit raise the 421 (the session closes after it)."""
    if rates is None:
        return
    decision = rates.message(ip, now)
    if not decision.allowed:
        log.warn("{warning_line}", warning_line=warning_line("Message delivery request", decision.count, "unknown", ip))
        error = message_error("unknown", ip)
        error.close = True  # type: ignore[attr-defined]
        raise error
