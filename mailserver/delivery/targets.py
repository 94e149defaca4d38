"""Delivery targets other than Maildirs and the queue: the hold area, alias files and commands."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool

from mailserver.envelope import CommandTarget, Envelope, FileTarget
from mailserver.delivery.local_targets import deliver_to_command, deliver_to_file, resolve_run_as


@dataclass(frozen=True)
class LocalTargets:
    """
    What the L{mailserver.delivery.transaction.Committer} calls for a
    message held by a content check, an alias C{/path/file} and an alias
    C{|command}; built by C{service.py} with the hold area
    (L{mailserver.store.hold.HoldArea}) and the C{default_privs} and
    C{command_time_limit} parameters.
    """

    reactor: Any
    hold_area: Any
    trusted_origin: Callable[[Any], bool]
    default_privs: str
    command_time_limit: float

    def hold(self, envelope: Envelope, message: Any, reason: str) -> Deferred:
        """Keep a message in the hold area (content check HOLD); released by C{mailserver hold}."""
        record = {
            "sender": str(envelope.sender) if envelope.sender else "",
            "recipients": [str(r.original) for r in envelope.recipients],
            "client_ip": envelope.client.ip,
            "reason": reason,
            "queue_id": envelope.queue_id,
            "helo": envelope.client.helo,
            "sasl_user": envelope.client.sasl_user,
            "trusted": self.trusted_origin(envelope.client),
        }
        return deferToThreadPool(self.reactor, self.reactor.getThreadPool(), self.hold_area.hold, record, message)

    def to_file(self, target: FileTarget, sender: str, message: bytes) -> Deferred:
        """Append to an alias C{/path/file} as its owner (or C{default_privs})."""
        run_as = resolve_run_as(target.owner_uid, None, self.default_privs)
        return deliver_to_file(self.reactor, target, sender, message, run_as)

    def to_command(self, target: CommandTarget, sender: str, recipient: str, message: bytes) -> Deferred:
        """Pipe to an alias C{|command} as its owner (or C{default_privs}), within C{command_time_limit}."""
        run_as = resolve_run_as(target.owner_uid, None, self.default_privs)
        return deliver_to_command(self.reactor, target, sender, recipient, message, run_as, self.command_time_limit)
