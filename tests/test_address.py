"""The address value: its SMTP text, made once per address."""

from __future__ import annotations

import pickle

from twisted.trial.unittest import SynchronousTestCase

from mailserver import address as address_module
from mailserver.address import Address, parse_mailbox


class AddressTextTests(SynchronousTestCase):
    def test_quoted_local_part(self) -> None:
        self.assertEqual(str(Address('a "b"\\c', "example.com")), '"a \\"b\\"\\\\c"@example.com')
        self.assertEqual(str(Address("postmaster")), "postmaster")
        self.assertEqual(str(parse_mailbox("Bob.Smith@Example.COM")), "Bob.Smith@example.com")

    def test_text_made_once(self) -> None:
        """str() of one address is computed once (it is asked for several times per message)."""
        address = Address("a b", "example.com")
        first = str(address)
        self.patch(address_module, "_PLAIN_LOCAL", None)  # computing again would fail
        self.assertIs(str(address), first)

    def test_cached_text_changes_neither_equality_nor_pickling(self) -> None:
        address, other = Address("bob", "example.com"), Address("bob", "example.com")
        str(address)
        self.assertEqual(address, other)
        self.assertEqual(hash(address), hash(other))
        self.assertEqual(pickle.loads(pickle.dumps(address)), other)
        self.assertEqual(repr(address), "Address(local='bob', domain='example.com')")
