"""
A fast path for the common DKIM signature (RFC 6376), beside dkimpy.

dkimpy canonicalises and hashes the body once per signature and does RSA
in pure Python.  Here, for C{rsa-sha256} / C{ed25519-sha256} signatures
without C{l=}, the body hash (and the canonical header fields) are computed once per canonicalisation for all
of a message's signatures, and the signature is checked with
C{cryptography} (RSA) or libsodium (Ed25519, as dkimpy) against public
keys parsed once per DNS record text.
Headers are selected and hashed as dkimpy's C{select_headers} and
C{hash_headers} do (the same bytes, tested against them), from a message
parsed as its C{rfc822_parse} does but out of the header fields already
split for the other checks.  Anything else gives C{None}: the caller then
asks dkimpy, which also gives the reason of any failure.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from functools import lru_cache
from dataclasses import dataclass
from typing import Any, Sequence

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.serialization import load_der_public_key
from dkim import HASH_ALGORITHMS, DKIMException, validate_signature_fields
from dkim.canonicalization import (
    CanonicalizationPolicy,
    InvalidCanonicalizationPolicyError,
    Relaxed,
    correct_empty_body,
    strip_trailing_lines,
)
from dkim.util import DuplicateTag, InvalidTagSpec, InvalidTagValueList
from nacl.bindings import crypto_sign_open
from nacl.exceptions import CryptoError

#: RSA keys shorter than this are refused (dkimpy's C{minkey}, RFC 8301).
MIN_RSA_BITS = 1024
_ALGORITHMS = {b"rsa-sha256": b"rsa", b"ed25519-sha256": b"ed25519"}
_WSP = re.compile(rb"\s+")
#: A run of WSP that relaxed canonicalisation changes: a tab, or two WSP or more.  (dkimpy's
#: C{[\t ]+} also rewrites every single space to itself: the same bytes, far more work.)
_WSP_RUN = re.compile(rb"[ \t]{2,}|\t")


def relaxed_body(body: bytes) -> bytes:
    """
    RFC 6376 3.4.4 on dkimpy's parsed body (CRLF line ends): the same bytes
    as dkimpy's C{Relaxed.canonicalize_body}, about ten times faster.
    """
    tab = b"\t" in body
    if tab or b" \r\n" in body:
        lines = body.split(b"\r\n")
        last = lines.pop()  # not followed by CRLF: dkimpy does not strip it, only compresses it
        text = b"\r\n".join([line.rstrip(b" \t") for line in lines] + [last])
    else:  # no line ends with WSP: nothing to strip (a scan instead of a Python loop per line)
        text = body
    if tab or b"  " in text:
        text = _WSP_RUN.sub(b" ", text)
    return correct_empty_body(strip_trailing_lines(text))


#: Where dkimpy's C{RE_BTAG} matches, C{[;\\s]b\\s*=} (its FWS matches any run of whitespace), less the first
#: character: searched from the "b" (a literal, found far faster), the character before it checked apart...
_B_TAG = re.compile(rb"b\s*=")
#: ...which is one of C{[;\\s]} (bytes: ASCII whitespace).
_BEFORE_B = frozenset(b"; \t\n\r\x0b\x0c")
#: ...and the run of base64 and whitespace it then takes (up to its last base64 character).
_B_RUN = re.compile(rb"[\sa-zA-Z0-9+/=]*")


def without_b_value(value: bytes) -> bytes:
    """
    dkimpy's C{RE_BTAG.sub(b"\\1", value)} (the signature header with its
    C{b=} value removed), the same bytes without a regular-expression
    group tried at every character of the value.
    """
    pieces = []
    position = 0
    search = position + 1  # where the "b" may be: after a character of [;\s] at or past position
    for _ in range(len(value) + 1):  # each pass moves past at least one "b": bounded by the length
        tag = _B_TAG.search(value, search)
        if tag is None:
            break
        if value[tag.start() - 1] not in _BEFORE_B:
            search = tag.start() + 1
            continue
        start = tag.end()
        end = start + len(value[start : _B_RUN.match(value, start).end()].rstrip())
        if value[end:] in (b"\n", b"\r\n"):
            end = len(value)
        pieces.append(value[position:start])
        position = end
        search = end + 1
    pieces.append(value[position:])
    return b"".join(pieces)


def parse_tags(tag_list: bytes) -> dict[bytes, bytes]:
    """
    dkimpy's C{parse_tag_value} (RFC 6376 3.2), the same tags and the same
    exceptions, without a regular expression per tag.
    """
    tags: dict[bytes, bytes] = {}
    specs = tag_list.strip().split(b";")
    if not specs[-1]:  # trailing semicolons are valid
        specs.pop()
    for spec in specs:
        key, sep, value = spec.partition(b"=")
        key = key.strip()
        if not sep or not key[:1].isalpha():  # a tag name starts with an ASCII letter
            raise InvalidTagSpec(spec)
        if key in tags:
            raise DuplicateTag(key)
        tags[key] = value.strip()
    return tags


def relaxed_headers(headers: Sequence[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """
    RFC 6376 3.4.2 on dkimpy's parsed headers: the same pairs as dkimpy's
    C{Relaxed.canonicalize_headers} (unfold, compress WSP, strip), without
    two regular-expression substitutions per field.
    """
    canonical = []
    for name, value in headers:
        value = value.replace(b"\r\n", b"").replace(b"\n", b"")  # dkimpy's unfold: every \r?\n
        if b"\t" in value or b"  " in value:
            value = _WSP_RUN.sub(b" ", value)
        canonical.append((name.lower().rstrip(), value.strip() + b"\r\n"))
    return canonical


#: dkimpy's pattern for a b= value (matched in full here: no more than its C{re.match} with C{$} accepts).
_BASE64ISH = re.compile(rb"[\s0-9A-Za-z+/]+[\s=]*")
_D_SPECIAL = re.compile(rb"[()<>\[\]:;@\\,]")
_DIGITS = re.compile(rb"[0-9]{1,20}")
_MANDATORY = (b"v", b"a", b"b", b"bh", b"d", b"h", b"s")
#: dkimpy's leeway for t= in the future and x= in the past.
_SLOP = 36000


def plainly_valid(sig: dict[bytes, bytes]) -> bool:
    """
    True when dkimpy's C{validate_signature_fields} accepts C{sig} for
    certain (the common signature, without its regular expressions
    compiled per call); False when it may not (then it decides).
    """
    if any(name not in sig for name in _MANDATORY) or sig[b"v"] != b"1" or sig[b"a"] not in HASH_ALGORITHMS:
        return False
    b, bh, d = sig[b"b"], sig[b"bh"], sig[b"d"]
    if _BASE64ISH.fullmatch(b) is None or len(b"".join(b.split())) % 4 or len(b"".join(bh.split())) % 4:
        return False
    if b"cv" in sig or b"l" in sig or sig.get(b"q", b"dns/txt") != b"dns/txt":
        return False
    if not d.isascii() or _D_SPECIAL.search(d) is not None:
        return False
    i = sig.get(b"i")
    if i is not None and not (len(i) > len(d) and i.lower().endswith(d.lower()) and i[-len(d) - 1] in b"@."):
        return False
    t, x = sig.get(b"t"), sig.get(b"x")
    if t is None and x is None:
        return True
    now = int(time.time())
    if t is not None and (_DIGITS.fullmatch(t) is None or int(t) > now + _SLOP):
        return False
    if x is not None:
        if _DIGITS.fullmatch(x) is None or int(x) < now - _SLOP:
            return False
        if t is not None and int(t) and int(x) < int(t):
            return False
    return True


def validate(sig: dict[bytes, bytes]) -> None:
    """dkimpy's C{validate_signature_fields} (raises what it raises), the common case checked quickly."""
    if not plainly_valid(sig):
        validate_signature_fields(sig)


