"""
The DKIM key store: C{KEY_DIRECTORY/DOMAIN/SELECTOR.rsa.key} (PEM, PKCS#1,
RSA-2048) and C{SELECTOR.ed25519.key} (base64 of the 32-byte seed, as dkimpy
and OpenDKIM read it), each 0600 and written atomically (tmp, fsync, rename).
The RSA key is published at C{SELECTOR._domainkey.DOMAIN}, the Ed25519 key
at C{SELECTOR-ed25519._domainkey.DOMAIN}.

Blocking file I/O: the daemon calls it from a thread, the CLI directly.
"""

from __future__ import annotations

import base64
import os
import re
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from mailserver.durable import replace_atomically

ALGORITHMS = ("rsa", "ed25519")
RSA_BITS = 2048
FILE_MODE = 0o600
DIR_MODE = 0o700

_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")


class KeyStoreError(ValueError):
    """A bad domain or selector name, or an unreadable key file."""


def check_name(name: str, what: str) -> str:
    """A lower-cased DNS name usable as a path component, or L{KeyStoreError}."""
    name = name.strip().rstrip(".").lower()
    try:
        name = name.encode("idna").decode("ascii")
    except UnicodeError:
        raise KeyStoreError(f"bad {what}: {name!r}") from None
    if not name or len(name) > 253 or not all(_LABEL.match(label) for label in name.split(".")):
        raise KeyStoreError(f"bad {what}: {name!r}")
    return name


@dataclass(frozen=True)
class SigningKey:
    """One private key and what is published for it."""

    domain: str
    selector: str
    algorithm: str  # "rsa" or "ed25519"
    private: bytes  # in the form dkimpy's sign() takes

    @property
    def public_base64(self) -> str:
        """The C{p=} value of the DNS record."""
        if self.algorithm == "rsa":
            key = serialization.load_pem_private_key(self.private, password=None)
            der = key.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        else:
            seed = base64.b64decode(self.private)
            der = ed25519.Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            )
        return base64.b64encode(der).decode("ascii")

    @property
    def dns_selector(self) -> str:
        """
        The C{s=} published and signed with: the selector for RSA,
        C{SELECTOR-ed25519} for Ed25519 (one DNS name holds one key, and
        both are used side by side).
        """
        return self.selector if self.algorithm == "rsa" else f"{self.selector}-{self.algorithm}"

    @property
    def dns_name(self) -> str:
        return f"{self.dns_selector}._domainkey.{self.domain}"

    @property
    def txt_value(self) -> str:
        return f"v=DKIM1; k={self.algorithm}; p={self.public_base64}"

    def zone_line(self) -> str:
        """The record to publish, in zone-file form (long values split into 255-byte strings)."""
        return txt_zone_line(self.dns_name, self.txt_value)


def txt_zone_line(name: str, value: str) -> str:
    """A TXT record in zone-file form, a value over 255 bytes split into several strings."""
    strings = " ".join(f'"{value[i:i + 255]}"' for i in range(0, len(value), 255))
    return f"{name}. IN TXT ( {strings} )" if len(value) > 255 else f"{name}. IN TXT {strings}"


def generate(domain: str, selector: str, algorithm: str) -> SigningKey:
    """A new key (RSA-2048 or Ed25519); nothing is written."""
    domain, selector = check_name(domain, "domain"), check_name(selector, "selector")
    if algorithm == "rsa":
        private = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )
    elif algorithm == "ed25519":
        seed = ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        private = base64.b64encode(seed) + b"\n"
    else:
        raise KeyStoreError(f"unknown key algorithm {algorithm!r}")
    return SigningKey(domain, selector, algorithm, private)


class KeyStore:
    """
    Keys under one directory, per domain and selector.  A key read and
    checked once is kept while its file's (mtime, size, inode) stay the
    same, so signing does not read and parse the PEM for every message; a
    replaced key file (C{mailserver dkim keygen --replace}) is read again.
    """

    def __init__(self, directory: str) -> None:
        self.directory = os.path.abspath(directory)
        # path -> ((mtime_ns, size, inode), key); one entry per key file at most.
        self._cache: dict[str, tuple[tuple[int, int, int], SigningKey]] = {}

    def path(self, domain: str, selector: str, algorithm: str) -> str:
        domain, selector = check_name(domain, "domain"), check_name(selector, "selector")
        return os.path.join(self.directory, domain, f"{selector}.{algorithm}.key")

    def save(self, key: SigningKey, replace: bool = False) -> str:
        """Write C{key} (0600) atomically; refuse to overwrite unless C{replace}.  Returns the path."""
        path = self.path(key.domain, key.selector, key.algorithm)
        directory = os.path.dirname(path)
        os.makedirs(directory, DIR_MODE, exist_ok=True)
        if not replace and os.path.exists(path):
            raise FileExistsError(f"{path} exists")
        replace_atomically(path, key.private, FILE_MODE)
        return path

    def load(self, domain: str, selector: str) -> list[SigningKey]:
        """The keys of C{domain}/C{selector} (RSA first, then Ed25519); empty when none."""
        keys = []
        for algorithm in ALGORITHMS:
            path = self.path(domain, selector, algorithm)
            try:
                key = self._read(path, domain, selector, algorithm)
            except FileNotFoundError:
                self._cache.pop(path, None)
                continue
            except OSError as error:
                self._cache.pop(path, None)
                raise KeyStoreError(f"{path}: {error.strerror}") from None
            keys.append(key)
        return keys

    def _read(self, path: str, domain: str, selector: str, algorithm: str) -> SigningKey:
        """The key in C{path}: from the cache while the file is unchanged, else read and checked."""
        with open(path, "rb") as handle:
            info = os.fstat(handle.fileno())
            stamp = (info.st_mtime_ns, info.st_size, info.st_ino)
            cached = self._cache.get(path)
            if cached is not None and cached[0] == stamp:
                return cached[1]
            private = handle.read()
        key = SigningKey(check_name(domain, "domain"), check_name(selector, "selector"), algorithm, private.strip() + b"\n")
        try:
            key.public_base64
        except (ValueError, TypeError) as error:
            self._cache.pop(path, None)
            raise KeyStoreError(f"{path}: not a {algorithm} private key ({error})") from None
        self._cache[path] = (stamp, key)
        return key

    def all_keys(self) -> list[SigningKey]:
        """Every key on disk, by domain, selector and algorithm."""
        found = []
        try:
            domains = sorted(os.listdir(self.directory))
        except FileNotFoundError:
            return []
        for domain in domains:
            try:
                names = sorted(os.listdir(os.path.join(self.directory, domain)))
            except NotADirectoryError:
                continue
            selectors = dict.fromkeys(
                name.rsplit(".", 2)[0] for name in names
                if name.endswith(".key") and not name.startswith(".") and name.count(".") >= 2
            )
            for selector in selectors:
                try:
                    found.extend(self.load(domain, selector))
                except KeyStoreError:
                    continue
        return found
