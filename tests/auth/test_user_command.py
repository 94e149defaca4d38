"""Tests for mailserver.cli.user: editing the passwd-file from the admin tool."""

from __future__ import annotations

import argparse
import fcntl
import getpass
import io
import os
import stat
import subprocess
import sys
import threading
from types import SimpleNamespace

from twisted.trial.unittest import SynchronousTestCase

from mailserver.auth import schemes
from mailserver.auth.schemes import verify
from mailserver.cli import user as user_cli
from mailserver.tables.passwd import parse_passwd
from tests.auth.test_schemes import FAST

SHA = "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1"
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


class UserCommandTests(SynchronousTestCase):
    def setUp(self) -> None:
        directory = os.path.abspath(self.mktemp())
        os.mkdir(directory)
        self.path = os.path.join(directory, "passwd")
        self.config = SimpleNamespace(
            passwd_file=self.path, default_password_scheme="ARGON2ID", data_directory=directory
        )
        self.patch(schemes, "DEFAULT_PARAMETERS", FAST)
        self.stdout = io.StringIO()
        self.stderr = io.StringIO()
        self.patch(sys, "stdout", self.stdout)
        self.patch(sys, "stderr", self.stderr)

    def run_command(self, argv: list[str], stdin: str = "") -> int:
        self.patch(sys, "stdin", io.StringIO(stdin))
        parser = argparse.ArgumentParser(prog="mailserver")
        user_cli.register(parser.add_subparsers(dest="command"))
        args = parser.parse_args(argv)
        return args.func(args, self.config)

    def write(self, data: bytes, mode: int = 0o600) -> None:
        with open(self.path, "wb") as f:
            f.write(data)
        os.chmod(self.path, mode)

    def read(self) -> bytes:
        with open(self.path, "rb") as f:
            return f.read()

    def records(self):
        records, problems = parse_passwd(self.read().decode(), self.path)
        self.assertEqual([p for p in problems if p.severity == "error"], [])
        return records

    # --- add ---

    def test_add_creates_file_0600_with_lock(self) -> None:
        self.assertEqual(self.run_command(["user", "add", "Alice@Example.COM"], "s3cret pass\n"), 0)
        record = self.records()["alice@example.com"]
        self.assertEqual(record.name, "Alice@example.com")
        self.assertEqual(record.scheme, "ARGON2ID")
        self.assertTrue(verify(record.scheme, record.password, b"s3cret pass"))
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o600)
        self.assertTrue(os.path.exists(self.path + ".lock"))
        self.assertEqual(stat.S_IMODE(os.stat(self.path + ".lock").st_mode), 0o600)
        self.assertEqual(self.read().count(b"\n"), 1)
        # No temporary file is left behind.
        self.assertEqual(sorted(os.listdir(os.path.dirname(self.path))), ["passwd", "passwd.lock"])

    def test_add_with_fields_and_scheme(self) -> None:
        argv = ["user", "add", "bob@example.com", "--uid", "5000", "--gid", "5001", "--home", "/srv/mail/bob",
                "--scheme", "sha512-crypt"]
        self.assertEqual(self.run_command(argv, "pw\r\n"), 0)
        record = self.records()["bob@example.com"]
        self.assertEqual((record.scheme, record.uid, record.gid, record.home), ("SHA512-CRYPT", 5000, 5001, "/srv/mail/bob"))
        self.assertTrue(verify(record.scheme, record.password, b"pw"))

    def test_add_keeps_other_lines_byte_for_byte(self) -> None:
        before = (
            "# comment \u00e9\r\n\r\n"
            f"carol@example.org:{{SHA512-CRYPT}}{SHA}:1:1:Carol, gecos:/h:/bin/false:a=b\r\n"
            "   # indented\n"
            f"dave:{{SHA512-CRYPT}}{SHA}"  # no final newline
        ).encode()
        self.write(before, mode=0o640)
        self.assertEqual(self.run_command(["user", "add", "erin"], "pw\n"), 0)
        after = self.read()
        self.assertTrue(after.startswith(before + b"\nerin:{ARGON2ID}$argon2id$"), after)
        self.assertTrue(after.endswith(b"\n"))
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o640)

    def test_add_refuses_existing_user(self) -> None:
        self.write(f"alice@example.com:{{SHA512-CRYPT}}{SHA}\n".encode())
        before = self.read()
        self.assertEqual(self.run_command(["user", "add", "ALICE@example.com"], "pw\n"), 1)
        self.assertIn("already exists", self.stderr.getvalue())
        self.assertEqual(self.read(), before)

    def test_usage_errors(self) -> None:
        for argv in (
            ["user", "add", "a:b"],
            ["user", "add", "a b"],
            ["user", "add", "alice@"],
            ["user", "add", "alice", "--uid", "1"],
            ["user", "add", "alice", "--home", "relative/dir"],
            ["user", "passwd", "x@y@z"],
            ["user", "del", ""],
        ):
            self.assertEqual(self.run_command(argv, "pw\n"), 2, argv)
        self.assertFalse(os.path.exists(self.path))
        self.assertEqual(len(self.stderr.getvalue().splitlines()), 7)

    def test_regression_user_add_refuses_path_like_names(self) -> None:
        """Issue 17 item 3: names that are paths, or not addresses, are refused (exit 2), the file untouched."""
        names = ("../x@example.test", "x@../../tmp", "../../../tmp/pwned", "x@example.test.", "a/b@example.test",
                 "x@exa..mple.test", ".", "..", "x@-bad.test", "a..b@example.test")
        for name in names:
            self.assertEqual(self.run_command(["user", "add", name], "pw\n"), 2, name)
            self.assertEqual(self.run_command(["user", "passwd", name], "pw\n"), 2, name)
        self.assertFalse(os.path.exists(self.path))
        self.assertIn("user name '../x@example.test'", self.stderr.getvalue())

    def test_user_del_removes_an_entry_the_daemon_skips(self) -> None:
        self.write(f"x@example.test.:{{SHA512-CRYPT}}{SHA}\nbob@example.test:{{SHA512-CRYPT}}{SHA}\n".encode())
        self.assertEqual(self.run_command(["user", "del", "x@example.test."]), 0)
        self.assertEqual(self.read(), f"bob@example.test:{{SHA512-CRYPT}}{SHA}\n".encode())

    def test_argparse_errors_exit_2(self) -> None:
        for argv in (["user"], ["user", "add"], ["user", "add", "a", "--uid", "x"], ["user", "add", "a", "--scheme", "MD5"]):
            with self.assertRaises(SystemExit) as caught:
                self.run_command(argv)
            self.assertEqual(caught.exception.code, 2, argv)

    def test_empty_password_is_refused(self) -> None:
        self.assertEqual(self.run_command(["user", "add", "alice"], "\n"), 1)
        self.assertEqual(self.run_command(["user", "add", "alice"], ""), 1)
        self.assertIn("empty password", self.stderr.getvalue())
        self.assertFalse(os.path.exists(self.path))

    def test_password_never_from_argv(self) -> None:
        with self.assertRaises(SystemExit):
            self.run_command(["user", "add", "alice", "secret"])

    def test_bad_default_scheme(self) -> None:
        self.config.default_password_scheme = "MD5-CRYPT"
        self.assertEqual(self.run_command(["user", "add", "alice"], "pw\n"), 1)
        self.assertIn("MD5-CRYPT", self.stderr.getvalue())

    def test_blf_crypt_long_password(self) -> None:
        self.assertEqual(self.run_command(["user", "add", "alice", "--scheme", "BLF-CRYPT"], "x" * 73 + "\n"), 1)
        self.assertIn("72 bytes", self.stderr.getvalue())

    def test_terminal_asks_twice(self) -> None:
        answers = iter(["tty-pass", "tty-pass", "one", "other"])
        prompts = []

        def fake_getpass(prompt: str = "") -> str:
            prompts.append(prompt)
            return next(answers)

        self.patch(getpass, "getpass", fake_getpass)
        self.patch(sys, "stdin", TTY())
        parser = argparse.ArgumentParser()
        user_cli.register(parser.add_subparsers())
        args = parser.parse_args(["user", "add", "alice"])
        self.assertEqual(args.func(args, self.config), 0)
        record = self.records()["alice"]
        self.assertTrue(verify(record.scheme, record.password, b"tty-pass"))
        self.assertEqual(len(prompts), 2)
        self.assertIn("alice", prompts[0])
        args = parser.parse_args(["user", "passwd", "alice"])
        self.assertEqual(args.func(args, self.config), 1)
        self.assertIn("do not match", self.stderr.getvalue())
        self.assertTrue(verify(record.scheme, self.records()["alice"].password, b"tty-pass"))

    # --- passwd ---

    def test_passwd_changes_only_the_password(self) -> None:
        other = f"alice:{{SHA512-CRYPT}}{SHA}:1:2:Alice, Room 1:/home/alice:/bin/sh:quota_rule=*:storage=1G\r\n"
        self.write(f"# users\nbob:{{SHA512-CRYPT}}{SHA}\n{other}".encode())
        self.assertEqual(self.run_command(["user", "passwd", "ALICE", "--scheme", "BLF-CRYPT"], "new\n"), 0)
        lines = self.read().decode().split("\n")
        self.assertEqual(lines[:2], ["# users", f"bob:{{SHA512-CRYPT}}{SHA}"])
        self.assertTrue(lines[2].startswith("alice:{BLF-CRYPT}$2y$04$"), lines[2])
        self.assertTrue(lines[2].endswith(":1:2:Alice, Room 1:/home/alice:/bin/sh:quota_rule=*:storage=1G\r"), lines[2])
        record = self.records()["alice"]
        self.assertTrue(verify(record.scheme, record.password, b"new"))
        self.assertEqual(record.extra, {"quota_rule": "*:storage=1G"})

    def test_passwd_uses_default_scheme(self) -> None:
        self.write(f"alice:{{SHA512-CRYPT}}{SHA}\n".encode())
        self.assertEqual(self.run_command(["user", "passwd", "alice"], "new\n"), 0)
        self.assertEqual(self.records()["alice"].scheme, "ARGON2ID")

    def test_passwd_absent_user(self) -> None:
        self.write(f"alice:{{SHA512-CRYPT}}{SHA}\n".encode())
        before = self.read()
        self.assertEqual(self.run_command(["user", "passwd", "bob"], "new\n"), 1)
        self.assertIn("no user bob", self.stderr.getvalue())
        self.assertEqual(self.read(), before)

    # --- del ---

    def test_del(self) -> None:
        self.write(f"# a\nalice@example.com:{{SHA512-CRYPT}}{SHA}\r\n# b\nbob:{{SHA512-CRYPT}}{SHA}".encode())
        self.assertEqual(self.run_command(["user", "del", "Alice@EXAMPLE.com"]), 0)
        self.assertEqual(self.read(), f"# a\n# b\nbob:{{SHA512-CRYPT}}{SHA}".encode())
        self.assertEqual(self.run_command(["user", "del", "alice@example.com"]), 1)
        self.assertIn("no user alice@example.com", self.stderr.getvalue())

    def test_del_missing_file(self) -> None:
        self.assertEqual(self.run_command(["user", "del", "alice"]), 1)
        self.assertFalse(os.path.exists(self.path))

    # --- list ---

    def test_list(self) -> None:
        self.write(f"# c\nalice@example.com:{{SHA512-CRYPT}}{SHA}:1:2::/h\nbob:{{PLAIN}}x\n".encode())
        self.assertEqual(self.run_command(["user", "list"]), 0)
        self.assertEqual(self.stdout.getvalue(), "alice@example.com\tSHA512-CRYPT\t1\t2\t/h\nbob\tPLAIN\t-\t-\t-\n")
        self.assertIn(f"{self.path}:3: warning: plaintext password", self.stderr.getvalue())

    def test_list_reports_errors(self) -> None:
        self.write(f"alice:{{SHA512-CRYPT}}{SHA}\nbroken\n".encode())
        self.assertEqual(self.run_command(["user", "list"]), 1)
        self.assertEqual(self.stdout.getvalue(), "alice\tSHA512-CRYPT\t-\t-\t-\n")
        self.assertIn(f"{self.path}:2: error:", self.stderr.getvalue())

    # --- safety ---

    def test_file_with_errors_is_not_edited(self) -> None:
        self.write(f"alice:{{SHA512-CRYPT}}{SHA}\nalice:{{PLAIN}}dup\n".encode())
        before = self.read()
        for argv in (["user", "add", "bob"], ["user", "passwd", "alice"], ["user", "del", "alice"]):
            self.assertEqual(self.run_command(argv, "pw\n"), 1, argv)
        self.assertEqual(self.read(), before)
        self.assertIn(f"{self.path}:2: error: duplicate user", self.stderr.getvalue())

    def test_waits_for_the_lock(self) -> None:
        self.write(b"# existing\n")
        waiting = threading.Event()
        outer_stderr = self.stderr

        class Signalling(io.StringIO):
            def write(self, text: str) -> int:
                if "waiting for the lock" in text:
                    waiting.set()
                return super().write(text)

        self.patch(sys, "stderr", Signalling())
        self.patch(sys, "stdin", io.StringIO("pw\n"))
        parser = argparse.ArgumentParser()
        user_cli.register(parser.add_subparsers())
        args = parser.parse_args(["user", "add", "alice"])
        result = []
        lock = os.open(self.path + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            worker = threading.Thread(target=lambda: result.append(args.func(args, self.config)))
            worker.start()
            self.assertTrue(waiting.wait(30), "the command did not wait for the lock")
            self.assertEqual(self.read(), b"# existing\n")
            self.assertEqual(result, [])
        finally:
            os.close(lock)
        worker.join(30)
        self.assertEqual(result, [0])
        self.assertIn("alice", self.records())
        self.assertEqual(outer_stderr.getvalue(), "")

    def test_concurrent_processes_lose_no_edit(self) -> None:
        script = (
            "import io, sys, types\n"
            "from mailserver.auth import schemes\n"
            "from tests.auth.test_schemes import FAST\n"
            "schemes.DEFAULT_PARAMETERS = FAST\n"
            "from mailserver.cli.user import run_add\n"
            "config = types.SimpleNamespace(passwd_file=sys.argv[1], default_password_scheme='SHA512-CRYPT', data_directory=sys.argv[1] + '.data')\n"
            "for n in range(15):\n"
            "    sys.stdin = io.StringIO('pw\\n')\n"
            "    args = types.SimpleNamespace(name=f'u{n}-' + sys.argv[2], home=None, uid=None, gid=None, scheme=None)\n"
            "    if run_add(args, config):\n"
            "        sys.exit(1)\n"
        )
        env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
        names = [f"user{i}@example.com" for i in range(8)]
        processes = [
            subprocess.Popen([sys.executable, "-c", script, self.path, name], env=env, cwd=REPO)
            for name in names
        ]
        for process in processes:
            process.wait(timeout=120)
        self.assertEqual([p.returncode for p in processes], [0] * len(names))
        self.assertEqual(sorted(self.records()), sorted(f"u{n}-{name}" for name in names for n in range(15)))

    def test_errors_reported_before_asking_for_password(self) -> None:
        self.write(b"broken\n")
        self.patch(sys, "stdin", TTY())
        self.patch(getpass, "getpass", lambda prompt="": self.fail("asked for a password"))
        parser = argparse.ArgumentParser()
        user_cli.register(parser.add_subparsers())
        for argv in (["user", "add", "bob"], ["user", "passwd", "broken"]):
            args = parser.parse_args(argv)
            self.assertEqual(args.func(args, self.config), 1)
        self.assertEqual(self.read(), b"broken\n")
