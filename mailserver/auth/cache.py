"""
A cache of verified credentials, after Dovecot's auth cache
(C{auth_cache_size}, C{auth_cache_ttl}): a password that verified against
a stored hash is not hashed again for a while.

Password hashing (Argon2id, bcrypt, SHA512-CRYPT) is deliberately slow; a
client that logs in every minute, or a few hundred clients that reconnect
at once after a restart, would otherwise fill the hashing pool and make
every LOGIN wait seconds.

Only successes are cached.  The key is the user record's name and an HMAC
(with a random per-process key, so the table never holds anything a
password can be guessed from offline faster than from the stored hash) of
the password and the stored hash: a changed passwd-file entry (new hash,
new scheme) misses at once, with no invalidation needed.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections import OrderedDict
from typing import Callable

#: Rough bytes one entry costs (key tuple, name, 32-byte digest, float, dict
#: slot): how C{auth_cache_size} (bytes, as Dovecot) becomes a count.
ENTRY_BYTES = 256


class VerifiedCache:
    """
    Bounded, expiring set of (user, password, stored hash) that verified.

    @param size: bytes of memory the cache may use (0: disabled).
    @param ttl: seconds an entry stays valid (0: disabled).
    @param now: the clock, C{IReactorTime.seconds}.
    """

    def __init__(self, size: int, ttl: float, now: Callable[[], float]) -> None:
        self.capacity = size // ENTRY_BYTES if ttl > 0 else 0
        self.ttl = ttl
        self._now = now
        self._key = os.urandom(32)
        self._entries: OrderedDict[tuple[str, bytes], float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def _digest(self, password: bytes, scheme: str, stored: str) -> bytes:
        mac = hmac.new(self._key, digestmod=hashlib.sha256)
        for part in (scheme.encode("utf-8"), stored.encode("utf-8"), password):
            mac.update(len(part).to_bytes(4, "big"))
            mac.update(part)
        return mac.digest()

    def verified(self, user: str, password: bytes, scheme: str, stored: str) -> bool:
        """True if this password verified against this stored hash less than C{ttl} ago."""
        if not self.capacity:
            return False
        key = (user, self._digest(password, scheme, stored))
        expires = self._entries.get(key)
        if expires is None:
            return False
        if expires <= self._now():
            del self._entries[key]
            return False
        self._entries.move_to_end(key)
        return True

    def remember(self, user: str, password: bytes, scheme: str, stored: str) -> None:
        """Record a successful verification; the least recently used entry goes when full."""
        if not self.capacity:
            return
        key = (user, self._digest(password, scheme, stored))
        self._entries[key] = self._now() + self.ttl
        self._entries.move_to_end(key)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)
