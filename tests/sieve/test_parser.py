"""The Sieve grammar and the checker: what is accepted, what is refused and on which line."""

from twisted.trial.unittest import SynchronousTestCase

from mailserver.sieve.checker import compile_script
from mailserver.sieve.parser import SieveError, StringList, Tag, parse


class ParserTests(SynchronousTestCase):
    def test_tokens(self):
        [command] = parse(b'fileinto :copy ["a", "b\\"c"] 10K;')
        self.assertEqual(command.arguments, [Tag("copy"), StringList(("a", 'b"c')), 10240])

    def test_multiline_dot_stuffing(self):
        [command] = parse(b"vacation text:\r\nline\r\n..dot\r\n.\r\n;")
        self.assertEqual(command.arguments[0].values, ("line\n.dot\n",))

    def test_comments(self):
        self.assertEqual(len(parse(b"# one\n/* two\n */ keep; # three\n")), 1)

    def test_errors_name_the_line(self):
        for text, line in [(b"keep;\n\nkeep", 3), (b'\n"x";', 2), (b"/* open", 1), (b'keep "unterminated', 1)]:
            with self.assertRaises(SieveError) as caught:
                parse(text)
            self.assertEqual(caught.exception.line, line, text)

    def test_nesting_bounded(self):
        text = b"if true {" * 40 + b"}" * 40
        self.assertRaises(SieveError, parse, text)

    def test_not_utf8(self):
        self.assertRaises(SieveError, parse, b'keep "\xff";')


class CheckerTests(SynchronousTestCase):
    def assertRefused(self, text, fragment):
        with self.assertRaises(SieveError) as caught:
            compile_script(text)
        self.assertIn(fragment, str(caught.exception))

    def test_extension_must_be_required(self):
        self.assertRefused('fileinto "x";', 'require "fileinto"')
        self.assertRefused('require "fileinto"; fileinto :copy "x";', 'require "copy"')
        self.assertRefused('if header :regex "a" "b" {}', 'require "regex"')

    def test_unknown(self):
        self.assertRefused('require "nosuch";', "unsupported extension")
        self.assertRefused("frobnicate;", "unknown command")
        self.assertRefused("if keep {}", "unknown test")
        self.assertRefused('if header :frob "a" "b" {}', "no tag :frob")

    def test_shapes(self):
        self.assertRefused("if size 10 {}", ":over or :under")
        self.assertRefused("if size :over {}", "takes 1 argument")
        self.assertRefused('if header :is :contains "a" "b" {}', "conflicts")
        self.assertRefused("else {}", "without if")
        self.assertRefused('keep; require "fileinto";', "require")
        self.assertRefused("if true;", "needs block")
        self.assertRefused('if header :comparator "i;nope" "a" "b" {}', "unknown comparator")

    def test_regex_refused_when_unsupported(self):
        self.assertRefused('require "regex"; if header :regex "s" "(a)\\\\1" {}', "bad regex")
        self.assertRefused('require "regex"; if header :regex "s" "(" {}', "bad regex")
        self.assertRefused('require "regex"; if header :regex "s" "' + "a" * 600 + '" {}', "longer than")

    def test_encoded_character(self):
        script = compile_script('require ["encoded-character", "fileinto"]; fileinto "${hex:40 41}${unicode:263a}";')
        self.assertEqual(script.commands[0].args, ["@A\u263a"])
        script = compile_script('require ["fileinto"]; fileinto "${hex:40}";')
        self.assertEqual(script.commands[0].args, ["${hex:40}"])
