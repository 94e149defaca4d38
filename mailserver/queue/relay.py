"""
Outbound delivery: find the hosts for a destination and hand them the message.

For each recipient domain (or the C{relayhost}): MX lookup through an
injected C{twisted.names} resolver (MX records by preference, ties
shuffled; no MX: the domain's own A/AAAA; a null MX or a domain that does
not exist: permanent failure), then each address in turn, carrying all of
the message's recipients for that destination on one connection
(L{mailserver.queue.client.RelaySession}).  Recipients deferred by one host
are tried on the next, as Postfix does.  Each destination has at most
C{default_destination_concurrency_limit} sessions at once.

This replaces twisted.mail's relay manager, which bounces on 4xx replies
and loses messages after connection failures: here nothing fails silently,
every recipient comes back delivered, deferred or bounced.
"""

from __future__ import annotations

import random
import socket
from dataclasses import dataclass
from typing import Mapping, Sequence

from twisted.internet import ssl
from twisted.internet.defer import Deferred, DeferredList, DeferredSemaphore, maybeDeferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.names import dns
from twisted.names import error as dns_error

from mailserver.errors import MailError
from mailserver.queue.client import RelaySession, SessionOutcome
from mailserver.queue.nexthop import (
    NextHop,
    credentials_for,
    enhanced_status,
    is_ip,
    nexthop_for,
    parse_relayhost,
    smtp_payload,
)

DELIVERED = "delivered"
DEFERRED = "deferred"
BOUNCED = "bounced"

TLS_LEVELS = ("none", "may", "encrypt", "verify", "secure")


@dataclass(frozen=True)
class RecipientResult:
    """What happened to one recipient in one delivery attempt."""

    recipient: str
    status: str  # DELIVERED, DEFERRED or BOUNCED
    enhanced: str  # RFC 3463 status: "2.0.0", "4.4.1", "5.1.1"
    text: str  # for logs and mailq: "host mx[192.0.2.1] said: 550 ... (in reply to RCPT TO command)"
    remote_mta: str = ""  # the host that replied, if any
    diagnostic: str = ""  # the remote's reply, quoted in a DSN
    relay: str = "none"  # "mx.example.org[192.0.2.1]:25", for the log line


@dataclass(frozen=True)
class _Host:
    name: str
    address: str
    port: int

    @property
    def label(self) -> str:
        return f"{self.name}[{self.address}]"


class _LookupFailed(Exception):
    def __init__(self, permanent: bool, enhanced: str, text: str) -> None:
        super().__init__(text)
        self.permanent = permanent
        self.enhanced = enhanced
        self.text = text


class _OneProtocol(Factory):
    """Hands the endpoint the session built beforehand."""

    def __init__(self, protocol) -> None:
        self._protocol = protocol

    def buildProtocol(self, addr):
        self._protocol.factory = self
        return self._protocol


def _result(recipient: str, status: str, enhanced: str, text: str, **extra) -> RecipientResult:
    return RecipientResult(recipient, status, enhanced, text, **extra)