_H_SEPARATOR = re.compile(rb"\s*:\s*")


@lru_cache(maxsize=256)
def signed_names(h: bytes) -> tuple[bytes, ...]:
    """
    The lower-cased names of an C{h=} value, and C{from} once more when
    it is there (as dkimpy: an extra From is hashed too, so it breaks the
    signature).  Kept per value: a signer's h= is the same for its messages.
    """
    include = [name.lower() for name in _H_SEPARATOR.split(h)]
    if b"from" in include:
        include.append(b"from")
    return tuple(include)


@dataclass(frozen=True)
class ParsedMessage:
    """C{headers} and C{body} as C{dkim.DKIM} parses them (CRLF line ends), for L{FastVerifier}."""

    headers: list[tuple[bytes, bytes]]
    body: bytes


def crlf(data: bytes) -> bytes:
    """Every LF, CRLF or not, as CRLF (dkimpy splits on \\r?\\n and joins with CRLF)."""
    if data.count(b"\n") == data.count(b"\r\n"):  # every LF already after a CR: two scans, no copies
        return data
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def parse_like_dkimpy(message: bytes, fields: Sequence[tuple[str, bytes]]) -> ParsedMessage | None:
    """
    C{message} as dkimpy's C{rfc822_parse} would give it, built from its
    header C{fields} already split (L{mailserver.mailauth.headers.split_headers}),
    so the message is not parsed again.  None for anything but the plain
    case -- every field C{NAME:} with no space before the colon, the block
    ended by an empty line -- which dkimpy then parses itself.
    """
    headers = []
    end = 0
    for name, raw in fields:
        size = len(name)
        if raw[size : size + 1] != b":":
            return None
        headers.append((raw[:size], raw[size + 1 :]))
        end += len(raw)
    if message.count(b"\n", 0, end) != message.count(b"\r\n", 0, end):  # else every value is CRLF already
        headers = [(name, crlf(value)) for name, value in headers]
    if message.startswith(b"\r\n", end):
        end += 2
    elif message.startswith(b"\n", end):
        end += 1
    else:
        return None
    return ParsedMessage(headers, crlf(message[end:]))


