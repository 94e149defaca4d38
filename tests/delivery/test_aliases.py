"""Tests for mailserver.delivery.aliases: the alias expansion engine."""

from __future__ import annotations

import errno

from twisted.trial.unittest import SynchronousTestCase

from mailserver.address import Address
from mailserver.delivery.aliases import AliasExpander, Expansion
from mailserver.envelope import CommandTarget, FileTarget
from mailserver.errors import MailError
from mailserver.tables.aliases import AliasTable, parse_aliases, parse_virtual

LOCAL_DOMAINS = {"example.com", "localhost"}


def a(text: str) -> Address:
    local, _, domain = text.partition("@")
    return Address(local, domain)


class Setup:
    """Build an expander over texts; includes come from a dict."""

    def __init__(self, aliases: str = "", virtual: str | None = None, owner: int | None = 1000, **kwargs) -> None:
        table, problems = parse_aliases(aliases, "aliases")
        assert not [p for p in problems if p.severity == "error"], problems
        self.aliases = table.with_owner(owner)
        self.virtual: AliasTable | None = None
        if virtual is not None:
            self.virtual, problems = parse_virtual(virtual, "virtual")
            assert not [p for p in problems if p.severity == "error"], problems
        self.includes: dict[str, str] = {}
        self.read: list[str] = []
        options = dict(allow_files=True, allow_commands=True)
        options.update(kwargs)
        self.expander = AliasExpander(
            lambda: self.aliases,
            lambda: self.virtual,
            lambda domain: domain in LOCAL_DOMAINS,
            self.read_include,
            **options,
        )

    def read_include(self, path: str) -> str:
        self.read.append(path)
        try:
            return self.includes[path]
        except KeyError:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", path) from None

    def expand(self, address: str, delimiters: str = "") -> Expansion:
        return self.expander.expand(a(address), delimiters)

    def targets(self, address: str, delimiters: str = "") -> list[object]:
        return [str(t) if isinstance(t, Address) else t for t in self.expand(address, delimiters).targets]


