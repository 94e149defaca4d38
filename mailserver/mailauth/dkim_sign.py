"""
DKIM signing (RFC 6376, RFC 8463) with dkimpy: one RSA-SHA256 and one
Ed25519-SHA256 signature per message (whichever keys exist), relaxed/relaxed,
with the identity headers oversigned so none can be added after signing.

L{DKIMSigner.sign_blocking} is CPU work: call it from a thread
(L{DKIMSigner.sign} does, on the reactor's pool).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import dkim
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from zope.interface import implementer

from mailserver.interfaces import IOutboundQueue
from mailserver.mailauth.dkim_keys import KeyStore, SigningKey
from mailserver.mailauth.headers import from_domains, split_headers
from mailserver.spooled import SpooledMessage

log = Logger(namespace="mailserver.mailauth")

#: Signed when present (RFC 6376 5.4.1's list).
SIGNED = (
    "from", "sender", "reply-to", "subject", "date", "message-id", "to", "cc",
    "mime-version", "content-type", "content-transfer-encoding", "content-id",
    "content-description", "resent-date", "resent-from", "resent-sender", "resent-to",
    "resent-cc", "resent-message-id", "in-reply-to", "references", "list-id", "list-help",
    "list-unsubscribe", "list-subscribe", "list-post", "list-owner", "list-archive",
    "list-unsubscribe-post", "autocrypt", "openpgp",
)  # fmt: skip
#: Signed once more than they occur (RFC 6376 8.15): adding one later breaks the signature.
OVERSIGNED = (
    "from", "sender", "reply-to", "subject", "date", "message-id", "to", "cc",
    "mime-version", "content-type", "content-transfer-encoding", "in-reply-to", "references",
)  # fmt: skip

_ALGORITHM = {"rsa": b"rsa-sha256", "ed25519": b"ed25519-sha256"}


def header_list(fields: Iterable[tuple[str, Any]]) -> list[str]:
    """The h= list for a message with these header fields."""
    present = [name.lower() for name, _raw in fields if name.lower() in SIGNED]
    return present + list(OVERSIGNED)


def sign_with(message: bytes, keys: Iterable[SigningKey]) -> bytes:
    """
    The DKIM-Signature fields (one per key, RSA first) to prepend to
    C{message}; the line end follows the message's (LF or CRLF).
    """
    fields, _ = split_headers(message)
    include = [name.encode() for name in header_list(fields)]
    linesep = b"\r\n" if message.split(b"\n", 1)[0].endswith(b"\r") else b"\n"
    signatures = []
    for key in keys:
        signature = dkim.sign(
            message, key.dns_selector.encode(), key.domain.encode(), key.private,
            canonicalize=(b"relaxed", b"relaxed"), signature_algorithm=_ALGORITHM[key.algorithm],
            include_headers=include, linesep=linesep,
        )
        signatures.append(signature)
    return b"".join(signatures)


class DKIMSigner:
    """
    Signs mail whose From domain (or, failing that, envelope sender
    domain) is one of C{domains} or under one, with that domain's keys
    for C{selector}.  Messages of other domains pass unsigned.
    """

    def __init__(self, keys: KeyStore, selector: str, domains: Iterable[str], reactor: Any,
                 pool: Any = None) -> None:
        self.keys = keys
        self.selector = selector
        self.domains = frozenset(d.lower().rstrip(".") for d in domains)
        self.reactor = reactor
        self.pool = pool
        self._warned: set[str] = set()

    def signing_domain(self, message: bytes, sender: str = "") -> str | None:
        """The configured domain to sign for (the From domain or a parent of it)."""
        fields, _ = split_headers(message)
        candidates = from_domains(fields)[:1]
        if "@" in sender:
            candidates.append(sender.rsplit("@", 1)[1].lower())
        for candidate in candidates:
            labels = candidate.split(".")
            for start in range(len(labels) - 1):
                domain = ".".join(labels[start:])
                if domain in self.domains:
                    return domain
        return None

    def sign_blocking(self, message: bytes | SpooledMessage, sender: str = "") -> bytes | SpooledMessage:
        """
        C{message} with its signatures prepended (unchanged when there is no
        key or it fails).  A spooled message is read whole for dkimpy (one
        per signing thread) and stays spooled: the signatures join its head.
        """
        spooled = message if isinstance(message, SpooledMessage) else None
        if spooled is not None:
            message = spooled.read()
        signed = self._sign_bytes(message, sender)
        if spooled is None:
            return signed
        if signed is message:
            return spooled
        return spooled.prepend(signed[: len(signed) - len(message)])

    def _sign_bytes(self, message: bytes, sender: str) -> bytes:
        domain = self.signing_domain(message, sender)
        if domain is None:
            return message
        try:
            keys = self.keys.load(domain, self.selector)
            if not keys:
                if domain not in self._warned:
                    self._warned.add(domain)
                    log.warn("no DKIM key for {domain} selector {selector}: sent unsigned",
                             domain=domain, selector=self.selector)
                return message
            return sign_with(message, keys) + message
        except Exception as error:
            # Unsigned mail still goes out: a broken key, or a header dkimpy cannot parse
            # (obsolete "Name : value", a stray unfolded line, an empty message), must not
            # stop delivery.
            log.error("DKIM signing for {domain} failed, sent unsigned: {error!r}", domain=domain, error=error)
            return message

    def sign(self, message: bytes | SpooledMessage, sender: str = "") -> Deferred:
        """L{sign_blocking} in a thread."""
        pool = self.pool or self.reactor.getThreadPool()
        return deferToThreadPool(self.reactor, pool, self.sign_blocking, message, sender)


@implementer(IOutboundQueue)
class SigningQueue:
    """
    An L{IOutboundQueue} decorator: mail from a trusted origin is signed (in
    a thread) before it is spooled.  C{is_trusted(client)} decides from the
    delivery layer's C{Client} (SASL user, C{mynetworks}, pickup, bounces);
    anything else (mail forwarded for outside senders) is spooled as is.
    """

    def __init__(self, queue: Any, signer: DKIMSigner, is_trusted: Callable[[Any], bool]) -> None:
        self.queue = queue
        self.signer = signer
        self.is_trusted = is_trusted

    def enqueue(self, sender: str, recipients: Any, message: bytes | SpooledMessage, client: Any = None) -> Deferred:
        if client is None or not self.is_trusted(client):
            return self.queue.enqueue(sender, recipients, message, client=client)
        d = self.signer.sign(message, sender)
        return d.addCallback(lambda signed: self.queue.enqueue(sender, recipients, signed, client=client))

    def __getattr__(self, name: str) -> Any:
        # The spool's other methods (queue manager, hold release) pass through.
        return getattr(self.queue, name)
