"""
Composition of the built-in spam checks (docs/spam.rst), for service.py:
the recipient stages (DNSBL score, greylisting), the client rate limiter
the SMTP factory consults, the pregreet wrapper of the port-25 listener,
and the greylist state's loading, expiry and saving.
"""

from __future__ import annotations

import os
from typing import Any, Callable

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from mailserver.envelope import Client
from mailserver.delivery.policy_stages import DnsblStage, GreylistStage
from mailserver.interfaces import IRecipientStage
from mailserver.periodic import PeriodicTask
from mailserver.policy.dnsbl import DnsblScorer
from mailserver.policy.greylist import Greylist, GreylistSettings
from mailserver.policy.pregreet import PregreetFactory
from mailserver.policy.rates import RateLimiter

log = Logger(namespace="mailserver.policy")

GREYLIST_EXPIRY_INTERVAL = 3600.0


class SpamDefence(Service):
    """
    @param exempt: clients the checks skip (mynetworks, SASL users, local
        submissions: Postfix's permit_mynetworks, permit_sasl_authenticated).
    """

    name = "spam defence"

    def __init__(self, config: Any, reactor: Any, resolver: Any, exempt: Callable[[Client], bool]) -> None:
        self.config = config
        self.reactor = reactor
        self.stages: list[IRecipientStage] = []
        self.dnsbl: DnsblStage | None = None
        if config.postscreen_dnsbl_sites:
            scorer = DnsblScorer(config.postscreen_dnsbl_sites, resolver, reactor, float(config.postscreen_dnsbl_timeout))
            self.dnsbl = DnsblStage(scorer, config.postscreen_dnsbl_threshold,
                                    config.postscreen_dnsbl_allowlist_threshold, exempt, reactor)  # fmt: skip
            self.stages.append(self.dnsbl)
        self.greylist: Greylist | None = None
        self._expiry: PeriodicTask | None = None
        if config.greylisting:
            self.greylist = Greylist(GreylistSettings.from_config(config), config.data_directory, reactor)
            dnsbl = self.dnsbl
            self.stages.append(GreylistStage(
                self.greylist, lambda c: exempt(c) or (dnsbl is not None and dnsbl.allowlisted(c))
            ))  # fmt: skip
            self._expiry = PeriodicTask("greylist expiry", self.greylist.expire, GREYLIST_EXPIRY_INTERVAL, reactor)
        limited = config.smtpd_client_connection_rate_limit or config.smtpd_client_message_rate_limit
        self.rates: RateLimiter | None = RateLimiter.from_config(config) if limited else None

    def wrap_smtpd(self, factory: Any) -> Any:
        """The port-25 factory behind postscreen's pregreet test when C{postscreen_greet_enable}."""
        config = self.config
        if not config.postscreen_greet_enable:
            return factory
        return PregreetFactory(
            factory, self.reactor, config.postscreen_greet_banner, float(config.postscreen_greet_wait),
            config.postscreen_greet_action, float(config.postscreen_greet_ttl), config.mynetworks,
        )  # fmt: skip

    def startService(self) -> None:
        super().startService()
        if self.greylist is not None:
            os.makedirs(self.config.data_directory, exist_ok=True)
            Deferred.fromCoroutine(self.greylist.load()).addErrback(
                lambda f: log.failure("greylist: cannot load state", f)
            )
        if self._expiry is not None:
            self._expiry.start(delay=GREYLIST_EXPIRY_INTERVAL)

    def stopService(self) -> Deferred | None:
        super().stopService()
        if self._expiry is not None:
            self._expiry.stop()
        return self.greylist.flush() if self.greylist is not None else None