class ExpansionTests(SynchronousTestCase):
    def assertError(self, setup: Setup, address: str, code: int, enhanced: str, text: str = "") -> MailError:
        error = self.assertRaises(MailError, setup.expand, address)
        self.assertEqual((error.code, error.enhanced), (code, enhanced))
        if text:
            self.assertEqual(error.text, text)
        return error

    def test_seed_admin_reaches_harry(self) -> None:
        setup = Setup("admin: harry\n")
        expansion = setup.expand("admin@example.com")
        self.assertEqual(expansion, Expansion((Address("harry", "example.com"),), None, True))

    def test_case_insensitive(self) -> None:
        setup = Setup("admin: harry\n")
        self.assertEqual(setup.targets("ADMIN@example.com"), ["harry@example.com"])

    def test_not_an_alias(self) -> None:
        setup = Setup("admin: harry\n")
        self.assertEqual(setup.expand("sally@example.com"), Expansion((a("sally@example.com"),)))

    def test_bare_address(self) -> None:
        setup = Setup("admin: harry\n")
        self.assertEqual(setup.targets("admin"), ["harry"])

    def test_remote_domain_not_looked_up(self) -> None:
        """alias_maps apply to local domains only."""
        setup = Setup("admin: harry\n")
        self.assertEqual(setup.expand("admin@example.org"), Expansion((a("admin@example.org"),)))

    def test_postmaster_undefined_unchanged(self) -> None:
        """The recipients stage accepts postmaster; the expansion leaves it alone."""
        setup = Setup("admin: harry\n")
        self.assertEqual(setup.expand("postmaster@example.com"), Expansion((a("postmaster@example.com"),)))

    def test_postmaster_chain(self) -> None:
        setup = Setup("postmaster: root\nMAILER-DAEMON: postmaster\nroot: harry\n")
        self.assertEqual(setup.targets("mailer-daemon@example.com"), ["harry@example.com"])

    def test_recursion_and_remote_targets(self) -> None:
        setup = Setup("staff: harry, team\nteam: sally, bob@example.org\n")
        self.assertEqual(
            setup.targets("staff@example.com"), ["harry@example.com", "sally@example.com", "bob@example.org"]
        )

    def test_address_target_in_local_domain_expanded(self) -> None:
        setup = Setup("admin: root@localhost\nroot: harry\n")
        self.assertEqual(setup.targets("admin@example.com"), ["harry@localhost"])

    def test_self_reference_delivers_to_user(self) -> None:
        """root: root, other delivers to the user root (Postfix), no loop."""
        setup = Setup("root: root, other\nother: harry\n")
        self.assertEqual(setup.targets("root@example.com"), ["root@example.com", "harry@example.com"])

    def test_self_reference_through_address(self) -> None:
        setup = Setup("harry: harry@example.com, archive\n")
        self.assertEqual(setup.targets("harry@example.com"), ["harry@example.com", "archive@example.com"])

    def test_loop(self) -> None:
        setup = Setup("a: b\nb: a\n")
        self.assertError(setup, "a@example.com", 550, "5.4.6", "Alias expansion loop: a -> b -> a")

    def test_longer_loop_with_other_targets(self) -> None:
        setup = Setup("a: harry, b\nb: c\nc: sally, a\n")
        self.assertError(setup, "a@example.com", 550, "5.4.6", "Alias expansion loop: a -> b -> c -> a")

    def test_depth_limit(self) -> None:
        text = "".join(f"a{i}: a{i + 1}\n" for i in range(30))
        error = self.assertError(Setup(text), "a0@example.com", 550, "5.4.6")
        self.assertIn("deeper than 20", error.text)
        # Within the limit it works.
        self.assertEqual(Setup(text, max_depth=40).targets("a0@example.com"), ["a30@example.com"])

    def test_duplicates_delivered_once(self) -> None:
        setup = Setup("all: staff, ops, harry\nstaff: harry, sally\nops: sally, Harry, staff\n")
        self.assertEqual(setup.targets("all@example.com"), ["harry@example.com", "sally@example.com"])

    def test_max_targets(self) -> None:
        setup = Setup("big: " + ", ".join(f"u{i}" for i in range(20)) + "\n", max_targets=10)
        self.assertError(setup, "big@example.com", 451, "4.3.0")

    def test_owner(self) -> None:
        setup = Setup("staff: harry, sally\nowner-staff: harry\n")
        expansion = setup.expand("staff@example.com")
        self.assertEqual(expansion.owner, Address("owner-staff", "example.com"))
        self.assertTrue(expansion.expanded)

    def test_no_owner(self) -> None:
        setup = Setup("staff: harry, sally\nowner-other: harry\n")
        self.assertIsNone(setup.expand("staff@example.com").owner)

    def test_owner_alias_is_an_alias(self) -> None:
        setup = Setup("staff: harry\nowner-staff: sally\n")
        self.assertEqual(setup.targets("owner-staff@example.com"), ["sally@example.com"])

    def test_table_swap_between_expansions(self) -> None:
        setup = Setup("admin: harry\n")
        self.assertEqual(setup.targets("admin@example.com"), ["harry@example.com"])
        setup.aliases = parse_aliases("admin: sally\n", "aliases")[0]
        self.assertEqual(setup.targets("admin@example.com"), ["sally@example.com"])


class DelimiterTests(SynchronousTestCase):
    def test_full_local_part_first(self) -> None:
        setup = Setup("harry+lists: archive\nharry: harry, backup\n")
        self.assertEqual(setup.targets("harry+lists@example.com", "+"), ["archive@example.com"])

    def test_then_base(self) -> None:
        setup = Setup("admin: harry\n")
        self.assertEqual(setup.targets("admin+tag@example.com", "+"), ["harry@example.com"])

    def test_no_delimiters_no_base(self) -> None:
        setup = Setup("admin: harry\n")
        self.assertEqual(setup.targets("admin+tag@example.com"), ["admin+tag@example.com"])


