"""The sendmail command: flags, message preparation, maildrop file, exit codes."""

from __future__ import annotations

import argparse
import email
import errno
import io
import json
import os
import sys
from types import SimpleNamespace

from twisted.trial.unittest import SynchronousTestCase

from mailserver.cli import sendmail
from mailserver.cli.sendmail import (
    EX_CANTCREAT,
    EX_DATAERR,
    EX_NOPERM,
    EX_NOUSER,
    EX_OK,
    EX_SOFTWARE,
    EX_TEMPFAIL,
    EX_USAGE,
    UsageError,
    deliver,
    parse_arguments,
    register,
    run,
)
from mailserver.queue import submission


class ArgumentTests(SynchronousTestCase):
    def test_recipients_after_double_dash(self) -> None:
        options = parse_arguments(["-oi", "--", "bob@example.org", "-carol"])
        self.assertTrue(options.ignore_dots)
        self.assertEqual(options.recipients, ["bob@example.org", "-carol"])

    def test_recipients_end_options(self) -> None:
        self.assertEqual(parse_arguments(["bob", "-t"]).recipients, ["bob", "-t"])

    def test_values_attached_or_separate(self) -> None:
        self.assertEqual(parse_arguments(["-fa@example.com"]).sender, "a@example.com")
        self.assertEqual(parse_arguments(["-f", "a@example.com"]).sender, "a@example.com")
        self.assertEqual(parse_arguments(["-r", "<a@example.com>"]).sender, "a@example.com")
        self.assertEqual(parse_arguments(["-f", "<>"]).sender, "")
        self.assertEqual(parse_arguments(["-f", ""]).sender, "")
        self.assertEqual(parse_arguments(["-F", "Alice A."]).fullname, "Alice A.")

    def test_combined_flags(self) -> None:
        options = parse_arguments(["-ti"])
        self.assertTrue(options.extract and options.ignore_dots)

    def test_ignored_flags_accepted(self) -> None:
        options = parse_arguments(
            ["-oem", "-oee", "-odi", "-odb", "-oQ/var/spool", "-B8BITMIME", "-N", "success,failure",
             "-R", "hdrs", "-V", "envid", "-m", "-v", "-n", "-U", "-bm", "-h", "5", "--", "bob"]
        )  # fmt: skip
        self.assertEqual(options.mode, "deliver")
        self.assertEqual(options.recipients, ["bob"])
        self.assertIn("-oem", options.ignored)
        self.assertIn("-Nsuccess,failure", options.ignored)

    def test_modes(self) -> None:
        self.assertEqual(parse_arguments(["-bp"]).mode, "mailq")
        self.assertEqual(parse_arguments(["-q"]).mode, "flush")
        self.assertEqual(parse_arguments(["-q30m"]).mode, "flush")
        self.assertEqual(parse_arguments(["-C", "/etc/x.cf", "bob"]).config_path, "/etc/x.cf")

    def test_usage_errors(self) -> None:
        for argv in (["-Z"], ["-f"], ["-bs"], ["-bd"], ["-bv", "bob"], ["-bi"], ["-I"], ["-bx"]):
            self.assertRaises(UsageError, parse_arguments, argv)