_PKCS1 = padding.PKCS1v15()
_PREHASHED = Prehashed(SHA256())


@lru_cache(maxsize=64)
def _policy(c: bytes) -> CanonicalizationPolicy:
    """dkimpy's policy for a C{c=} value (raises as it does), kept per value."""
    return CanonicalizationPolicy.from_c_value(c)


@lru_cache(maxsize=256)
def public_key(record: bytes) -> tuple[bytes, Any] | None:
    """
    C{(k, key)} for a plain DKIM1 key record, else C{None} (dkimpy judges
    it).  An Ed25519 key is its 32 bytes, checked by C{cryptography} and
    used by libsodium (as dkimpy does, and twice as fast as OpenSSL here).
    """
    try:
        tags = parse_tags(record)
    except (InvalidTagValueList, ValueError):
        return None
    if tags.get(b"v", b"DKIM1") != b"DKIM1" or tags.get(b"s", b"*") not in (b"*", b"email"):
        return None
    kind = tags.get(b"k", b"rsa")
    try:
        raw = base64.b64decode(_WSP.sub(b"", tags[b"p"]), validate=True)
        if kind == b"ed25519":
            return kind, Ed25519PublicKey.from_public_bytes(raw).public_bytes_raw()
        key = load_der_public_key(raw)
    except (KeyError, ValueError, TypeError):
        return None
    if kind != b"rsa" or not isinstance(key, RSAPublicKey) or key.key_size < MIN_RSA_BITS:
        return None
    return kind, key


