"""
Cross-check with Dovecot Pigeonhole's C{sieve-test} (Debian package
``dovecot-sieve``): the same scripts and message give the same actions.
Skipped when sieve-test is not installed.  sieve-test drops root to
``nobody``, so the files live in a world-readable temporary directory.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from mailserver.sieve.actions import Discard, FileInto, Redirect, Reject
from tests.sieve.support import MESSAGE, sieve

SCRIPTS = [
    'keep;',
    'discard;',
    'require "fileinto"; if header :contains "subject" "present" { fileinto "Gifts"; }',
    'require ["fileinto", "imap4flags"]; addflag "\\\\Flagged"; fileinto :flags "\\\\Seen" "A"; keep;',
    'require ["fileinto", "variables"]; if header :matches "subject" "I have * present*" { fileinto "x-${1}"; }',
    'require ["fileinto", "subaddress", "envelope"]; if envelope :detail "to" "lists" { fileinto "lists"; }',
    'require ["relational", "fileinto"]; if address :count "ge" ["to", "cc"] "3" { fileinto "many"; }',
    'require "fileinto"; if address :is :domain "from" "DESERT.example.org" { fileinto "coyote"; } else { discard; }',
    'require ["body", "fileinto"]; if body :contains "anvil" { fileinto "anvil"; }',
    'require ["regex", "fileinto", "variables"]; if header :regex "subject" "^I (have|had)" { fileinto "r-${1}"; }',
    'require ["date", "fileinto"]; if date :originalzone "date" "hour" "09" { fileinto "nine"; }',
    'require "copy"; redirect :copy "x@example.com"; redirect "y@example.com";',
    'require "reject"; reject "go away";',
    'require "fileinto"; if size :over 100 { fileinto "big"; } if not exists "x-nothere" { fileinto "b"; }',
    'require ["variables", "fileinto"]; set :upperfirst :lower "v" "HELLO"; fileinto "${v}";',
    'require ["encoded-character", "fileinto"]; fileinto "${hex:41 42}${unicode:43}";',
    'require ["index", "date", "fileinto"]; if header :index 1 :last :contains "received" "a" { fileinto "i"; }',
    'require ["relational", "comparator-i;ascii-numeric", "fileinto"]; '
    'if header :value "gt" :comparator "i;ascii-numeric" "x-caffeine" "7" { fileinto "num"; }',
    'require "fileinto"; if header :is "subject" "I HAVE A PRESENT FOR YOU" { fileinto "casemap"; }',
    'require "fileinto"; if header :comparator "i;octet" :is "subject" "I HAVE A PRESENT FOR YOU" { fileinto "octet"; }',
    'require "fileinto"; if address :localpart :contains ["to", "cc"] "bob" { fileinto "bob"; }',
    'require ["fileinto", "subaddress"]; if address :user "cc" "bob" { fileinto "user"; }',
    'require ["fileinto", "subaddress"]; if address :detail "cc" "friends" { fileinto "detail"; }',
    'require ["fileinto", "variables"]; if address :matches "from" "*@*.*" { fileinto "${2}-${3}"; }',
    'require ["fileinto", "envelope"]; if envelope :all :is "from" "COYOTE@desert.example.org" { fileinto "env"; }',
    'require ["body", "fileinto"]; if body :raw :contains "anvil thing" { fileinto "raw"; }',
    'require ["fileinto", "imap4flags"]; setflag "\\Seen"; removeflag "\\seen"; addflag "$a"; keep;',
    'require ["fileinto", "copy"]; fileinto :copy "c"; fileinto "d"; fileinto "d";',
    'if anyof (false, allof (true, not false)) { discard; } keep;',
    'require ["fileinto", "variables", "relational"]; set "a" "x"; set "b" "${a}${a}"; if string :count "eq" ["${b}", ""] "1" { fileinto "one"; }',
]


def _pigeonhole(program: str, directory: str, script: str) -> set:
    path = os.path.join(directory, "s.sieve")
    with open(path, "w") as handle:
        handle.write(script)
    os.chmod(path, 0o644)
    done = subprocess.run(
        [program, "-c", os.path.join(directory, "dovecot.conf"), "-r", "roadrunner+lists@acme.example.com",
         "-f", "coyote@desert.example.org", path, os.path.join(directory, "m.eml")],
        capture_output=True, timeout=30, text=True,
    )
    actions: set = set()
    last = None
    for line in done.stdout.splitlines():
        store = re.match(r"\s*\* store message in folder: (.*)", line)
        if store:
            last = ("store", store.group(1), ())
            actions.add(last)
        elif "+ add IMAP flags:" in line and last is not None:
            actions.discard(last)
            last = ("store", last[1], tuple(sorted(f.lower() for f in line.split(":", 1)[1].split())))
            actions.add(last)
        elif "redirect message to:" in line:
            actions.add(("redirect", line.split("<", 1)[1].rstrip(">"), ()))
        elif re.match(r"\s*\* discard", line):
            actions.add(("discard", "", ()))
        elif "reject message with reason:" in line:
            actions.add(("reject", line.split("reason:", 1)[1].strip(), ()))
    if done.returncode != 0:
        actions.add(("error", done.stdout + done.stderr, ()))
    return actions


def _ours(script: str) -> set:
    out: set = set()
    for action in sieve(script, recipient="roadrunner+lists@acme.example.com"):
        if isinstance(action, FileInto):
            out.add(("store", action.folder, tuple(sorted(f.lower() for f in action.flags))))
        elif isinstance(action, Redirect):
            out.add(("redirect", action.address, ()))
        elif isinstance(action, Discard):
            out.add(("discard", "", ()))
        elif isinstance(action, Reject):
            out.add(("reject", action.reason, ()))
    return out


class PigeonholeCrossCheckTests(SynchronousTestCase):
    def setUp(self):
        self.program = shutil.which("sieve-test")
        if self.program is None:
            raise SkipTest("sieve-test (dovecot-sieve) is not installed")
        self.directory = tempfile.mkdtemp(prefix="sieve-cross-")
        self.addCleanup(shutil.rmtree, self.directory, True)
        os.chmod(self.directory, 0o777)
        with open(os.path.join(self.directory, "m.eml"), "wb") as handle:
            handle.write(MESSAGE.replace(b"To: roadrunner@", b"To: roadrunner+lists@"))
        os.chmod(os.path.join(self.directory, "m.eml"), 0o644)
        with open(os.path.join(self.directory, "dovecot.conf"), "w") as handle:
            handle.write(
                "mail_uid = nobody\nmail_gid = nogroup\nrecipient_delimiter = +\n"
                f"mail_location = maildir:{self.directory}/md\nmail_home = {self.directory}/home\n"
            )

    def test_same_actions(self):
        import tests.sieve.support as support

        original = support.MESSAGE
        support.MESSAGE = MESSAGE.replace(b"To: roadrunner@", b"To: roadrunner+lists@")
        self.addCleanup(setattr, support, "MESSAGE", original)
        mismatches = []
        for script in SCRIPTS:
            theirs = _pigeonhole(self.program, self.directory, script)
            ours = _ours(script)
            if theirs != ours:
                mismatches.append((script, sorted(theirs), sorted(ours)))
        self.assertEqual(mismatches, [])