class IncludeTests(SynchronousTestCase):
    def test_include(self) -> None:
        setup = Setup("list: :include:/etc/mail/list, harry\n")
        setup.includes["/etc/mail/list"] = "# members\nsally, bob@example.org\nharry\n"
        self.assertEqual(
            setup.targets("list@example.com"), ["sally@example.com", "bob@example.org", "harry@example.com"]
        )

    def test_nested_includes_and_aliases(self) -> None:
        setup = Setup("list: :include:/one\nteam: carol\n")
        setup.includes["/one"] = "sally\n:include:/two\n"
        setup.includes["/two"] = "team, dave\n"
        self.assertEqual(
            setup.targets("list@example.com"), ["sally@example.com", "carol@example.com", "dave@example.com"]
        )

    def test_include_loop(self) -> None:
        setup = Setup("list: :include:/one\n")
        setup.includes["/one"] = ":include:/two\n"
        setup.includes["/two"] = ":include:/one\n"
        error = self.assertRaises(MailError, setup.expand, "list@example.com")
        self.assertEqual((error.code, error.enhanced), (550, "5.4.6"))
        self.assertIn("loop", error.text)

    def test_alias_loop_through_include(self) -> None:
        setup = Setup("a: :include:/one\nb: a\n")
        setup.includes["/one"] = "b\n"
        error = self.assertRaises(MailError, setup.expand, "a@example.com")
        self.assertEqual(error.text, "Alias expansion loop: a -> b -> a")

    def test_missing_include(self) -> None:
        setup = Setup("list: :include:/missing\n")
        error = self.assertRaises(MailError, setup.expand, "list@example.com")
        self.assertEqual((error.code, error.enhanced), (451, "4.3.0"))
        self.assertEqual(setup.read, ["/missing"])
        self.assertNotIn("/missing", error.text)  # the reply does not show paths

    def test_broken_include_does_not_leak(self) -> None:
        """A file that is not a list (say /etc/shadow) defers; its text never reaches the reply."""
        setup = Setup("list: :include:/etc/secret\n")
        setup.includes["/etc/secret"] = "root:$6$secrethash:19000::::::\n"
        error = self.assertRaises(MailError, setup.expand, "list@example.com")
        self.assertEqual((error.code, error.enhanced), (451, "4.3.0"))
        self.assertNotIn("secrethash", error.text)

    def test_files_and_commands_in_include_refused_by_default(self) -> None:
        """Postfix's allow_mail_to_files/commands default is "alias, forward": not include."""
        for member in ("/tmp/file", '"|cmd"'):
            setup = Setup("list: :include:/one\n")
            setup.includes["/one"] = member + "\n"
            error = self.assertRaises(MailError, setup.expand, "list@example.com")
            self.assertEqual((error.code, error.enhanced), (550, "5.7.1"))

    def test_files_and_commands_in_include_when_allowed(self) -> None:
        setup = Setup("list: :include:/one\n", include_files=True, include_commands=True)
        setup.includes["/one"] = '/tmp/file, "|cmd"\n'
        # Targets from include files run as default_privs (owner unknown).
        self.assertEqual(setup.targets("list@example.com"), [FileTarget("/tmp/file", None), CommandTarget("cmd", None)])


