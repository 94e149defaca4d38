"""
Password hashing and verification for Dovecot's schemes.

C{ARGON2ID} (argon2-cffi, the default for new passwords), C{ARGON2I}
(verify only), C{BLF-CRYPT} (bcrypt; Dovecot writes C{$2y$}),
C{SHA512-CRYPT} and C{SHA256-CRYPT} (Ulrich Drepper's SHA-crypt, in pure
Python), C{PLAIN}, and C{CRYPT} mapped by the hash's prefix.

Everything here is blocking CPU work: callers run it in a thread pool.
Comparisons are constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Callable

import bcrypt
from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from argon2.low_level import verify_secret
from twisted.logger import Logger

from mailserver.tables.passwd import crypt_scheme

log = Logger()

DEFAULT_SCHEME = "ARGON2ID"
#: Schemes L{hash_password} can write.
HASH_SCHEMES = ("ARGON2ID", "BLF-CRYPT", "SHA512-CRYPT", "SHA256-CRYPT", "PLAIN")
#: bcrypt reads only this many bytes of a password.
BCRYPT_MAX_PASSWORD = 72


@dataclass(frozen=True)
class HashParameters:
    """
    Cost parameters for new hashes (verification reads them from the hash).

    Argon2id defaults follow RFC 9106's low-memory profile with one lane, so
    that Dovecot (libsodium, which supports only p=1) can verify them too.
    """

    argon2_time_cost: int = 3
    argon2_memory_cost: int = 65536  # KiB
    argon2_parallelism: int = 1
    bcrypt_rounds: int = 12
    sha_crypt_rounds: int = 5000  # Drepper's default; written without "rounds="


DEFAULT_PARAMETERS = HashParameters()


# --- SHA-crypt (https://www.akkadia.org/drepper/SHA-crypt.txt) --------------

_CRYPT_ALPHABET = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_ROUNDS_DEFAULT = 5000
_ROUNDS_MIN = 1000
_ROUNDS_MAX = 999_999_999
_SALT_MAX = 16


def _byte_order(size: int) -> tuple[tuple[int, ...], ...]:
    """The specification's byte permutation before base-64 encoding."""
    if size == 64:
        rows = []
        for i in range(21):
            a, b, c = i, i + 21, i + 42
            rows.append(((a, b, c), (b, c, a), (c, a, b))[i % 3])
        return tuple(rows) + ((63,),)
    rows = []
    for i in range(10):
        a, b, c = i, i + 10, i + 20
        rows.append(((a, b, c), (c, a, b), (b, c, a))[i % 3])
    return tuple(rows) + ((31, 30),)


_SHA_CRYPT = {
    b"$5$": (hashlib.sha256, _byte_order(32)),
    b"$6$": (hashlib.sha512, _byte_order(64)),
}


def _encode(digest: bytes, order: tuple[tuple[int, ...], ...]) -> bytes:
    out = bytearray()
    for group in order:
        value = 0
        for index in group:
            value = (value << 8) | digest[index]
        for _ in range(len(group) + 1):
            out.append(_CRYPT_ALPHABET[value & 0x3F])
            value >>= 6
    return bytes(out)


