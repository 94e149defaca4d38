"""The DKIM verification fast path (L{mailserver.mailauth.dkim_fast}) agrees with dkimpy."""

from __future__ import annotations

import base64
import hashlib
import random
import re
import time
from typing import Any
from unittest import SkipTest

import dkim
from dkim.canonicalization import CanonicalizationPolicy, Relaxed
from twisted.trial.unittest import SynchronousTestCase

from mailserver.mailauth.dkim_fast import (
    FastVerifier,
    ParsedMessage,
    crlf,
    parse_like_dkimpy,
    parse_tags,
    plainly_valid,
    public_key,
    relaxed_body,
    relaxed_headers,
    signed_names,
    validate,
    without_b_value,
)
from mailserver.mailauth.dkim_sign import sign_with
from mailserver.mailauth.dkim_verify import _Answers, verify_blocking
from mailserver.mailauth.headers import split_headers
from tests.mailauth.support import MESSAGE, keys
from tests.mailauth.test_interop import corpus_messages, header_malformed_for_dkim

_KEYS: list[Any] = []


def signing_keys() -> tuple[Any, Any]:
    """One RSA-2048 and one Ed25519 key for the whole module (RSA generation is slow)."""
    if not _KEYS:
        _KEYS.extend(keys())
    return _KEYS[0], _KEYS[1]


def records() -> dict[str, bytes | None]:
    return {key.dns_name: key.txt_value.encode() for key in signing_keys()}


def tampered(message: bytes) -> list[bytes]:
    """The signed C{message} with its body, its Subject, or an extra From changed."""
    head, sep, body = message.partition(b"\r\n\r\n") if b"\r\n\r\n" in message else message.partition(b"\n\n")
    newline = b"\r\n" if sep == b"\r\n\r\n" else b"\n"
    return [
        head + sep + b"X" + body,
        head + sep + body + b"tampered" + newline,
        head + newline + b"Subject: changed" + sep + body,
        head + newline + b"From: mallory@example.net" + sep + body,
    ]


def outcomes(message: bytes) -> list[tuple[bool, bool]]:
    """Per signature: (the fast path passes it, dkimpy passes it)."""
    found = records()
    parsed = dkim.DKIM(message, minkey=1024)
    fast = FastVerifier(parsed)
    signatures = [item for item in parsed.headers if item[0].lower() == b"dkim-signature"]
    result = []
    for index, header in enumerate(signatures):
        tags = dkim.util.parse_tag_value(header[1])
        record = found.get(f"{tags[b's'].decode()}._domainkey.{tags[b'd'].decode()}") or b""
        try:
            slow = bool(dkim.DKIM(message, minkey=1024).verify(idx=index, dnsfunc=_Answers(found, set())))
        except dkim.DKIMException:
            slow = False
        result.append((fast.verify(header, record) is True, slow))
    return result


