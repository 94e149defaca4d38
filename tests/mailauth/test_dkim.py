"""DKIM: the key store, signing (RSA + Ed25519, oversigning), verification against the loopback DNS server."""

from __future__ import annotations

import os
import stat

import dkim
from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.trial.unittest import SynchronousTestCase, TestCase

from mailserver.mailauth.dkim_keys import KeyStore, KeyStoreError, SigningKey, generate
from mailserver.mailauth.dkim_sign import OVERSIGNED, DKIMSigner, header_list, sign_with
from mailserver.mailauth.dkim_verify import DKIMVerifier, key_names
from mailserver.mailauth.dns import DNSLookup
from tests.dns import DNSTestServer
from tests.mailauth.support import MESSAGE, key_records, keys


class KeyStoreTests(SynchronousTestCase):
    def test_save_is_0600_and_refuses_to_overwrite(self) -> None:
        store = KeyStore(self.mktemp())
        key = generate("Example.COM", "mail", "ed25519")
        path = store.save(key)
        self.assertEqual(path, os.path.join(store.directory, "example.com", "mail.ed25519.key"))
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        self.assertRaises(FileExistsError, store.save, key)
        self.assertEqual(store.load("example.com", "mail"), [key])
        self.assertEqual([k.algorithm for k in store.all_keys()], ["ed25519"])
        self.assertEqual([n for n in os.listdir(os.path.dirname(path))], ["mail.ed25519.key"])

    def test_regression_key_names_cannot_escape_the_directory(self) -> None:
        store = KeyStore(self.mktemp())
        for bad in ("../etc", "a/b", "", ".", "a..b", "-x.com"):
            self.assertRaises(KeyStoreError, store.path, bad, "mail", "rsa")
            self.assertRaises(KeyStoreError, store.path, "example.com", bad, "rsa")

    def test_txt_record(self) -> None:
        rsa, ed = keys()
        self.assertTrue(rsa.txt_value.startswith("v=DKIM1; k=rsa; p=MIIBIjAN"))
        self.assertRegex(ed.txt_value, r"^v=DKIM1; k=ed25519; p=[A-Za-z0-9+/]{43}=$")
        self.assertIn('"', rsa.zone_line())
        self.assertTrue(rsa.zone_line().startswith("mail._domainkey.example.com. IN TXT"))

    def test_unreadable_key_is_an_error_not_a_traceback(self) -> None:
        store = KeyStore(self.mktemp())
        os.makedirs(os.path.join(store.directory, "example.com"))
        with open(store.path("example.com", "mail", "rsa"), "wb") as handle:
            handle.write(b"garbage")
        self.assertRaises(KeyStoreError, store.load, "example.com", "mail")

    def test_regression_key_file_read_once_while_unchanged(self) -> None:
        """KeyStore.load used to read and parse the key file for every message."""
        store = KeyStore(self.mktemp())
        store.save(generate("example.com", "mail", "rsa"))
        first = store.load("example.com", "mail")[0]
        parsed = []
        real = SigningKey.public_base64.fget
        self.patch(SigningKey, "public_base64", property(lambda key: parsed.append(key) or real(key)))
        for _ in range(5):
            self.assertIs(store.load("example.com", "mail")[0], first)
        self.assertEqual(parsed, [])

    def test_replaced_key_file_is_read_again(self) -> None:
        store = KeyStore(self.mktemp())
        old = generate("example.com", "mail", "ed25519")
        store.save(old)
        self.assertEqual(store.load("example.com", "mail"), [old])
        new = generate("example.com", "mail", "ed25519")
        store.save(new, replace=True)
        self.assertEqual(store.load("example.com", "mail"), [new])
        os.remove(store.path("example.com", "mail", "ed25519"))
        self.assertEqual(store.load("example.com", "mail"), [])
        self.assertEqual(store._cache, {})


class SigningTests(SynchronousTestCase):
    def test_header_list_oversigns(self) -> None:
        fields = [("From", b""), ("To", b""), ("Subject", b""), ("Received", b""), ("X-Other", b"")]
        names = header_list(fields)
        self.assertEqual(names[:3], ["from", "to", "subject"])
        self.assertEqual(names.count("from"), 2)
        self.assertEqual(names.count("cc"), 1)  # absent, signed as absent: cannot be added
        self.assertNotIn("received", names)
        self.assertEqual(names[3:], list(OVERSIGNED))

    def test_dual_signatures_verify_with_dkimpy(self) -> None:
        rsa, ed = keys()
        signed = sign_with(MESSAGE, [rsa, ed]) + MESSAGE
        records = {f"{name}.".encode(): value[0][1].encode() for name, value in key_records(rsa, ed).items()}

        def dnsfunc(name, timeout=5):
            return records.get(name if name.endswith(b".") else name + b".")

        for index in (0, 1):
            self.assertTrue(dkim.DKIM(signed).verify(idx=index, dnsfunc=dnsfunc), index)
        self.assertIn(b"a=rsa-sha256", signed)
        self.assertIn(b"a=ed25519-sha256", signed)
        self.assertIn(b"c=relaxed/relaxed", signed)
        self.assertTrue(signed.startswith(b"DKIM-Signature: "))
        self.assertNotIn(b"\r\n", signed)  # LF in, LF out
        # Adding a second Subject (oversigned) breaks both.
        tampered = signed.replace(b"To: bob", b"Subject: new\nTo: bob")
        self.assertFalse(dkim.DKIM(tampered).verify(idx=0, dnsfunc=dnsfunc))

    def test_signer_picks_the_from_domain_or_a_parent(self) -> None:
        store = KeyStore(self.mktemp())
        signer = DKIMSigner(store, "mail", ["example.com"], reactor)
        self.assertEqual(signer.signing_domain(MESSAGE), "example.com")
        self.assertEqual(signer.signing_domain(MESSAGE.replace(b"@example.com>", b"@lists.example.com>")), "example.com")
        self.assertIsNone(signer.signing_domain(MESSAGE.replace(b"@example.com>", b"@example.net>")))
        self.assertEqual(signer.signing_domain(b"Subject: x\n\nbody\n", "bounce@example.com"), "example.com")
        # No key on disk: unchanged, not an error.
        self.assertEqual(signer.sign_blocking(MESSAGE), MESSAGE)
        store.save(keys()[1])
        signed = signer.sign_blocking(MESSAGE)
        self.assertTrue(signed.startswith(b"DKIM-Signature: v=1; a=ed25519-sha256"))
        self.assertIn(b"s=mail-ed25519;", signed)


