"""A message spooled to disk (SMTP DATA past the spill threshold) is signed and stays spooled."""

from __future__ import annotations

import dkim
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from mailserver.mailauth.dkim_keys import KeyStore
from mailserver.mailauth.dkim_sign import DKIMSigner
from mailserver.spooled import SpooledMessage
from tests.mailauth.support import MESSAGE, key_records, keys


class SpooledSigningTests(SynchronousTestCase):
    def test_spooled_message_signed_and_kept_on_disk(self) -> None:
        store = KeyStore(self.mktemp())
        for key in keys():
            store.save(key)
        signer = DKIMSigner(store, "mail", ["example.com"], Clock())
        head, body = MESSAGE.split(b"\n\n", 1)
        body = body + b"".join(b"line %d of a long message\n" % n for n in range(20000))
        path = self.mktemp()
        with open(path, "wb") as handle:
            handle.write(b"junk before" + body)
        spooled = SpooledMessage(head=head + b"\n\n", path=path, offset=len(b"junk before"), length=len(body))

        signed = signer.sign_blocking(spooled, "alice@example.com")

        self.assertIsInstance(signed, SpooledMessage)
        self.assertEqual((signed.path, signed.offset, signed.length), (path, spooled.offset, len(body)))
        self.assertTrue(signed.head.startswith(b"DKIM-Signature: "))
        whole = signed.read()
        self.assertTrue(whole.endswith(head + b"\n\n" + body))
        records = {f"{name}.".encode(): value[0][1].encode() for name, value in key_records(*keys()).items()}
        for index in (0, 1):
            self.assertTrue(dkim.DKIM(whole).verify(idx=index, dnsfunc=lambda name, timeout=5: records.get(name)))

    def test_unsigned_domain_returns_the_same_spooled_message(self) -> None:
        signer = DKIMSigner(KeyStore(self.mktemp()), "mail", ["example.net"], Clock())
        spooled = SpooledMessage(head=MESSAGE)
        self.assertIs(signer.sign_blocking(spooled, "alice@example.com"), spooled)
