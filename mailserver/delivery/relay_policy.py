"""Stage: may this client send to a domain that is not ours? (reject_unauth_destination)"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass
from typing import Callable, Sequence

from zope.interface import implementer

from mailserver.address import Address
from mailserver.envelope import Envelope, RemoteAddress, Verdict
from mailserver.delivery.recipients import RELAY_DENIED
from mailserver.interfaces import IRecipientStage

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@functools.lru_cache(maxsize=4096)
def _client_address(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """C{ip} parsed (an IPv4-mapped IPv6 address as IPv4), None if it is not one; cached, as
    every message asks it about its client several times (relay policy, trusted origin)."""
    try:
        address = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def in_networks(ip: str, networks: Sequence[Network]) -> bool:
    """True if C{ip} (IPv4, IPv6 or IPv4-mapped IPv6) is in one of C{networks}."""
    address = _client_address(ip)
    if address is None:
        return False
    return any(address.version == net.version and address in net for net in networks)


@implementer(IRecipientStage)
@dataclass(frozen=True)
class RelayPolicy:
    """
    Local domains pass on to the next stage.  Other domains are accepted
    for the outbound queue only from C{mynetworks} or an authenticated
    client, and only when a queue exists; everyone else gets 554 5.7.1.
    """

    is_local_domain: Callable[[str], bool]
    mynetworks: Sequence[Network]
    queue_available: bool
    name: str = "reject_unauth_destination"

    def check(self, envelope: Envelope, recipient: Address) -> Verdict:
        if self.is_local_domain(recipient.domain):
            return Verdict.proceed()
        client = envelope.client
        permitted = client.trusted or client.sasl_user is not None or in_networks(client.ip, self.mynetworks)
        if permitted and self.queue_available:
            return Verdict.accept(RemoteAddress(recipient))
        return Verdict.reject(RELAY_DENIED)