class VerifyTests(TestCase):
    def setUp(self) -> Deferred:
        self.rsa, self.ed = keys()
        self.dns = DNSTestServer({"example.com": key_records(self.rsa, self.ed)})
        return self.dns.start(self)

    def verifier(self) -> DKIMVerifier:
        return DKIMVerifier(DNSLookup(self.dns.resolver), reactor)

    def test_key_names(self) -> None:
        signed = sign_with(MESSAGE, [self.rsa, self.ed]) + MESSAGE
        self.assertEqual(key_names(signed), ["mail._domainkey.example.com", "mail-ed25519._domainkey.example.com"])

    async def _verify(self, message: bytes):
        return await self.verifier().verify(message)

    def check(self, message: bytes, expected: list[str]) -> Deferred:
        d = ensureDeferred(self._verify(message))
        d.addCallback(lambda results: self.assertEqual([r.result for r in results.dkim], expected, results))
        return d

    def test_pass_both(self) -> Deferred:
        return self.check(sign_with(MESSAGE, [self.rsa, self.ed]) + MESSAGE, ["pass", "pass"])

    def test_body_changed_fails(self) -> Deferred:
        signed = sign_with(MESSAGE, [self.rsa, self.ed]) + MESSAGE
        return self.check(signed.replace(b"line one", b"line 1"), ["fail", "fail"])

    def test_relaxed_survives_whitespace_and_case(self) -> Deferred:
        signed = sign_with(MESSAGE, [self.rsa]) + MESSAGE
        rewrapped = signed.replace(b"Subject: Hello  there", b"subject:   Hello\n\tthere").replace(
            b"two   \n", b"two\n").replace(b"\n", b"\r\n")
        return self.check(rewrapped, ["pass"])

    def test_missing_key_is_permerror(self) -> Deferred:
        other = generate("example.com", "gone", "ed25519")
        return self.check(sign_with(MESSAGE, [other]) + MESSAGE, ["permerror"])

    def test_servfail_is_temperror(self) -> Deferred:
        self.dns.servfail.add(self.rsa.dns_name)
        return self.check(sign_with(MESSAGE, [self.rsa]) + MESSAGE, ["temperror"])

    def test_regression_garbage_signature_is_permerror_not_traceback(self) -> Deferred:
        bad = [
            b"DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=mail; b=!!; bh=zz; h=from\n",
            b"DKIM-Signature: ;;;===\n",
            b"DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=mail; c=bogus/x; bh=; b=; h=from\n",
        ]
        return self.check(b"".join(bad) + MESSAGE, ["permerror", "permerror", "permerror"])

    def test_unsigned(self) -> Deferred:
        d = ensureDeferred(self._verify(MESSAGE))
        d.addCallback(lambda results: (self.assertEqual(results.dkim, []), self.assertEqual(results.arc.result, "none")))
        return d

    def test_arc_chain_verifies(self) -> Deferred:
        # An ARC set added by a forwarder (dkimpy's signer), sealed with the RSA key.
        signed = sign_with(MESSAGE, [self.rsa]) + MESSAGE
        auth = b"Authentication-Results: fwd.example.com; dkim=pass header.d=example.com\n"
        arc = dkim.arc_sign(auth + signed, b"mail", b"example.com", self.rsa.private, b"fwd.example.com",
                            linesep=b"\n")
        sealed = b"".join(arc) + auth + signed
        d = ensureDeferred(self._verify(sealed))
        d.addCallback(lambda results: self.assertEqual(results.arc.result, "pass", results.arc))
        return d


class SigningRobustnessTests(SynchronousTestCase):
    def test_regression_empty_or_malformed_message_is_sent_unsigned(self) -> None:
        # dkimpy raises TypeError on an empty message and MessageFormatError on
        # "To    : x" or a stray unfolded line; the signer must hand the message back.
        store = KeyStore(self.mktemp())
        store.save(keys()[1])
        signer = DKIMSigner(store, "mail", ["example.com"], reactor)
        for message in (b"", b"From: a@example.com\nTo    : Mary\n\nx\n", b"From: a@example.com\nbroken line\n\nx\n"):
            self.assertEqual(signer.sign_blocking(message, "a@example.com"), message)
        self.flushLoggedErrors()

    def test_regression_rsa_sha1_not_accepted(self) -> None:
        from mailserver.mailauth.dkim_verify import _Answers, verify_blocking

        rsa = keys()[0]
        signed = dkim.sign(MESSAGE, b"mail", b"example.com", rsa.private, signature_algorithm=b"rsa-sha1") + MESSAGE
        results = verify_blocking(signed, _Answers({rsa.dns_name: rsa.txt_value.encode()}, set()))
        self.assertEqual([r.result for r in results.dkim], ["permerror"])
