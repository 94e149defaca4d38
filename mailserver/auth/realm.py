"""
The one cred realm: an avatar id and an interface give an avatar, through
factories that the composition root (service.py) hands in, so this module
imports no protocol package.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from twisted.cred.checkers import ANONYMOUS
from twisted.cred.portal import IRealm
from zope.interface import Interface, implementer

AvatarFactory = Callable[[Any], Any]
"""C{factory(avatar_id) -> avatar}; avatar_id is C{ANONYMOUS} or the user's name (str)."""


@implementer(IRealm)
class MailRealm:
    """
    Avatars for every protocol.

    C{factories} maps an interface (C{IMessageDelivery}, C{pop3.IMailbox},
    C{imap4.IAccount}, ...) to a factory.  Mailbox interfaces are never given
    to the anonymous avatar: C{anonymous_interfaces} names the few that are.
    """

    def __init__(
        self,
        factories: Mapping[type[Interface], AvatarFactory],
        anonymous_interfaces: frozenset[type[Interface]] = frozenset(),
    ) -> None:
        self._factories = dict(factories)
        self._anonymous = anonymous_interfaces

    def requestAvatar(self, avatarId, mind, *interfaces):
        for interface in interfaces:
            factory = self._factories.get(interface)
            if factory is None:
                continue
            if avatarId is ANONYMOUS:
                if interface not in self._anonymous:
                    continue
                user = ANONYMOUS
            else:
                user = avatarId.decode("utf-8") if isinstance(avatarId, bytes) else avatarId
            avatar = factory(user)
            logout = getattr(avatar, "logout", None) or (lambda: None)
            return interface, avatar, logout
        raise NotImplementedError(f"no avatar for {interfaces!r}")
