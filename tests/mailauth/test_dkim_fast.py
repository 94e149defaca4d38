"""The DKIM verification fast path (L{mailserver.mailauth.dkim_fast}) agrees with dkimpy."""

from __future__ import annotations

import random
from typing import Any

import dkim
from dkim.canonicalization import Relaxed
from twisted.trial.unittest import SynchronousTestCase

from mailserver.mailauth.dkim_fast import FastVerifier, public_key, relaxed_body
from mailserver.mailauth.dkim_sign import sign_with
from mailserver.mailauth.dkim_verify import _Answers, verify_blocking
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
