"""Policy: is this client's mail ours to vouch for (DKIM signing, skipping inbound checks)?"""

from __future__ import annotations

from dataclasses import dataclass, field
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
    # ip -> in mynetworks?  Asked at MAIL FROM and at end of DATA of every message.
    _known: dict[str, bool] = field(default_factory=dict, init=False, compare=False, repr=False)

    def __call__(self, client: Any) -> bool:
        if client.trusted or client.sasl_user is not None:
            return True
        known = self._known.get(client.ip)
        if known is None:
            if len(self._known) >= 10_000:
                self._known.clear()
            known = self._known[client.ip] = in_networks(client.ip, self.mynetworks)
        return known