def _sha_crypt_digest(new: Callable, password: bytes, salt: bytes, rounds: int) -> bytes:
    size = new().digest_size
    length = len(password)
    b = new(password + salt + password).digest()
    a = new(password + salt)
    remaining = length
    while remaining > size:
        a.update(b)
        remaining -= size
    a.update(b[:remaining])
    bits = length
    while bits > 0:
        a.update(b if bits & 1 else password)
        bits >>= 1
    c = a.digest()
    p_bytes = (new(password * length).digest() * (length // size + 1))[:length]
    s_bytes = new(salt * (16 + c[0])).digest()[: len(salt)]
    for r in range(rounds):
        ctx = new(p_bytes if r & 1 else c)
        if r % 3:
            ctx.update(s_bytes)
        if r % 7:
            ctx.update(p_bytes)
        ctx.update(c if r & 1 else p_bytes)
        c = ctx.digest()
    return c


def sha_crypt(password: bytes, setting: bytes) -> bytes:
    """
    crypt(3) for C{$5$} (SHA-256) and C{$6$} (SHA-512) settings such as
    C{$6$rounds=10000$salt} or a whole stored hash (its salt and rounds are
    reused).  Rounds are clamped to 1000..999999999 as the specification says.

    @raise ValueError: not a C{$5$} or C{$6$} setting.
    """
    prefix = setting[:3]
    if prefix not in _SHA_CRYPT:
        raise ValueError("not a SHA-crypt setting")
    new, order = _SHA_CRYPT[prefix]
    rest = setting[3:]
    rounds, custom = _ROUNDS_DEFAULT, False
    if rest.startswith(b"rounds="):
        number, dollar, after = rest[7:].partition(b"$")
        if dollar and number.isdigit():
            rounds = max(_ROUNDS_MIN, min(int(number), _ROUNDS_MAX))
            custom, rest = True, after
    salt = rest.split(b"$", 1)[0][:_SALT_MAX]
    digest = _sha_crypt_digest(new, password, salt, rounds)
    head = prefix + (b"rounds=%d$" % rounds if custom else b"")
    return head + salt + b"$" + _encode(digest, order)


def _new_sha_crypt(prefix: bytes, password: bytes, rounds: int) -> str:
    salt = bytes(secrets.choice(_CRYPT_ALPHABET) for _ in range(_SALT_MAX))
    setting = prefix + (b"" if rounds == _ROUNDS_DEFAULT else b"rounds=%d$" % rounds) + salt
    return sha_crypt(password, setting).decode("ascii")


def _verify_sha_crypt(prefix: bytes, stored: str, password: bytes) -> bool:
    stored_bytes = stored.encode("utf-8")
    if not stored_bytes.startswith(prefix) or stored_bytes.count(b"$") < 3:
        return False
    computed = sha_crypt(password, stored_bytes)
    return hmac.compare_digest(computed.rsplit(b"$", 1)[1], stored_bytes.rsplit(b"$", 1)[1])


# --- the other schemes ------------------------------------------------------


def _verify_argon2(prefix: str, kind: Type, stored: str, password: bytes) -> bool:
    if not stored.startswith(prefix) or not stored.isascii():
        return False
    try:
        return verify_secret(stored.encode("ascii"), password, kind)
    except VerifyMismatchError:
        return False
    except (VerificationError, InvalidHashError) as error:
        log.error("unusable {prefix} hash: {error}", prefix=prefix, error=str(error))
        return False


def _verify_bcrypt(stored: str, password: bytes) -> bool:
    if crypt_scheme(stored) != "BLF-CRYPT" or not stored.isascii():
        return False
    try:
        # crypt_blowfish (Dovecot) reads only the first 72 bytes; bcrypt>=5 refuses more.
        return bcrypt.checkpw(password[:BCRYPT_MAX_PASSWORD], stored.encode("ascii"))
    except ValueError as error:
        log.error("unusable BLF-CRYPT hash: {error}", error=str(error))
        return False


def _verify_plain(stored: str, password: bytes) -> bool:
    return hmac.compare_digest(stored.encode("utf-8"), password)


_VERIFIERS: dict[str, Callable[[str, bytes], bool]] = {
    "ARGON2ID": lambda s, p: _verify_argon2("$argon2id$", Type.ID, s, p),
    "ARGON2I": lambda s, p: _verify_argon2("$argon2i$", Type.I, s, p),
    "BLF-CRYPT": _verify_bcrypt,
    "SHA512-CRYPT": lambda s, p: _verify_sha_crypt(b"$6$", s, p),
    "SHA256-CRYPT": lambda s, p: _verify_sha_crypt(b"$5$", s, p),
    "PLAIN": _verify_plain,
}


def verify(scheme: str, stored: str, password: bytes) -> bool:
    """
    Does C{password} match C{stored} (the hash text after C{{SCHEME}})?

    An unknown scheme, or a hash that does not fit its scheme, is False and
    logged.  Blocking: run it in a thread.
    """
    scheme = scheme.upper()
    if scheme == "CRYPT":
        scheme = crypt_scheme(stored) or scheme
    elif scheme in ("CLEAR", "CLEARTEXT"):
        scheme = "PLAIN"
    verifier = _VERIFIERS.get(scheme)
    if verifier is None:
        log.error("cannot verify password scheme {{{scheme}}}", scheme=scheme)
        return False
    return verifier(stored, password)


def hash_password(scheme: str, password: bytes, parameters: HashParameters | None = None) -> str:
    """
    Hash a new password; return the passwd-file field C{{SCHEME}hash}.

    @param parameters: cost parameters; L{DEFAULT_PARAMETERS} when None.
    @raise ValueError: an unknown scheme, a password C{BLF-CRYPT} would
        truncate, or a C{PLAIN} password a passwd-file cannot hold.
    """
    scheme = scheme.upper()
    p = DEFAULT_PARAMETERS if parameters is None else parameters
    if scheme == "ARGON2ID":
        hasher = PasswordHasher(
            time_cost=p.argon2_time_cost,
            memory_cost=p.argon2_memory_cost,
            parallelism=p.argon2_parallelism,
            hash_len=32,
            salt_len=16,
            type=Type.ID,
        )
        hashed = hasher.hash(password)
    elif scheme == "BLF-CRYPT":
        if len(password) > BCRYPT_MAX_PASSWORD:
            raise ValueError(f"BLF-CRYPT reads only the first {BCRYPT_MAX_PASSWORD} bytes of a password")
        raw = bcrypt.hashpw(password, bcrypt.gensalt(p.bcrypt_rounds, prefix=b"2b"))
        hashed = "$2y$" + raw.decode("ascii")[4:]
    elif scheme == "SHA512-CRYPT":
        hashed = _new_sha_crypt(b"$6$", password, p.sha_crypt_rounds)
    elif scheme == "SHA256-CRYPT":
        hashed = _new_sha_crypt(b"$5$", password, p.sha_crypt_rounds)
    elif scheme == "PLAIN":
        try:
            hashed = password.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError("a PLAIN password must be UTF-8") from None
        if any(c in hashed for c in ":\r\n"):
            raise ValueError("a PLAIN password cannot contain a colon or a line break")
    else:
        raise ValueError(f"cannot hash with scheme {scheme!r}; use one of {', '.join(HASH_SCHEMES)}")
    return "{%s}%s" % (scheme, hashed)