class SubmissionTests(SynchronousTestCase):
    def test_lone_dot_ends_input_unless_ignored(self) -> None:
        lines = [b"Subject: x\n", b"\n", b"a\n", b".\n", b"after\n"]
        self.assertEqual(submission.collect_message(lines, False), b"Subject: x\n\na\n")
        self.assertEqual(submission.collect_message(lines, True), b"Subject: x\n\na\n.\nafter\n")

    def test_crlf_normalised_and_mbox_line_dropped(self) -> None:
        lines = [b"From alice Mon Jan  1 00:00:00 2024\r\n", b"Subject: x\r\n", b"\r\n", b"body"]
        self.assertEqual(submission.collect_message(lines, True), b"Subject: x\n\nbody\n")

    def test_size_limit(self) -> None:
        self.assertRaises(submission.MessageTooLarge, submission.collect_message, [b"x" * 100 + b"\n"], True, 50)

    def test_extract_and_remove_bcc(self) -> None:
        message = b"To: A <a@example.org>, b@example.org\nCc: c@example.org\nBcc: hidden@example.org,\n more@example.org\nSubject: s\n\nBcc: body@example.org\n"
        self.assertEqual(
            submission.extract_recipients(message),
            ["a@example.org", "b@example.org", "c@example.org", "hidden@example.org", "more@example.org"],
        )
        stripped = submission.remove_headers(message, ["Bcc"])
        self.assertNotIn(b"hidden", stripped)
        self.assertNotIn(b"more@", stripped)
        self.assertIn(b"Bcc: body@example.org", stripped)  # the body is untouched

    def test_resent_headers_win(self) -> None:
        message = b"To: old@example.org\nResent-To: new@example.org\n\nx\n"
        self.assertEqual(submission.extract_recipients(message), ["new@example.org"])

    def test_headers_added_only_when_missing(self) -> None:
        message = b"Subject: s\nDate: yesterday\n\nbody\n"
        out = submission.add_missing_headers(message, [("Date", "now"), ("From", "a@b")])
        self.assertEqual(out, b"Subject: s\nDate: yesterday\nFrom: a@b\n\nbody\n")

    def test_headers_added_to_a_body_only_message(self) -> None:
        self.assertEqual(submission.add_missing_headers(b"just text\n", [("From", "a@b")]), b"From: a@b\n\njust text\n")
        self.assertEqual(submission.add_missing_headers(b"", [("From", "a@b")]), b"From: a@b\n\n")

    def test_bare_names_in_headers_qualified(self) -> None:
        message = b"To: root,\n alice\nCc: Bob <bob>\nFrom: carol\nSubject: root\n\nTo: body\n"
        self.assertEqual(
            submission.qualify_header_addresses(message, "example.com"),
            b"To: root@example.com, alice@example.com\nCc: Bob <bob>\nFrom: carol@example.com\n"
            b"Subject: root\n\nTo: body\n",
        )
        untouched = b"To: bob@example.org\n\nx\n"
        self.assertIs(submission.qualify_header_addresses(untouched, "example.com"), untouched)

    def test_qualify(self) -> None:
        self.assertEqual(submission.qualify("root", "example.com"), "root@example.com")
        self.assertEqual(submission.qualify("a@b.example", "example.com"), "a@b.example")
        self.assertEqual(submission.qualify("", "example.com"), "")


class DeliverTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.data = self.mktemp()
        os.mkdir(self.data)
        self.config = SimpleNamespace(
            data_directory=self.data, myorigin="example.com", myhostname="mx.example.com", message_size_limit=10_000
        )
        self.err = io.StringIO()

    def send(self, argv, message=b"Subject: hi\n\nbody\n") -> int:
        options = parse_arguments(argv)
        return deliver(options, self.config, io.BytesIO(message), self.err, login=("alice", "Alice Liddell"), now=1_700_000_000)

    def dropped(self) -> list[tuple[dict, bytes]]:
        maildrop = os.path.join(self.data, "maildrop")
        found = []
        for name in sorted(os.listdir(maildrop)):
            with open(os.path.join(maildrop, name), "rb") as f:
                header, _, message = f.read().partition(b"\n")
            found.append((json.loads(header), message))
        return found

    def test_plain_recipients_qualified(self) -> None:
        self.assertEqual(self.send(["root", "bob@example.org"]), EX_OK)
        [(header, message)] = self.dropped()
        self.assertEqual(header["sender"], "alice@example.com")
        self.assertEqual(header["recipients"], ["root@example.com", "bob@example.org"])
        self.assertFalse(header["flags"]["extract_recipients"])
        parsed = email.message_from_bytes(message)
        self.assertEqual(parsed["From"], "Alice Liddell <alice@example.com>")
        self.assertTrue(parsed["Message-ID"].endswith("@mx.example.com>"))
        self.assertIsNotNone(parsed["Date"])
        self.assertEqual(parsed["Subject"], "hi")

    def test_existing_headers_kept(self) -> None:
        message = b"From: Boss <boss@example.com>\nDate: Mon, 1 Jan 2024 00:00:00 +0000\nMessage-ID: <x@y>\n\nb\n"
        self.send(["bob@example.org"], message)
        [(_, stored)] = self.dropped()
        self.assertEqual(stored, message)

    def test_t_extracts_and_removes_bcc(self) -> None:
        message = b"To: bob@example.org\nCc: carol\nBcc: secret@example.net\nSubject: s\n\nbody\n"
        self.assertEqual(self.send(["-t", "extra@example.org"], message), EX_OK)
        [(header, stored)] = self.dropped()
        self.assertEqual(
            header["recipients"],
            ["extra@example.org", "bob@example.org", "carol@example.com", "secret@example.net"],
        )
        self.assertTrue(header["flags"]["extract_recipients"])
        self.assertNotIn(b"secret", stored)

    def test_i_keeps_lone_dots(self) -> None:
        message = b"Subject: s\n\none\n.\ntwo\n"
        self.send(["-i", "bob@example.org"], message)
        self.send(["bob@example.org"], message)
        stored = sorted(m for _, m in self.dropped())
        self.assertTrue(any(m.endswith(b"one\n.\ntwo\n") for m in stored))
        self.assertTrue(any(m.endswith(b"one\n") for m in stored))

    def test_oi_same_as_i(self) -> None:
        self.send(["-oi", "bob@example.org"], b"Subject: s\n\n.\nrest\n")
        self.assertTrue(self.dropped()[0][1].endswith(b"\n.\nrest\n"))

    def test_f_sets_envelope_sender_and_from(self) -> None:
        self.send(["-f", "list-bounces@example.com", "bob@example.org"])
        [(header, message)] = self.dropped()
        self.assertEqual(header["sender"], "list-bounces@example.com")
        self.assertIn(b"From: Alice Liddell <list-bounces@example.com>", message)

    def test_f_null_sender(self) -> None:
        self.send(["-f", "<>", "bob@example.org"])
        [(header, message)] = self.dropped()
        self.assertEqual(header["sender"], "")
        self.assertIn(b"From: Alice Liddell <alice@example.com>", message)

    def test_f_bare_name_qualified(self) -> None:
        self.send(["-f", "root", "bob@example.org"])
        self.assertEqual(self.dropped()[0][0]["sender"], "root@example.com")

    def test_F_full_name(self) -> None:
        self.send(["-F", "The Boss", "bob@example.org"])
        self.assertIn(b"From: The Boss <alice@example.com>", self.dropped()[0][1])

    def test_double_dash(self) -> None:
        self.assertEqual(self.send(["-oem", "-oi", "--", "bob@example.org", "carol"]), EX_OK)
        self.assertEqual(self.dropped()[0][0]["recipients"], ["bob@example.org", "carol@example.com"])

    def test_flags_mutt_and_snail_pass(self) -> None:
        argv = ["-oem", "-oi", "-B8BITMIME", "-N", "failure,delay", "-R", "hdrs", "-m", "-v", "-odi", "--", "bob@example.org"]
        self.assertEqual(self.send(argv), EX_OK)
        self.assertEqual(len(self.dropped()), 1)

    def test_comma_separated_recipient_argument(self) -> None:
        self.send(["bob@example.org, Carol <carol@example.org>"])
        self.assertEqual(self.dropped()[0][0]["recipients"], ["bob@example.org", "carol@example.org"])

    def test_duplicates_removed(self) -> None:
        self.send(["bob@example.org", "bob@example.org"])
        self.assertEqual(self.dropped()[0][0]["recipients"], ["bob@example.org"])

    # exit codes

    def test_no_recipients_is_usage(self) -> None:
        self.assertEqual(self.send([]), EX_USAGE)
        self.assertEqual(self.send(["-t"], b"Subject: none\n\nx\n"), EX_USAGE)
        self.assertIn("no recipients", self.err.getvalue())

    def test_bad_recipient_is_nouser(self) -> None:
        self.assertEqual(self.send(["bob@@example.org"]), EX_NOUSER)
        self.assertFalse(os.path.exists(os.path.join(self.data, "maildrop")))

    def test_bad_sender_is_dataerr(self) -> None:
        self.assertEqual(self.send(["-f", "a b@example.com", "bob@example.org"]), EX_DATAERR)

    def test_too_large_is_dataerr(self) -> None:
        self.assertEqual(self.send(["bob@example.org"], b"Subject: x\n\n" + b"y" * 20_000), EX_DATAERR)

    def test_unwritable_maildrop_is_cantcreat(self) -> None:
        with open(os.path.join(self.data, "maildrop"), "w") as f:
            f.write("not a directory")
        self.assertEqual(self.send(["bob@example.org"]), EX_CANTCREAT)

    def test_permission_denied_is_noperm(self) -> None:
        import mailserver.queue.pickup as pickup

        def denied(*args, **kw):
            raise PermissionError(errno.EACCES, "Permission denied")

        self.patch(pickup, "write_pickup", denied)
        self.assertEqual(self.send(["bob@example.org"]), EX_NOPERM)

    def test_disk_full_is_tempfail(self) -> None:
        import mailserver.queue.pickup as pickup

        def full(*args, **kw):
            raise OSError(errno.ENOSPC, "No space left on device")

        self.patch(pickup, "write_pickup", full)
        self.assertEqual(self.send(["bob@example.org"]), EX_TEMPFAIL)

    def test_mailq_and_flush_modes(self) -> None:
        out, err = io.StringIO(), io.StringIO()
        self.assertEqual(run(parse_arguments(["-bp"]), self.config, io.BytesIO(), out, err), EX_OK)
        self.assertEqual(out.getvalue(), "Mail queue is empty\n")
        self.assertEqual(run(parse_arguments(["-q"]), self.config, io.BytesIO(), out, err), EX_OK)
        self.assertTrue(os.path.exists(os.path.join(self.data, "queue", "flush")))


class EntryPointTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.data = os.path.abspath(self.mktemp())
        os.mkdir(self.data)
        self.config = SimpleNamespace(data_directory=self.data, myorigin="example.com", myhostname="mx.example.com")
        self.patch(sys, "stdin", SimpleNamespace(buffer=io.BytesIO(b"Subject: s\n\nx\n")))
        self.patch(sys, "stderr", io.StringIO())

    def test_register_passes_every_word(self) -> None:
        parser = argparse.ArgumentParser()
        register(parser.add_subparsers())
        args = parser.parse_args(["sendmail", "-t", "-oi", "-f", "a@example.com", "--", "bob"])
        self.assertEqual(args.sendmail_args, ["-t", "-oi", "-f", "a@example.com", "--", "bob"])
        self.assertIs(args.func, sendmail.run_sendmail)

    def test_run_sendmail(self) -> None:
        args = SimpleNamespace(sendmail_args=["-f", "a@example.com", "bob@example.org"])
        self.assertEqual(sendmail.run_sendmail(args, self.config), EX_OK)
        self.assertEqual(len(os.listdir(os.path.join(self.data, "maildrop"))), 1)

    def test_run_sendmail_usage(self) -> None:
        self.assertEqual(sendmail.run_sendmail(SimpleNamespace(sendmail_args=["-Z"]), self.config), EX_USAGE)

    def test_internal_error_is_software(self) -> None:
        def broken(*args, **kw):
            raise RuntimeError("bug")

        self.patch(sendmail, "deliver", broken)
        args = SimpleNamespace(sendmail_args=["bob@example.org"])
        self.assertEqual(sendmail.run_sendmail(args, self.config), EX_SOFTWARE)

    def test_sendmail_main_with_config_file(self) -> None:
        main_cf = os.path.join(self.data, "main.cf")
        os.mkdir(os.path.join(self.data, "state"))  # made by the daemon's first start
        with open(main_cf, "w") as f:
            f.write(f"myhostname = mx.example.com\nmyorigin = example.com\ndata_directory = {self.data}/state\n")
        self.assertEqual(sendmail.sendmail_main(["-C", main_cf, "-f", "a@example.com", "root"]), EX_OK)
        [name] = os.listdir(os.path.join(self.data, "state", "maildrop"))
        with open(os.path.join(self.data, "state", "maildrop", name), "rb") as f:
            header = json.loads(f.readline())
        self.assertEqual(header["recipients"], ["root@example.com"])

    def test_sendmail_main_bad_config(self) -> None:
        self.assertEqual(sendmail.sendmail_main(["-C", os.path.join(self.data, "missing.cf"), "root"]), 78)