class Relay:
    """
    Deliver queued messages to other hosts.

    @param reactor: for connections and timeouts.
    @param resolver: a C{twisted.names} resolver (C{lookupMailExchange},
        C{lookupAddress}, C{lookupIPV6Address}).
    @param helo_name: C{smtp_helo_name} (by default C{myhostname}).
    @param port: the SMTP port of MX hosts; tests use a loopback port.
    @param relayhost: Postfix's C{relayhost}: C{[host]:port} or C{host}.
    @param sasl_passwords: from L{mailserver.queue.nexthop.load_sasl_passwords}.
    @param tls_security_level: C{smtp_tls_security_level}: none, may
        (opportunistic, unverified), encrypt (required, unverified), verify or
        secure (required, certificate checked against the host name).
    @param tls_context: a client TLS context factory for none/may/encrypt
        (unverified by default, as Postfix's opportunistic TLS).
    @param mta_sts: L{mailserver.mailauth.mta_sts.MTASTSPolicies} or None:
        under an C{enforce} policy only the MX hosts it names are used, with
        a verified certificate; a failure defers (never a downgrade).
    @param trust_root: certificate authorities for verified TLS (the
        platform's when None; tests pass their own).
    """

    log = Logger()

    def __init__(
        self,
        reactor,
        resolver,
        *,
        helo_name: str,
        port: int = 25,
        relayhost: str = "",
        sasl_passwords: Mapping[str, tuple[str, str]] | None = None,
        tls_security_level: str = "may",
        tls_context=None,
        connect_timeout: float = 30,
        reply_timeout: float = 300,
        destination_concurrency_limit: int = 20,
        destination_recipient_limit: int = 50,
        mx_address_limit: int = 5,
        rng: random.Random | None = None,
        mta_sts=None,
        trust_root=None,
    ) -> None:
        if tls_security_level not in TLS_LEVELS:
            raise ValueError(f"smtp_tls_security_level: unknown level {tls_security_level!r}")
        self._reactor = reactor
        self._resolver = resolver
        self.helo_name = helo_name
        self.port = port
        self.relayhost = parse_relayhost(relayhost, port)
        self._passwords = dict(sasl_passwords or {})
        self.tls_security_level = tls_security_level
        if tls_context is None and tls_security_level != "none":
            tls_context = ssl.CertificateOptions()
        self._tls_context = tls_context
        self.connect_timeout = connect_timeout
        self.reply_timeout = reply_timeout
        self.concurrency_limit = max(1, destination_concurrency_limit)
        self.recipient_limit = max(1, destination_recipient_limit)
        self.mx_address_limit = max(1, mx_address_limit)
        self._random = rng or random.Random()
        self._semaphores: dict[str, DeferredSemaphore] = {}
        self.mta_sts = mta_sts
        self._trust_root = trust_root

    # -- the public operation ------------------------------------------------

    def deliver(self, sender: str, recipients: Sequence[str], message: bytes) -> Deferred:
        """
        Try to deliver C{message} to C{recipients} once.

        @return: a Deferred firing with one L{RecipientResult} per recipient,
            in order; it does not fail.
        """
        return Deferred.fromCoroutine(self._deliver(sender, list(recipients), message))

    async def _deliver(self, sender: str, recipients: list[str], message: bytes) -> list[RecipientResult]:
        payload = smtp_payload(message)
        eight_bit = not message.isascii()
        results: dict[str, RecipientResult] = {}
        groups: dict[NextHop, list[str]] = {}
        for recipient in dict.fromkeys(recipients):
            try:
                nexthop = self.relayhost or nexthop_for(recipient, self.port)
            except MailError as e:
                results[recipient] = _result(recipient, BOUNCED, e.enhanced, e.text)
                continue
            groups.setdefault(nexthop, []).append(recipient)
        jobs = []
        for nexthop, members in groups.items():
            for start in range(0, len(members), self.recipient_limit):
                chunk = members[start : start + self.recipient_limit]
                jobs.append(
                    Deferred.fromCoroutine(self._destination(nexthop, sender, chunk, payload, eight_bit))
                )
        for ok, value in await DeferredList(jobs, consumeErrors=True):
            if ok:
                results.update(value)
            else:  # a bug: keep the message, say so
                self.log.failure("outbound delivery failed", value)
        return [
            results.get(r) or _result(r, DEFERRED, "4.3.0", "internal error in outbound delivery")
            for r in recipients
        ]

    async def _destination(
        self, nexthop: NextHop, sender: str, recipients: list[str], payload: bytes, eight_bit: bool
    ) -> dict[str, RecipientResult]:
        """One destination, within its concurrency limit."""
        semaphore = self._semaphores.get(nexthop.key)
        if semaphore is None:
            semaphore = self._semaphores[nexthop.key] = DeferredSemaphore(self.concurrency_limit)
        await semaphore.acquire()
        try:
            return await self._try_hosts(nexthop, sender, recipients, payload, eight_bit)
        finally:
            semaphore.release()
            if semaphore.tokens == semaphore.limit and not semaphore.waiting:
                self._semaphores.pop(nexthop.key, None)

    def active_sessions(self, destination: str) -> int:
        """How many sessions to C{destination} (a domain or relayhost) run now."""
        semaphore = self._semaphores.get(destination)
        return 0 if semaphore is None else semaphore.limit - semaphore.tokens

    async def _try_hosts(
        self, nexthop: NextHop, sender: str, recipients: list[str], payload: bytes, eight_bit: bool
    ) -> dict[str, RecipientResult]:
        try:
            hosts = await self._resolve(nexthop)
        except _LookupFailed as e:
            status = BOUNCED if e.permanent else DEFERRED
            return {r: _result(r, status, e.enhanced, e.text) for r in recipients}
        level = self.tls_security_level
        if self.mta_sts is not None and nexthop.mx and self.relayhost is None:
            policy = await self.mta_sts.policy_for(nexthop.host)
            if policy is not None and policy.mode == "enforce":
                level = level if level in ("verify", "secure") else "verify"
                hosts = [host for host in hosts if policy.matches(host.name)]
                if not hosts:
                    text = f"MTA-STS policy of {nexthop.host}: no MX host matches the policy"
                    await self.mta_sts.report(nexthop.host, "validation-failure", text)
                    return {r: _result(r, DEFERRED, "4.7.5", text) for r in recipients}
        results: dict[str, RecipientResult] = {}
        remaining = list(recipients)
        last_failure: tuple[bool, str, str, str] | None = None
        last_host: _Host | None = None
        for host in hosts:
            outcome = await self._session(host, nexthop, sender, remaining, payload, eight_bit, True, level)
            if outcome.tls_failed and level != self.tls_security_level and self.mta_sts is not None:
                await self.mta_sts.report(nexthop.host, "certificate-or-starttls-failure",
                                          f"{host.label}: {outcome.failure[2] if outcome.failure else 'TLS failed'}")
            if outcome.tls_failed and level == "may":
                self.log.info("{host}: TLS failed, trying plain text", host=host.label)
                outcome = await self._session(host, nexthop, sender, remaining, payload, eight_bit, False, level)
            if outcome.failure is not None:
                last_failure, last_host = outcome.failure, host
                if outcome.failure[0]:  # permanent: a 5xx at HELO
                    break
                continue
            for recipient, (code, text, command) in (outcome.replies or {}).items():
                results[recipient] = self._from_reply(recipient, code, text, command, host)
            remaining = [r for r in remaining if r not in results or results[r].status == DEFERRED]
            if not remaining:
                break
        if last_failure is not None:
            permanent, enhanced, text, diagnostic = last_failure
            for recipient in remaining:
                if permanent or recipient not in results:
                    results[recipient] = _result(
                        recipient,
                        BOUNCED if permanent else DEFERRED,
                        enhanced,
                        text,
                        remote_mta=last_host.name if (last_host and diagnostic) else "",
                        diagnostic=diagnostic,
                        relay=f"{last_host.label}:{last_host.port}" if last_host else "none",
                    )
        return results

    @staticmethod
    def _from_reply(recipient: str, code: int, text: str, command: str, host: _Host) -> RecipientResult:
        reply = f"{code} {text}".strip()
        if 200 <= code < 300:
            status, said = DELIVERED, f"{reply}"
        else:
            status = BOUNCED if 500 <= code < 600 else DEFERRED
            said = f"host {host.label} said: {reply} (in reply to {command} command)"
        return RecipientResult(
            recipient,
            status,
            enhanced_status(code, text),
            said,
            remote_mta=host.name,
            diagnostic=reply,
            relay=f"{host.label}:{host.port}",
        )

    async def _session(
        self,
        host: _Host,
        nexthop: NextHop,
        sender: str,
        recipients: list[str],
        payload: bytes,
        eight_bit: bool,
        use_tls: bool,
        level: str,
    ) -> SessionOutcome:
        context = self._tls_context
        if level in ("verify", "secure"):
            context = ssl.optionsForClientTLS(host.name, trustRoot=self._trust_root)
        session = RelaySession(
            helo_name=self.helo_name,
            host_label=host.label,
            sender=sender,
            recipients=recipients,
            payload=payload,
            eight_bit=eight_bit,
            tls_context=context if use_tls else None,
            require_tls=level in ("encrypt", "verify", "secure"),
            credentials=credentials_for(self._passwords, nexthop, host.name),
            reply_timeout=self.reply_timeout,
        )
        session.callLater = self._reactor.callLater  # the reply timeout on our reactor, not the global one
        endpoint = self.endpoint_for(host.name, host.address, host.port)
        try:
            await endpoint.connect(_OneProtocol(session))
        except Exception as e:  # refused, unreachable, timed out: try the next host
            return SessionOutcome(
                failure=(False, "4.4.1", f"connect to {host.label}:{host.port}: {_reason(e)}", "")
            )
        return await session.done

    def endpoint_for(self, name: str, address: str, port: int):
        """The client endpoint for one connection to C{name} at C{address} (a hook for tests)."""
        endpoint_type = TCP6ClientEndpoint if ":" in address else TCP4ClientEndpoint
        return endpoint_type(self._reactor, address, port, timeout=self.connect_timeout)

    # -- DNS -------------------------------------------------------------------

    async def _resolve(self, nexthop: NextHop) -> list[_Host]:
        """The addresses to try, in order, at most C{mx_address_limit}."""
        if is_ip(nexthop.host):
            return [_Host(nexthop.host, nexthop.host, nexthop.port)]
        names = await self._mx_names(nexthop.host) if nexthop.mx else None
        implicit = names is None
        if names is None:
            names = [nexthop.host]
        hosts: list[_Host] = []
        temporary: _LookupFailed | None = None
        for name in names:
            try:
                addresses = await self._addresses(name)
            except _LookupFailed as e:
                temporary = temporary or e
                continue
            hosts.extend(_Host(name, address, nexthop.port) for address in addresses)
            if len(hosts) >= self.mx_address_limit:
                break
        if hosts:
            return hosts[: self.mx_address_limit]
        if temporary is not None:
            raise temporary
        if implicit:
            raise _LookupFailed(
                True,
                "5.1.2",
                f"Host or domain name not found. Name service error for name={nexthop.host} "
                "type=A: no MX and no address records",
            )
        raise _LookupFailed(True, "5.4.4", f"MX host(s) for {nexthop.host} not found")

    async def _mx_names(self, domain: str) -> list[str] | None:
        """MX host names by preference; None when the domain has no MX records."""
        try:
            answers, _authority, _additional = await maybeDeferred(
                self._resolver.lookupMailExchange, domain
            )
        except dns_error.DNSNameError:
            raise _LookupFailed(
                True,
                "5.1.2",
                f"Host or domain name not found. Name service error for name={domain} type=MX: "
                "Host not found",
            ) from None
        except Exception as e:  # SERVFAIL, timeouts, refused: try again later
            raise _LookupFailed(
                False,
                "4.4.3",
                f"Host or domain name not found. Name service error for name={domain} type=MX: "
                f"Host not found, try again ({type(e).__name__})",
            ) from None
        records = [(rr.payload.preference, _name(rr.payload.name)) for rr in answers if rr.type == dns.MX]
        if not records:
            return None
        if any(name == "" for _, name in records):
            raise _LookupFailed(True, "5.1.10", f"Domain {domain} does not accept mail (nullMX)")
        self._random.shuffle(records)
        records.sort(key=lambda record: record[0])
        return list(dict.fromkeys(name for _, name in records))

    async def _addresses(self, name: str) -> list[str]:
        """IPv4 then IPv6 addresses of C{name}; L{_LookupFailed} (temporary) on DNS trouble."""
        lookups = [maybeDeferred(self._resolver.lookupAddress, name)]
        if hasattr(self._resolver, "lookupIPV6Address"):
            lookups.append(maybeDeferred(self._resolver.lookupIPV6Address, name))
        addresses: list[str] = []
        trouble = False
        for ok, value in await DeferredList(lookups, consumeErrors=True):
            if ok:
                for rr in value[0]:
                    if rr.type == dns.A:
                        addresses.append(rr.payload.dottedQuad())
                    elif rr.type == dns.AAAA:
                        addresses.append(socket.inet_ntop(socket.AF_INET6, rr.payload.address))
            elif not value.check(dns_error.DNSNameError):
                trouble = True
        if not addresses and trouble:
            raise _LookupFailed(
                False,
                "4.4.3",
                f"Host or domain name not found. Name service error for name={name} type=A: "
                "Host not found, try again",
            )
        return list(dict.fromkeys(addresses))


def _name(name) -> str:
    raw = getattr(name, "name", name)
    if isinstance(raw, bytes):
        raw = raw.decode("ascii", "replace")
    return str(raw).rstrip(".").lower()


def _reason(error: BaseException) -> str:
    return " ".join((str(error) or type(error).__name__).split())
