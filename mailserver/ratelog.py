"""
Warnings rate-limited per key (a client address, a protocol and address):
what floods produce must not flood the log.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Hashable

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger


class RateLimitedLog:
    """
    One warning per key per C{interval} at most; the lines held back for a
    key are counted, and the count is logged with that key's next line.
    Remembers at most C{max_keys} keys.
    """

    def __init__(
        self, clock: IReactorTime, interval: float = 60.0, max_keys: int = 4096, namespace: str = "mailserver"
    ) -> None:
        self.log = Logger(namespace=namespace)
        self._clock = clock
        self.interval = interval
        self._max_keys = max_keys
        self._last: dict[Hashable, float] = {}
        self._suppressed: Counter[Hashable] = Counter()
        self.overflow = 0  # lines dropped because max_keys keys were all recent

    def warn(self, key: Hashable, format: str, **fields: Any) -> bool:
        """Log C{format} unless C{key} was logged within the interval; whether it was logged."""
        now = self._clock.seconds()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._suppressed[key] += 1
            return False
        if last is None and len(self._last) >= self._max_keys:
            self._last = {k: t for k, t in self._last.items() if now - t < self.interval}
            self._suppressed = Counter({k: n for k, n in self._suppressed.items() if k in self._last})
            if len(self._last) >= self._max_keys:
                self.overflow += 1
                return False
        self._last[key] = now
        fields["suppressed"] = self._suppressed.pop(key, 0) + self.overflow
        self.overflow = 0
        if fields["suppressed"]:
            format += " ({suppressed} similar lines suppressed)"
        self.log.warn(format, **fields)
        return True
