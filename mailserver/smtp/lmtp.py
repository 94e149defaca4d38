"""
LMTP (RFC 2033): our ESMTP session speaking LHLO, for a local MTA (Postfix's
C{mailbox_transport = lmtp:unix:...}) handing mail to the store.

Differences from SMTP: LHLO replaces EHLO/HELO; no AUTH; STARTTLS only when
the listener has TLS (a tcp listener with C{lmtp_tls_security_level = may});
recipients must be in a local domain (the client is trusted, but never a
relay); and after the data, one reply per accepted recipient, in RCPT
order, from one delivery (L{Transaction.commit_each}).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred
from twisted.mail import smtp
from twisted.python.failure import Failure

from mailserver.address import parse_path
from mailserver.envelope import Client, Recipient
from mailserver.errors import MailError
from mailserver.interfaces import ISMTPDelivery
from mailserver.smtp.factory import SMTPFactory
from mailserver.smtp.server import ESMTPServer, SMTPPolicy

NOT_LOCAL = "Recipient address rejected: not a local domain (LMTP delivers, never relays)"


@dataclass(frozen=True)
class LMTPPolicy(SMTPPolicy):
    """An SMTP policy plus the domains LMTP delivers for."""

    local_domains: frozenset[str] = frozenset()


class LMTPServer(ESMTPServer):
    """One LMTP session."""

    policy: LMTPPolicy

    def connectionMade(self) -> None:
        super().connectionMade()
        if not hasattr(self.transport.getPeer(), "host"):
            # A unix socket: the local MTA on this host, logged as Postfix's smtpd
            # logs a non-Internet client (smtpd_peer.c): localhost[127.0.0.1].
            self.peer_name = "localhost"
            self.peer_ip = "127.0.0.1"
            self._helo = (None, b"127.0.0.1")

    def _log_protocol(self) -> str:
        return "LMTP"

    def extensions(self) -> dict[bytes, list[bytes] | None]:
        ext = super().extensions()
        ext.pop(b"AUTH", None)
        return ext

    def lookupMethod(self, command):
        name = command.decode("ascii").upper()
        if name == "AUTH":
            return None
        return super().lookupMethod(command)

    def do_LHLO(self, rest: bytes) -> None:
        self._greet(rest, esmtp=True)

    def do_EHLO(self, rest: bytes) -> None:
        self.reply(500, "5.5.1", "Error: this is LMTP, send LHLO")

    do_HELO = do_EHLO

    async def _get_delivery(self) -> ISMTPDelivery:
        """No login: the listener's own pipeline (LMTP's content-check settings)."""
        if self._delivery is None:
            self._delivery = self.factory.delivery.getMessageDelivery()
        return self._delivery

    def _make_client(self) -> Client:
        protocol = "LMTP" + ("S" if self.encrypted else "")
        return Client(ip=self.peer_ip, helo=self._ehlo or "", tls=self.encrypted, protocol=protocol)

    async def _rcpt(self, argument: str) -> None:
        path = parse_path(argument, "TO", allow_null=False)
        domain = path.address.domain if path.address is not None else ""
        if domain and domain not in self.policy.local_domains:
            error = MailError(550, "5.1.2", f"<{path.address}>: {NOT_LOCAL}")
            sender = self._envelope.sender if self._envelope is not None else ""
            self._log_refusal("RCPT", error, str(sender or ""), str(path.address))
            raise error
        await super()._rcpt(argument)

    def do_DATA(self, rest: bytes) -> None:
        if self._envelope is not None and not self._envelope.recipients:
            self.reply(503, "5.5.1", "Error: no valid recipients")  # RFC 2033 4.2: 503, not SMTP's 554
            return
        super().do_DATA(rest)

    def _end_of_data(self) -> None:
        """RFC 2033 section 4.2: one reply per accepted recipient, all from one delivery."""
        transaction = self._transaction
        assert transaction is not None and self._envelope is not None
        count = len(self._envelope.recipients)
        self._end_data_phase()
        self.mode = smtp.COMMAND
        self._transaction = None
        self._envelope = None

        def sent(outcomes: list[tuple[Recipient, str | MailError]]) -> None:
            for recipient, outcome in outcomes:
                if isinstance(outcome, MailError):
                    who = f"<{recipient.original}>"
                    text = outcome.text if who in outcome.text else f"{who} {outcome.text}"
                    self.reply(outcome.code, outcome.enhanced, text)
                else:
                    self.sendCode(250, f"{outcome} <{recipient.original}>".encode())

        def failed(failure: Failure) -> None:
            if failure.check(MailError):
                error = failure.value
            else:
                self.log.failure("internal error in LMTP delivery", failure)
                error = MailError(451, "4.3.0", "Error: internal error, try again later")
            for _ in range(count):
                self.reply_error(error)

        done: Deferred = transaction.commit_each().addBoth(self._hold_replies)
        done.addCallbacks(sent, failed)
        self._wait(done)


class LMTPFactory(SMTPFactory):
    """
    LMTP listeners: sessions of L{LMTPServer} over C{delivery} (an
    C{IMessageDeliveryFactory}, no portal: LMTP has no AUTH).
    """

    protocol = LMTPServer  # type: ignore[assignment]

    def __init__(self, delivery: Any, policy: LMTPPolicy, clock: Any, context_factory: Any = None) -> None:
        super().__init__(None, policy, clock, context_factory=context_factory)
        self.delivery = delivery