class FileAndCommandTests(SynchronousTestCase):
    def test_allowed_in_aliases(self) -> None:
        setup = Setup('archive: /var/mail/archive, "|/usr/bin/logger -t mail", harry\n', owner=1234)
        self.assertEqual(
            setup.targets("archive@example.com"),
            [FileTarget("/var/mail/archive", 1234), CommandTarget("/usr/bin/logger -t mail", 1234), "harry@example.com"],
        )

    def test_files_refused(self) -> None:
        setup = Setup("archive: /var/mail/archive\n", allow_files=False)
        error = self.assertRaises(MailError, setup.expand, "archive@example.com")
        self.assertEqual((error.code, error.enhanced), (550, "5.7.1"))
        self.assertIn("not allowed (allow_mail_to_files)", error.text)
        self.assertNotIn("/var/mail", error.text)

    def test_commands_refused(self) -> None:
        setup = Setup('run: "|/usr/bin/x"\n', allow_commands=False)
        error = self.assertRaises(MailError, setup.expand, "run@example.com")
        self.assertEqual((error.code, error.enhanced), (550, "5.7.1"))
        self.assertIn("not allowed (allow_mail_to_commands)", error.text)

    def test_never_from_virtual(self) -> None:
        for target in ("/tmp/file", '"|cmd"', ":include:/one"):
            setup = Setup(virtual=f"info@example.org {target}\n")
            setup.includes["/one"] = "harry\n"
            error = self.assertRaises(MailError, setup.expand, "info@example.org")
            self.assertEqual((error.code, error.enhanced), (550, "5.7.1"), target)
            self.assertIn("virtual_alias_maps", error.text)
            self.assertEqual(setup.read, [])

    def test_duplicate_files_once(self) -> None:
        setup = Setup("a: /tmp/f, b\nb: /tmp/f\n")
        self.assertEqual(setup.targets("a@example.com"), [FileTarget("/tmp/f", 1000)])


class VirtualTests(SynchronousTestCase):
    def test_exact_then_catch_all(self) -> None:
        setup = Setup(virtual="info@example.org harry@example.com\n@example.org sally@example.com\n")
        self.assertEqual(setup.targets("Info@Example.org"), ["harry@example.com"])
        self.assertEqual(setup.targets("other@example.org"), ["sally@example.com"])
        self.assertEqual(setup.expand("x@example.net"), Expansion((a("x@example.net"),)))

    def test_virtual_then_aliases_in_local_domain(self) -> None:
        setup = Setup("admin: harry\n", virtual="info@example.org admin@example.com\n")
        self.assertEqual(setup.targets("info@example.org"), ["harry@example.com"])

    def test_virtual_before_aliases(self) -> None:
        setup = Setup("admin: harry\n", virtual="admin@example.com sally@example.com\n")
        self.assertEqual(setup.targets("admin@example.com"), ["sally@example.com"])

    def test_catch_all_to_itself(self) -> None:
        """@domain -> one@domain: one@domain is matched by the catch-all again and kept."""
        setup = Setup(virtual="@example.org catchall@example.org\n")
        self.assertEqual(setup.targets("x@example.org"), ["catchall@example.org"])

    def test_catch_all_loop(self) -> None:
        setup = Setup(virtual="@example.org catchall@example.org\ncatchall@example.org z@example.org\n")
        error = self.assertRaises(MailError, setup.expand, "x@example.org")
        self.assertEqual(error.text, "Alias expansion loop: @example.org -> catchall@example.org -> @example.org")

    def test_extension_propagated(self) -> None:
        """propagate_unmatched_extensions includes virtual by default."""
        setup = Setup(virtual="info@example.org harry@example.net\n")
        self.assertEqual(setup.targets("info+tag@example.org", "+"), ["harry+tag@example.net"])

    def test_bare_names_get_myorigin(self) -> None:
        setup = Setup(virtual="info@example.org harry\n", myorigin="Example.COM")
        self.assertEqual(setup.targets("info@example.org"), ["harry@example.com"])

    def test_bare_key_only_in_local_domains(self) -> None:
        setup = Setup(virtual="webmaster harry@example.net\n")
        self.assertEqual(setup.targets("webmaster@example.com"), ["harry@example.net"])
        self.assertEqual(setup.targets("webmaster@example.org"), ["webmaster@example.org"])

    def test_no_virtual_table(self) -> None:
        setup = Setup("admin: harry\n")
        self.assertIsNone(setup.virtual)
        self.assertEqual(setup.targets("admin@example.com"), ["harry@example.com"])