class RelaxedBodyTests(SynchronousTestCase):
    def test_relaxed_body_matches_dkimpy(self) -> None:
        cases = [b"", b"\r\n", b"\r\n\r\n", b"a \t b\t\r\n", b" \t\r\n\tx  y \r\n\r\n", b"end  \t",
                 b"a \r\r\n b", b"\t\t\r\n  \r\n", b"x" * 100 + b"   " + b"\r\n" * 5]
        rng = random.Random(6376)
        cases += [bytes(rng.choice(b" \t\r\nab") for _ in range(rng.randrange(40))) for _ in range(3000)]
        for raw in cases:
            _, body = dkim.rfc822_parse(b"A: b\r\n\r\n" + raw)
            self.assertEqual(relaxed_body(body), Relaxed.canonicalize_body(body), raw)

    def test_relaxed_body_without_trailing_wsp_matches_dkimpy(self) -> None:
        """
        Bodies where no line ends with WSP take the path that strips nothing.
        """
        rng = random.Random(6377)
        for _ in range(2000):
            raw = bytes(rng.choice(b" \t\r\nab") for _ in range(rng.randrange(60)))
            while b" \r\n" in raw or b"\t\r\n" in raw:
                raw = raw.replace(b" \r\n", b"\r\n").replace(b"\t\r\n", b"\r\n")
            _, body = dkim.rfc822_parse(b"A: b\r\n\r\n" + raw)
            self.assertEqual(relaxed_body(body), Relaxed.canonicalize_body(body), raw)

    def test_crlf_matches_replacements(self) -> None:
        """
        L{crlf}'s shortcut (data returned as is) gives the replacements' bytes.
        """
        rng = random.Random(6378)
        cases = [b"", b"\r\n", b"\n", b"\r", b"\r\r\n", b"a\r\nb\n", b"\n\r"]
        cases += [bytes(rng.choice(b"\r\nab") for _ in range(rng.randrange(30))) for _ in range(3000)]
        cases += [case.replace(b"\n", b"\r\n") for case in cases]
        for raw in cases:
            self.assertEqual(crlf(raw), raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"), raw)

    def test_relaxed_body_matches_dkimpy_on_corpus(self) -> None:
        for name, message in corpus_messages():
            if header_malformed_for_dkim(message):
                continue
            _, body = dkim.rfc822_parse(message)
            self.assertEqual(relaxed_body(body), Relaxed.canonicalize_body(body), name)


class FastPathTests(SynchronousTestCase):
    def test_fast_path_and_dkimpy_agree_on_corpus(self) -> None:
        rsa, ed = signing_keys()
        checked = 0
        for name, message in corpus_messages():
            if header_malformed_for_dkim(message):
                continue
            signed = sign_with(message, [rsa, ed]) + message
            # Ours are the first two; a fixture may carry an old signature of its own.
            self.assertEqual(outcomes(signed)[:2], [(True, True), (True, True)], name)
            bad = tampered(signed)[checked % 4]  # each kind of tampering on a quarter of the corpus (time)
            self.assertEqual(outcomes(bad)[:2], [(False, False), (False, False)], name)
            checked += 1
        self.assertGreater(checked, 50)

    def test_fast_path_and_dkimpy_agree_on_tampered_message(self) -> None:
        rsa, ed = signing_keys()
        signed = sign_with(MESSAGE, [rsa, ed]) + MESSAGE
        self.assertEqual(outcomes(signed), [(True, True), (True, True)])
        for bad in tampered(signed):
            self.assertEqual(outcomes(bad), [(False, False), (False, False)])
            self.assertEqual([r.result for r in verify_blocking(bad, _Answers(records(), set())).dkim], ["fail", "fail"])

    def test_regression_ed25519_signature_bytes_changed_fail_as_in_dkimpy(self) -> None:
        """Ed25519 goes through libsodium, as in dkimpy: any changed byte of b= fails both, the intact one passes."""
        _, ed = signing_keys()
        signed = sign_with(MESSAGE, [ed]) + MESSAGE
        field, _, rest = signed.partition(b"\r\n\r\n" if b"\r\n\r\n" in signed else b"\n\n")
        value = field.split(b" b=")[-1].split(b";")[0]
        signature = base64.b64decode(b"".join(value.split()))
        self.assertEqual(outcomes(signed), [(True, True)])
        for index in (0, 1, 31, 32, 33, 62, 63):  # R, then S (its top byte: a non-canonical S)
            for flip in (0x01, 0x80):
                changed = bytearray(signature)
                changed[index] ^= flip
                forged = signed.replace(value, base64.b64encode(bytes(changed)))
                self.assertEqual(outcomes(forged), [(False, False)], (index, flip))
        forged = signed.replace(value, base64.b64encode(signature[:32]))  # too short: dkimpy's nacl raises
        self.assertEqual([r.result for r in verify_blocking(forged, _Answers(records(), set())).dkim], ["permerror"])

    def test_regression_ed25519_signature_longer_than_64_bytes_left_to_dkimpy(self) -> None:
        """
        A b= of more than 64 bytes is not an Ed25519 signature (dkimpy's nacl
        refuses it): libsodium must not read its tail as part of the message,
        so a signature by the key over other bytes followed by the digest fails.
        """
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        from mailserver.mailauth import dkim_fast

        _, ed = signing_keys()
        signed = sign_with(MESSAGE, [ed]) + MESSAGE
        field = signed.partition(b"\r\n\r\n" if b"\r\n\r\n" in signed else b"\n\n")[0]
        value = re.search(rb" b=([^;]*?)\r?\n(?![ \t])", field).group(1)  # the b= value, folded
        opened: list[bytes] = []
        real = dkim_fast.crypto_sign_open
        self.patch(dkim_fast, "crypto_sign_open", lambda sm, pk: (opened.append(sm), real(sm, pk))[1])
        self.assertEqual(outcomes(signed), [(True, True)])
        digest = opened[-1][64:]  # what the 64-byte signature signs: the header hash
        extra = b"\x00" * 32
        private = Ed25519PrivateKey.from_private_bytes(base64.b64decode(ed.private))
        forged_signature = private.sign(extra + digest) + extra  # the key signed other bytes than the digest
        forged = signed.replace(value, base64.b64encode(forged_signature))
        verdicts = [r.result for r in verify_blocking(forged, _Answers(records(), set())).dkim]
        self.assertEqual(verdicts, ["permerror"])  # dkimpy's nacl: not 64 bytes

    def test_unusual_signature_goes_to_dkimpy(self) -> None:
        """An C{l=} signature is left to dkimpy, which passes it."""
        rsa, _ = signing_keys()
        header = dkim.sign(MESSAGE, b"mail", b"example.com", rsa.private, length=True)
        signed = header + MESSAGE
        self.assertEqual(outcomes(signed), [(False, True)])
        self.assertEqual([r.result for r in verify_blocking(signed, _Answers(records(), set())).dkim], ["pass"])

    def test_key_records_the_fast_path_refuses(self) -> None:
        rsa, ed = signing_keys()
        self.assertEqual(public_key(ed.txt_value.encode())[0], b"ed25519")  # type: ignore[index]
        self.assertEqual(public_key(rsa.txt_value.encode())[0], b"rsa")  # type: ignore[index]
        for record in (b"v=DKIM2; p=" + rsa.txt_value.encode().split(b"p=")[1], b"v=DKIM1; p=",
                       rsa.txt_value.encode() + b"; s=tlsrpt", b"v=DKIM1; k=rsa; p=!!!", b"garbage"):
            self.assertIsNone(public_key(record), record)


class SharedParseTests(SynchronousTestCase):
    """The fast path's own parse and hashing give dkimpy's bytes (they replace its regular expressions)."""

    def test_regression_parse_from_split_fields_matches_dkimpy(self) -> None:
        """A message's header fields, split once for every check, give dkimpy's C{rfc822_parse}."""
        rsa, ed = signing_keys()
        cases = [sign_with(MESSAGE, [rsa, ed]) + MESSAGE, b"A: b\n\n", b"A: b\r\n c\r\nB:\r\n\r\nx\ny\r\n"]
        rng = random.Random(5322)  # line ends mixed or not, within fields and between them
        for _ in range(500):
            lines = [rng.choice([b"A: x", b"B:y", b" folded", b"\tz", b"C: \r"]) + rng.choice([b"\r\n", b"\n"])
                     for _ in range(rng.randrange(1, 6))]
            cases.append(b"A: first" + rng.choice([b"\r\n", b"\n"]) + b"".join(lines) + rng.choice([b"\r\n", b"\n"]) + b"x")
        try:
            cases += [message for _, message in corpus_messages()]
        except SkipTest:
            pass
        for message in cases:
            fields, _ = split_headers(message)
            parsed = parse_like_dkimpy(message, fields)
            if parsed is None:
                continue
            headers, body = dkim.rfc822_parse(message)
            self.assertEqual((parsed.headers, parsed.body), ([tuple(h) for h in headers], body))
        # Anything but the plain shape is left to dkimpy.
        for odd in (b"A : b\n\nx", b"From x\nA: b\n\n", b"A: b\n"):
            self.assertIsNone(parse_like_dkimpy(odd, split_headers(odd)[0]), odd)

    def test_regression_tags_b_removal_and_relaxed_headers_match_dkimpy(self) -> None:
        rng = random.Random(8617)
        pieces = [b"b", b"=", b";", b" ", b"\t", b"\r\n", b"\n", b"\r", b"a", b"Z", b"+", b"/", b"h", b"\x0b",
                  b"b=", b"; b=", b"\xe9", b"1", b"_"]

        def outcome(function: Any, value: bytes) -> Any:
            try:
                return function(value)
            except Exception as error:  # the same exception type is part of the contract
                return type(error)

        for _ in range(20000):
            value = b"".join(rng.choice(pieces) for _ in range(rng.randrange(24)))
            self.assertEqual(without_b_value(value), dkim.RE_BTAG.sub(b"\\1", value), value)
            self.assertEqual(outcome(parse_tags, value), outcome(dkim.util.parse_tag_value, value), value)
            headers = [(b"Name ", value), (b"X", value + b" \t x")]
            self.assertEqual(relaxed_headers(headers), Relaxed.canonicalize_headers(headers), value)

    def test_regression_header_selection_and_hash_match_dkimpy(self) -> None:
        """Repeated, missing and over-signed names pick the same fields bottom-up as dkimpy's select_headers."""
        rng = random.Random(6376)
        names = [b"From", b"To", b"Subject", b"subject", b"X-A"]
        for _ in range(500):
            values = [b" v%d\r\n", b"\t a  %d \t\r\n  b\r\n", b"%d\r\n", b"  x\t%d  \r\n"]  # relaxed changes them
            headers = [(rng.choice(names), rng.choice(values) % n) for n in range(rng.randrange(8))]
            sig_header = (b"DKIM-Signature", b" v=1; a=rsa-sha256; b=abc\r\n def;\r\n")
            include = [rng.choice(names).lower() for _ in range(rng.randrange(8))]
            for c in (b"relaxed/relaxed", b"simple/simple"):
                policy = CanonicalizationPolicy.from_c_value(c)
                ours, theirs = hashlib.sha256(), hashlib.sha256()
                FastVerifier(ParsedMessage(headers, b"")).hash_headers(ours, policy, include, sig_header)
                dkim.hash_headers(theirs, policy, policy.canonicalize_headers(headers), include, sig_header, {})
                self.assertEqual(ours.digest(), theirs.digest(), (headers, include, c))


class SignatureFieldTests(SynchronousTestCase):
    """The fast path's own checks of a signature's tags agree with dkimpy's."""

    def test_plainly_valid_only_where_dkimpy_accepts(self) -> None:
        """
        L{plainly_valid} is never true where dkimpy's
        C{validate_signature_fields} raises, and is true for the common
        signature; L{validate} raises what dkimpy raises.
        """
        rsa, ed = signing_keys()
        now = int(time.time())
        fields, _ = split_headers(sign_with(MESSAGE, [rsa, ed]) + MESSAGE)
        base = [parse_tags(crlf(raw.split(b":", 1)[1])) for name, raw in fields if name == "DKIM-Signature"]
        self.assertEqual(len(base), 2)
        self.assertTrue(all(plainly_valid(tags) for tags in base))
        rng = random.Random(6376)
        choices: dict[bytes, list[bytes | None]] = {
            b"v": [b"1", b"2", b"", None],
            b"a": [b"rsa-sha256", b"ed25519-sha256", b"rsa-sha1", b"RSA-SHA256", b"x", None],
            b"b": [b"abcd", b"ab\r\n cd", b"abc", b"ab==", b"a=b=", b"ab cd\n", b"!abc", b"", b"abcd=\n", None],
            b"bh": [b"abcd", b"abc", b"ab =", b"", b"ab\tcd", None],
            b"d": [b"example.com", b"Example.COM", b"ex;ample", b"a@b", b"\xc3\xa9.com", b"", b"a,b", None],
            b"i": [b"@example.com", b"user@EXAMPLE.com", b"@sub.example.com", b"example.com", b"@xexample.com",
                   b"", b"@", b".example.com", None, None],
            b"h": [b"from:to", None],
            b"s": [b"sel", None],
            b"l": [b"12", b"x", None, None, None],
            b"q": [b"dns/txt", b"dns", None, None],
            b"cv": [b"pass", b"bogus", None, None, None],
            b"t": [b"%d" % (now - 100), b"%d" % (now + 40000), b"0", b"1x", b"12\n", b"9" * 30, None, None],
            b"x": [b"%d" % (now + 100), b"%d" % (now - 40000), b"0", b"%d" % (now - 200), b"x", None, None],
        }
        accepted = 0
        for _ in range(20000):
            sig = dict(rng.choice(base))  # a real signature, up to three of its tags changed, added or removed
            for name in rng.sample(sorted(choices), rng.randrange(4)):
                value = rng.choice(choices[name])
                if value is None:
                    sig.pop(name, None)
                else:
                    sig[name] = value
            theirs = ours = None
            try:
                dkim.validate_signature_fields(sig)
            except Exception as error:
                theirs = (type(error), str(error))
            try:
                validate(sig)
            except Exception as error:
                ours = (type(error), str(error))
            self.assertEqual(ours, theirs, sig)
            if plainly_valid(sig):
                accepted += 1
                self.assertIsNone(theirs, sig)
        self.assertGreater(accepted, 2000)

    def test_signed_names_as_dkimpy_reads_h(self) -> None:
        for h in (b"from : to :\r\n subject", b"From:To", b"to", b"from:from", b"a: b ::c", b""):
            include = [name.lower() for name in re.split(rb"\s*:\s*", h)]
            self.assertEqual(signed_names(h), tuple(include + [b"from"] if b"from" in include else include), h)
