"""Policy: is this client's mail ours to vouch for (DKIM signing, skipping inbound checks)?"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from mailserver.delivery.relay_policy import Network, in_networks


@dataclass(frozen=True)
class TrustedOrigin:
    """
    Mail we vouch for: SASL users, clients in C{mynetworks}, the local
    C{sendmail} and bounces (clients marked C{trusted}).  Called with a
    L{mailserver.envelope.Client}.
    """

    mynetworks: Sequence[Network]

    def __call__(self, client: Any) -> bool:
        return client.trusted or client.sasl_user is not None or in_networks(client.ip, self.mynetworks)
