"""The interpreter, extension by extension (examples from the RFCs where they have them)."""

from twisted.trial.unittest import SynchronousTestCase

from mailserver.sieve.actions import Discard, FileInto, Redirect, Reject, Vacation
from mailserver.sieve.interpreter import Limits, SieveRuntimeError
from tests.sieve.support import sieve

KEEP = FileInto("INBOX")


class CoreTests(SynchronousTestCase):
    """RFC 5228."""

    def test_implicit_keep(self):
        self.assertEqual(sieve(""), [KEEP])
        self.assertEqual(sieve("keep; keep;"), [KEEP])

    def test_discard_cancels_keep(self):
        self.assertEqual(sieve("discard;"), [Discard()])
        self.assertEqual(sieve("discard; keep;"), [Discard(), KEEP])

    def test_stop(self):
        self.assertEqual(sieve("discard; stop; keep;"), [Discard()])

    def test_redirect(self):
        self.assertEqual(sieve('redirect "a@example.com";'), [Redirect("a@example.com")])
        self.assertEqual(sieve('redirect "a@example.com"; redirect "a@example.com";'), [Redirect("a@example.com")])
        self.assertRaises(SieveRuntimeError, sieve, 'redirect "not an address";')

    def test_redirect_limit(self):
        script = "".join(f'redirect "u{i}@example.com";' for i in range(5))
        self.assertRaises(SieveRuntimeError, sieve, script)
        self.assertEqual(len(sieve(script, limits=Limits(max_redirects=5))), 5)

    def test_action_limit(self):
        script = 'require "fileinto";' + "".join(f'fileinto "f{i}";' for i in range(40))
        self.assertRaises(SieveRuntimeError, sieve, script)

    def test_if_elsif_else(self):
        script = '''require "fileinto";
            if header :contains "subject" "nothing" { fileinto "a"; }
            elsif header :contains "subject" "present" { fileinto "b"; }
            else { fileinto "c"; }'''
        self.assertEqual(sieve(script), [FileInto("b")])

    def test_rfc5228_example(self):
        # RFC 5228 section 9, trimmed to the tests we can check here.
        script = '''require "fileinto";
            if anyof (not exists ["From", "Date"], header :contains "from" "idiot@example.com") { discard; }
            elsif header :contains ["subject"] ["$$$"] { discard; }
            elsif address :is :domain "from" "desert.example.org" { fileinto "coyote"; }
            elsif size :over 100K { fileinto "big"; }'''
        self.assertEqual(sieve(script), [FileInto("coyote")])

    def test_header_comparators(self):
        self.assertEqual(sieve('if header :is "subject" "i have a PRESENT for you" { discard; }'), [Discard()])
        self.assertEqual(
            sieve('if header :comparator "i;octet" :is "subject" "i have a PRESENT for you" { discard; }'), [KEEP]
        )
        script = 'require "comparator-i;ascii-numeric"; if header :comparator "i;ascii-numeric" :is "x-n" "007" { discard; }'
        self.assertEqual(sieve(script, message=b"X-N: 7abc\n\n"), [Discard()])

    def test_matches_wildcards(self):
        self.assertEqual(sieve('if header :matches "subject" "I have a ??esent*" { discard; }'), [Discard()])
        self.assertEqual(sieve('if header :matches "subject" "\\\\*" { discard; }', message=b"Subject: *\n\n"), [Discard()])
        self.assertEqual(sieve('if header :matches "subject" "*x" { discard; }'), [KEEP])

    def test_encoded_header(self):
        message = b"Subject: =?UTF-8?Q?caf=C3=A9?=\n\n"
        self.assertEqual(sieve('if header :is "subject" "caf\xc3\xa9" { discard; }'.encode("latin-1").decode("utf-8"), message=message), [Discard()])

    def test_address_parts(self):
        self.assertEqual(sieve('if address :localpart "cc" "carol" { discard; }'), [Discard()])
        self.assertEqual(sieve('if address :all :is "from" "COYOTE@desert.example.org" { discard; }'), [Discard()])

    def test_size(self):
        self.assertEqual(sieve("if size :under 1K { discard; }"), [Discard()])
        self.assertEqual(sieve("if size :over 1K { discard; }"), [KEEP])


