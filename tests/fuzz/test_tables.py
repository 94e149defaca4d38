"""Fuzz: aliases(5), virtual(5), :include: files, compiled alias tables, regexp tables, passwd-file."""

from __future__ import annotations

from hypothesis import given, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from mailserver.errors import ConfigError
from mailserver.tables.aliasdb import from_document, to_document
from mailserver.tables.aliases import classify, parse_aliases, parse_include, parse_virtual
from mailserver.tables.passwd import check_name, parse_passwd, parse_passwd_line, split_password
from mailserver.tables.regexp import compile_regexp_table, parse_regexp_table, table_reference
from tests.fuzz.bounds import bounded
from tests.fuzz.strategies import ASCII_TEXT, NOT_SPACE, UNICODE_DIGITS, salted, sample_table

# Unicode white space other than space/tab/newline in aliases is another
# change's subject (tables/aliases.py); until it lands the generators leave
# it out: ASCII layout characters plus non-space characters of any script.
ALIAS_ALPHABET = NOT_SPACE | ASCII_TEXT
ALIAS_TOKENS = ["\n", " ", "\t", ",", ":", '"', "#", "|", "/", "@", ":include:", "owner-", "root", "postmaster",
                "bob@example.com", "@example.com", "\\", "/dev/null", '"|/bin/cat"', "MAILER-DAEMON", "é"]
REGEXP_TOKENS = ["\n", " ", "\t", "/", "!", "if ", "endif", "^", "$", ".*", "(", ")", "[", "]", "\\", "|", "?",
                 "+", "*", "{2}", "i", "m", "s", "x", "REJECT", "WARN", "HOLD", "DISCARD", "IGNORE", "PREPEND",
                 "REPLACE", "REDIRECT", "BCC", "DUNNO", "OK", "$1", "${2}", "$$", "Subject:", "#", "(?P<n>a)",
                 "(?i)", "%", "=", "${", "$(", "}"] + UNICODE_DIGITS
PASSWD_TOKENS = ["\n", ":", "#", " ", "=", "@", "{PLAIN}", "{SHA512-CRYPT}", "{ARGON2ID}", "{BLF-CRYPT}", "{X}",
                 "$6$", "$2y$", "$5$", "$argon2id$", "alice", "example.com", "1000", "4294967296", "-1",
                 "/home/a", "userdb_quota_rule=*:storage=1G", "nopassword", "\\"] + UNICODE_DIGITS


SAMPLE_TABLES = {name: sample_table(name) for name in ("header_checks", "body_checks", "mime_header_checks")}


class AliasTests(SynchronousTestCase):
    @given(salted(ALIAS_TOKENS, ALIAS_ALPHABET))
    def test_parse_aliases_never_raises(self, text: str) -> None:
        table, _ = bounded(parse_aliases, text, "/etc/aliases")
        # What was parsed survives the compiled (JSON) form unchanged.
        self.assertEqual(from_document(to_document(table), "/etc/aliases").entries, table.entries)

    @given(salted(ALIAS_TOKENS, ALIAS_ALPHABET))
    def test_parse_virtual_and_include_never_raise(self, text: str) -> None:
        bounded(parse_virtual, text, "/etc/virtual")
        bounded(parse_include, text, "/etc/staff.list")

    @given(salted(ALIAS_TOKENS, ALIAS_ALPHABET))
    def test_classify_raises_only_value_error(self, text: str) -> None:
        bounded(classify, text, 1, allowed=(ValueError,))

    @given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=10),
                        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
                            st.sampled_from(["version", "entries", "source", "targets", "kind", "text", "line",
                                             "name", "owner"]) | st.text(max_size=5), inner, max_size=4),
                        max_leaves=20))
    def test_compiled_table_raises_only_value_error(self, document: object) -> None:
        bounded(from_document, document, "/etc/aliases", allowed=(ValueError,))


class RegexpTableTests(SynchronousTestCase):
    @given(salted(REGEXP_TOKENS))
    def test_parse_regexp_table_never_raises(self, text: str) -> None:
        bounded(parse_regexp_table, text, "header_checks")
        bounded(compile_regexp_table, text, "header_checks", allowed=(ConfigError,))

    @given(st.sampled_from(sorted(SAMPLE_TABLES)), salted(REGEXP_TOKENS + ["lottery", ".exe", "name=", "I love you"]))
    def test_sample_tables_match_any_line(self, name: str, line: str) -> None:
        table = SAMPLE_TABLES[name]
        bounded(table.match, line)
        bounded(table.may_match, line)

    @given(salted(["regexp:", "pcre:", "hash:", "texthash:", "/etc/x", ":", " "]))
    def test_table_reference_raises_only_value_error(self, text: str) -> None:
        bounded(table_reference, text, allowed=(ValueError,))


class PasswdTests(SynchronousTestCase):
    @given(salted(PASSWD_TOKENS))
    def test_parse_passwd_never_raises(self, text: str) -> None:
        bounded(parse_passwd, text, "/etc/mailserver/passwd")

    @given(salted(PASSWD_TOKENS))
    def test_line_parsers_raise_only_value_error(self, text: str) -> None:
        bounded(parse_passwd_line, text, allowed=(ValueError,))
        bounded(check_name, text, allowed=(ValueError,))
        bounded(split_password, text, allowed=(ValueError,))
