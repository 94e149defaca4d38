"""The address value: its SMTP text, made once per address."""

from __future__ import annotations

import pickle

from twisted.trial.unittest import SynchronousTestCase

from mailserver import address as address_module
from mailserver.address import Address, Path, parse_mailbox, parse_path
from mailserver.errors import MailError


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


PATH_ARGUMENTS = [
    ("FROM:<bench@remote.example>", "FROM", True), ("FROM:<>", "FROM", True), ("FROM:<>", "FROM", False),
    ("TO:<alice@example.com>", "TO", False), ("to: <Alice@EXAMPLE.com>", "TO", False),
    ("FROM:<a@b.example> SIZE=1000 BODY=8BITMIME", "FROM", True), ("FROM:<a@b> size", "FROM", True),
    ("TO:<@relay.example,@r2.example:bob@example.com>", "TO", False), ('TO:<"a b"@example.com>', "TO", False),
    ("TO:<a@b>x", "TO", False), ("TO:<a@b", "TO", False), ("TO:", "TO", False), ("FROM:<bad address>", "FROM", True),
    ("TO:<é@example.com>", "TO", False), ("TO:<a@b> =x", "TO", False), ("MAIL:<a@b>", "FROM", True),
    ("FROM:a@b.example SIZE=1", "FROM", True), ("TO:<" + "x" * 300 + "@b>", "TO", False),
]


class ParsePathMemoryTests(SynchronousTestCase):
    """parse_path remembers its answers per argument (issue 15): the same results as parsing each time."""

    def _answer(self, parse, argument: str, keyword: str, allow_null: bool) -> object:
        try:
            return parse(argument, keyword, allow_null)
        except MailError as error:
            return error.reply()

    def test_same_as_parsing_each_time(self) -> None:
        self.patch(address_module, "_PATHS", {})
        for _ in range(3):  # first parsed, then remembered (errors are never kept)
            for case in PATH_ARGUMENTS:
                with self.subTest(case):
                    self.assertEqual(self._answer(parse_path, *case), self._answer(address_module._parse_path, *case))
        self.assertEqual(len(address_module._PATHS), len({c for c in PATH_ARGUMENTS
                                                          if isinstance(self._answer(parse_path, *c), Path)}))

    def test_each_answer_has_its_own_parameters(self) -> None:
        first = parse_path("FROM:<a@b.example> SIZE=10", "FROM", True)
        first.parameters["SIZE"] = "99"
        second = parse_path("FROM:<a@b.example> SIZE=10", "FROM", True)
        self.assertEqual(second.parameters, {"SIZE": "10"})
        self.assertIs(second.address, first.address)

    def test_memory_bounded(self) -> None:
        self.patch(address_module, "_PATHS", {})
        self.patch(address_module, "_PATHS_KEPT", 10)
        for n in range(25):
            parse_path(f"TO:<u{n}@example.com>", "TO", False)
        self.assertLessEqual(len(address_module._PATHS), 10)
        self.assertEqual(parse_path("TO:<u3@example.com>", "TO", False).address, Address("u3", "example.com"))


class BaseTests(SynchronousTestCase):
    def test_same_as_scanning_each_character(self) -> None:
        """Address.base finds the first delimiter after the first character, as the former loop did."""

        def former(address: Address, delimiters: str) -> Address:
            for index, char in enumerate(address.local):
                if char in delimiters and index > 0:
                    return Address(address.local[:index], address.domain)
            return address

        locals_ = ["bob", "bob+tag", "+bob", "+bob+x", "b+", "a-b+c", "a+b-c", "--x", "x--y", "", "+", "a+-b", "ab+"]
        for local in locals_:
            address = Address(local, "example.com")
            for delimiters in ("+", "-", "+-", "-+", "", "++", "x"):
                with self.subTest(local=local, delimiters=delimiters):
                    expected = former(address, delimiters)
                    found = address.base(delimiters)
                    self.assertEqual(found, expected)
                    if expected is address:
                        self.assertIs(found, address)