class ExtensionTests(SynchronousTestCase):
    def test_fileinto_copy_create(self):
        script = 'require ["fileinto", "copy", "mailbox"]; fileinto :copy :create "Archive";'
        self.assertEqual(sieve(script), [KEEP, FileInto("Archive", create=True)])

    def test_fileinto_inbox_is_keep(self):
        self.assertEqual(sieve('require "fileinto"; fileinto "INBOX"; keep;'), [KEEP])

    def test_redirect_copy(self):
        script = 'require "copy"; redirect :copy "x@example.com";'
        self.assertEqual(sieve(script), [KEEP, Redirect("x@example.com")])

    def test_reject_and_ereject(self):
        self.assertEqual(sieve('require "reject"; reject "no";'), [Reject("no")])
        self.assertEqual(sieve('require "ereject"; ereject "no";'), [Reject("no", True)])
        self.assertRaises(SieveRuntimeError, sieve, 'require ["reject", "fileinto"]; fileinto "a"; reject "no";')

    def test_envelope(self):
        script = 'require "envelope"; if envelope :domain :is "from" "desert.example.org" { discard; }'
        self.assertEqual(sieve(script), [Discard()])
        script = 'require "envelope"; if envelope :is "from" "" { discard; }'
        self.assertEqual(sieve(script, sender=""), [Discard()])

    def test_subaddress(self):
        script = '''require ["envelope", "subaddress", "fileinto"];
            if envelope :detail "to" "lists" { fileinto "lists"; }
            if address :user "cc" "bob" { addflag "x"; }'''
        self.assertRaises(Exception, sieve, script)  # addflag needs imap4flags
        script = '''require ["envelope", "subaddress", "fileinto"];
            if envelope :detail "to" "lists" { fileinto "lists"; }
            if address :detail "cc" "friends" { fileinto "friends"; }
            if envelope :detail "from" "" { fileinto "never"; }'''
        self.assertEqual(sieve(script, recipient="me+lists@example.com"), [FileInto("lists"), FileInto("friends")])

    def test_imap4flags(self):
        # RFC 5232 section 6, shortened.
        script = '''require ["imap4flags", "fileinto", "variables"];
            addflag "\\\\Flagged";
            addflag "\\\\flagged Junk";
            removeflag "junk";
            if hasflag :contains "flag" { fileinto :flags "\\\\Seen" "seen"; }
            setflag "mine" "a b";
            addflag "mine" "c";
            if hasflag :count "eq" "mine" "3" { fileinto "three"; }'''
        script = 'require "relational";' + script
        self.assertEqual(sieve(script), [FileInto("seen", ("\\Seen",)), FileInto("three", ("\\Flagged",))])
        self.assertEqual(sieve('require "imap4flags"; addflag ["\\\\Seen", "x"]; removeflag "X";'), [FileInto("INBOX", ("\\Seen",))])

    def test_variables(self):
        # RFC 5229 section 3 and 4.
        script = '''require ["variables", "fileinto"];
            set "honorific" "Mr";
            set "first_name" "Wile";
            set "last_name" "Coyote";
            set :lower :upperfirst "b" "${first_name}";
            set :length "n" "${last_name}";
            set :quotewildcard "q" "a*b";
            if header :matches "subject" "I have * present*" {
                fileinto "${honorific}.${b}.${n}.${1}.${q}.${unknown}";
            }'''
        self.assertEqual(sieve(script), [FileInto("Mr.Wile.6.a.a\\*b.")])

    def test_string_test(self):
        script = 'require "variables"; set "a" "x"; if string :is "${a}" "x" { discard; }'
        self.assertEqual(sieve(script), [Discard()])

    def test_relational(self):
        script = 'require "relational"; if address :count "ge" ["to", "cc"] "3" { discard; }'
        self.assertEqual(sieve(script), [Discard()])
        script = 'require ["relational", "comparator-i;ascii-numeric"]; if header :value "gt" :comparator "i;ascii-numeric" "x-n" "9" { discard; }'
        self.assertEqual(sieve(script, message=b"X-N: 10\n\n"), [Discard()])
        self.assertEqual(sieve(script, message=b"X-N: 8\n\n"), [KEEP])

    def test_regex(self):
        script = '''require ["regex", "variables", "fileinto"];
            if header :regex "subject" "^I (have|had) a ([a-z]+)" { fileinto "${1}-${2}"; }'''
        self.assertEqual(sieve(script), [FileInto("have-present")])

    def test_regex_input_is_bounded(self):
        script = 'require "regex"; if header :regex "subject" "z$" { discard; }'
        message = b"Subject: " + b"a" * 10000 + b"z\n\n"
        self.assertEqual(sieve(script, message=message), [KEEP])

    def test_body(self):
        message = (
            b"Content-Type: multipart/alternative; boundary=b\n\n--b\nContent-Type: text/plain\n\n"
            b"plain words\n--b\nContent-Type: text/html\nContent-Transfer-Encoding: base64\n\n"
            b"PGI+aHRtbCB3b3JkczwvYj4=\n--b--\n"
        )
        self.assertEqual(sieve('require "body"; if body :text :contains "plain words" { discard; }', message=message), [Discard()])
        self.assertEqual(
            sieve('require "body"; if body :content "text/html" :contains "html words" { discard; }', message=message),
            [Discard()],
        )
        self.assertEqual(sieve('require "body"; if body :raw :contains "PGI+" { discard; }', message=message), [Discard()])
        self.assertEqual(sieve('require "body"; if body :text :contains "PGI+" { discard; }', message=message), [KEEP])

    def test_date(self):
        # RFC 5260 section 4 and 5.
        script = '''require ["date", "relational", "fileinto"];
            if date :is "date" "year" "1997" { fileinto "1997"; }
            if date :zone "+0000" :is "date" "hour" "17" { fileinto "utc"; }
            if date :originalzone :is "date" "zone" "-0800" { fileinto "zone"; }
            if date :is "date" "weekday" "2" { fileinto "tuesday"; }
            if currentdate :is "date" "2026-12-04" { fileinto "today"; }
            if currentdate :value "ge" "iso8601" "2026-12-04T16" { fileinto "later"; }'''
        self.assertEqual(
            [a.folder for a in sieve(script)], ["1997", "utc", "zone", "tuesday", "today", "later"]
        )

    def test_index(self):
        message = b"Received: from a; Tue, 1 Apr 1997 09:00:00 +0000\nReceived: from b; Wed, 2 Apr 1997 09:00:00 +0000\n\n"
        script = '''require ["date", "index", "fileinto"];
            if date :index 1 "received" "day" "01" { fileinto "first"; }
            if date :index 1 :last "received" "day" "02" { fileinto "last"; }
            if header :index 2 :contains "received" "from b" { fileinto "second"; }'''
        self.assertEqual([a.folder for a in sieve(script, message=message)], ["first", "last", "second"])

    def test_include(self):
        includes = {
            ("personal", "lists"): 'require ["fileinto", "include"]; fileinto "lists"; return; fileinto "never";',
            ("global", "spam"): 'require ["variables", "include"]; global "verdict"; set "verdict" "spam";',
        }
        script = '''require ["include", "variables", "fileinto"];
            global "verdict";
            include :personal "lists";
            include :global "spam";
            include :optional "missing";
            if string :is "${verdict}" "spam" { fileinto "Junk"; }'''
        self.assertEqual(sieve(script, includes=includes), [FileInto("lists"), FileInto("Junk")])

    def test_include_loop_and_missing(self):
        includes = {("personal", "a"): 'require "include"; include "a";'}
        self.assertRaises(SieveRuntimeError, sieve, 'require "include"; include "a";', includes=includes)
        self.assertRaises(SieveRuntimeError, sieve, 'require "include"; include "missing";')
        includes = {("personal", "a"): 'require "include"; include :once "a";'}
        self.assertEqual(sieve('require "include"; include "a";', includes=includes), [KEEP])

    def test_vacation(self):
        # RFC 5230 section 4.
        script = '''require "vacation";
            vacation :days 23 :addresses ["tjs@example.edu", "ts4z@landru.example.edu"]
                     :subject "Out" :from "me@example.edu" :handle "h" "I'm away until October 19.";'''
        [keep, vacation] = sieve(script)
        self.assertEqual(keep, KEEP)
        self.assertEqual(vacation, Vacation(
            "I'm away until October 19.", 23 * 86400, "h", "Out", "me@example.edu",
            ("tjs@example.edu", "ts4z@landru.example.edu"),
        ))

    def test_vacation_period_bounds(self):
        [_, vacation] = sieve('require "vacation"; vacation :days 0 "x";')
        self.assertEqual(vacation.period, 86400)
        [_, vacation] = sieve('require "vacation-seconds"; vacation :seconds 0 "x";')
        self.assertEqual(vacation.period, 0)
        self.assertRaises(SieveRuntimeError, sieve, 'require ["vacation", "reject"]; vacation "x"; reject "y";')