class FastVerifier:
    """
    Verify the signatures of one message parsed by dkimpy (C{dkim.DKIM})
    or by L{parse_like_dkimpy}, sharing body hashes.
    """

    def __init__(self, parsed: Any) -> None:
        self.parsed = parsed
        self.body_hashes: dict[bytes, bytes] = {}
        self.positions: dict[bool, dict[bytes, list[int]]] = {}
        self.selected: dict[tuple[bytes, tuple[bytes, ...]], bytes] = {}

    def body_hash(self, policy: CanonicalizationPolicy) -> bytes:
        name = policy.body_algorithm.name
        if name not in self.body_hashes:
            body = self.parsed.body
            canonical = relaxed_body(body) if name == Relaxed.name else policy.canonicalize_body(body)
            self.body_hashes[name] = hashlib.sha256(canonical).digest()
        return self.body_hashes[name]

    @staticmethod
    def _canonical(policy: CanonicalizationPolicy, pairs: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        return relaxed_headers(pairs) if policy.header_algorithm.name == Relaxed.name else policy.canonicalize_headers(pairs)

    def _select(self, policy: CanonicalizationPolicy, include: Sequence[bytes]) -> bytes:
        """
        The canonical fields named by C{include}, each name taking the next
        instance from the bottom up; only those fields are canonicalised
        (each on its own in either canonicalisation).
        """
        headers = self.parsed.headers
        relaxed = policy.header_algorithm.name == Relaxed.name
        positions = self.positions.get(relaxed)
        if positions is None:  # by the canonical name, lower-cased (simple leaves names as they are)
            positions = self.positions[relaxed] = {}
            for index, (field, _value) in enumerate(headers):
                positions.setdefault(field.lower().rstrip() if relaxed else field.lower(), []).append(index)
        used: dict[bytes, int] = {}
        picked = []
        for wanted in include:
            found = positions.get(wanted)
            if found is None:  # over-signed names: most are absent
                continue
            taken = used.get(wanted, 0)
            used[wanted] = taken + 1
            if taken < len(found):
                picked.append(headers[found[-1 - taken]])
        selected = []
        for field, value in self._canonical(policy, picked):
            selected += (field, b":", value)
        return b"".join(selected)

    def hash_headers(self, hasher: Any, policy: CanonicalizationPolicy, include: Sequence[bytes],
                     sig_header: tuple[bytes, bytes]) -> None:
        """
        dkimpy's C{hash_headers}: the fields named by C{h=} (each name
        taking the next instance from the bottom up, as its
        C{select_headers}), then the signature field without its C{b=}
        value and final line end.
        """
        name = policy.header_algorithm.name
        key = (name, tuple(include))
        selected = self.selected.get(key)
        if selected is None:  # signatures with the same h= (ours: RSA and Ed25519) hash the same fields
            selected = self.selected[key] = self._select(policy, include)
        hasher.update(selected)
        unsigned = [(sig_header[0], without_b_value(sig_header[1]))]
        for field, value in self._canonical(policy, unsigned):
            hasher.update(field + b":" + value.rstrip())

    def verify(self, sig_header: tuple[bytes, bytes], record: bytes,
               sig: dict[bytes, bytes] | None = None) -> bool | None:
        """
        C{True} when the signature verifies; C{None} when dkimpy must
        decide.  C{sig}: the tags of C{sig_header}, when already parsed.
        """
        try:
            if sig is None:
                sig = parse_tags(sig_header[1])
            validate(sig)
        except (DKIMException, InvalidTagValueList, ValueError):
            return None
        kind = _ALGORITHMS.get(sig.get(b"a", b""))
        found = public_key(record)
        if kind is None or found is None or found[0] != kind or b"l" in sig:
            return None
        if sig.get(b"q", b"dns/txt") != b"dns/txt":
            return None
        try:
            policy = _policy(sig.get(b"c", b"simple/simple"))
            if base64.b64decode(b"".join(sig[b"bh"].split())) != self.body_hash(policy):
                return None
            signature = base64.b64decode(b"".join(sig[b"b"].split()))
        except (InvalidCanonicalizationPolicyError, ValueError, TypeError):
            return None
        include = signed_names(sig[b"h"])
        hasher = hashlib.sha256()
        self.hash_headers(hasher, policy, include, sig_header)
        key = found[1]
        try:
            if kind == b"rsa":
                key.verify(signature, hasher.digest(), _PKCS1, _PREHASHED)
            elif len(signature) == 64:  # else libsodium would read the rest of b= as signed bytes
                crypto_sign_open(signature + hasher.digest(), key)
            else:
                return None  # not an Ed25519 signature: dkimpy's nacl refuses it
        except (InvalidSignature, CryptoError, ValueError, TypeError):
            return None
        return True
