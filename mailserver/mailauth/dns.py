"""
Asynchronous DNS look-ups for mail authentication, over an injected
twisted.names resolver (C{IResolver}): never a blocking resolver.

Each look-up returns the answers of the asked type (an empty list when the
name does not exist or has no such records: "none" for SPF/DKIM/DMARC),
or raises L{DNSTempError} (time-out, SERVFAIL, refused, any other failure:
"temperror").  NXDOMAIN and an empty answer are both "nothing there" for
SPF (void look-ups), DKIM and DMARC, so they are not told apart.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Sequence

from twisted.internet import defer
from twisted.names import dns, error

#: Seconds to wait for each try (twisted.names retries with the next value).
DEFAULT_TIMEOUT: tuple[int, ...] = (2, 4)


class DNSTempError(Exception):
    """The look-up failed in a way that may pass later (temperror)."""


class DNSLookup:
    """TXT, A, AAAA, MX and PTR look-ups returning plain Python values."""

    def __init__(self, resolver: Any, timeout: Sequence[int] = DEFAULT_TIMEOUT) -> None:
        self.resolver = resolver
        self.timeout = tuple(timeout)

    async def _query(self, method: str, name: str, rtype: int) -> list[Any]:
        name = name.rstrip(".").lower()
        if not name or len(name) > 253 or any(not 0 < len(label) < 64 for label in name.split(".")):
            # An impossible name does not exist; no query goes out.
            return []
        try:
            answers, _authority, _additional = await getattr(self.resolver, method)(name, self.timeout)
        except error.DNSNameError:
            return []
        except (error.DomainError, defer.TimeoutError, error.DNSQueryTimeoutError) as failure:
            raise DNSTempError(f"{name}: {type(failure).__name__}") from None
        except Exception as failure:  # a broken resolver answer is a temporary error, not a traceback
            raise DNSTempError(f"{name}: {failure!r}") from None
        return [answer.payload for answer in answers if answer.type == rtype]

    async def txt(self, name: str) -> list[str]:
        """Each TXT record of C{name}, its character-strings joined (RFC 7208 3.3)."""
        records = await self._query("lookupText", name, dns.TXT)
        return [b"".join(record.data).decode("utf-8", "replace") for record in records]

    async def txt_bytes(self, name: str) -> list[bytes]:
        """Each TXT record of C{name} as bytes (DKIM keys)."""
        records = await self._query("lookupText", name, dns.TXT)
        return [b"".join(record.data) for record in records]

    async def a(self, name: str) -> list[str]:
        return [record.dottedQuad() for record in await self._query("lookupAddress", name, dns.A)]

    async def aaaa(self, name: str) -> list[str]:
        return [
            str(ipaddress.IPv6Address(record.address))
            for record in await self._query("lookupIPV6Address", name, dns.AAAA)
        ]

    async def addresses(self, name: str, version: int) -> list[str]:
        """A (C{version} 4) or AAAA (6) records."""
        return await (self.a(name) if version == 4 else self.aaaa(name))

    async def mx(self, name: str) -> list[tuple[int, str]]:
        records = await self._query("lookupMailExchange", name, dns.MX)
        return sorted((record.preference, record.name.name.decode("ascii", "replace")) for record in records)

    async def ptr(self, ip: str) -> list[str]:
        reverse = ipaddress.ip_address(ip).reverse_pointer
        records = await self._query("lookupPointer", reverse, dns.PTR)
        return [record.name.name.decode("ascii", "replace") for record in records]