class MatchBoundsTests(SynchronousTestCase):
    def test_glob_match(self):
        from mailserver.sieve.match import glob_match

        for pattern, value, expected in [
            ("*", "", True), ("a*b", "axxb", True), ("a?b", "ab", False), ("*a*a*b", "xaxab", True),
            ("\\*x", "*x", True), ("\\*x", "ax", False), ("*.com", "example.org", False), ("", "", True),
        ]:
            self.assertEqual(glob_match(pattern, value), expected, (pattern, value))

    def test_regression_matches_many_wildcards_linear(self):
        """
        :matches with many stars against a long value that does not match
        is decided in linear steps; the lazy regex alone backtracked
        polynomially in the value length (O(n^stars)) and never finished.
        """
        script = 'if header :matches "subject" "*a*a*a*a*a*a*a*b" { discard; }'
        message = b"Subject: " + b"a" * 60000 + b"\n\n"
        self.assertEqual(sieve(script, message=message), [KEEP])

    def test_regression_regex_nested_quantifiers_linear(self):
        """
        :regex "(a+)+b" or "a*a*a*a*b" over a long run of "a" was exponential
        or polynomial with Python's backtracking re; RE2 matches in linear time.
        """
        message = b"Subject: " + b"a" * 4000 + b"\n\n"
        for pattern in ("(a+)+b", "a*a*a*a*a*a*a*b", "(a|aa)+b"):
            script = 'require "regex"; if header :regex "subject" "%s" { discard; }' % pattern
            self.assertEqual(sieve(script, message=message), [KEEP])
