"""Tests for alias file and command targets: mailserver.delivery.mbox and local_targets."""

from __future__ import annotations

import errno
import os
import pwd
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from types import SimpleNamespace

from twisted.internet import reactor
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from mailserver.delivery import local_targets, mbox
from mailserver.envelope import CommandTarget, FileTarget
from mailserver.delivery.local_targets import (
    ChildResult,
    append_as,
    deliver_to_command,
    deliver_to_file,
    resolve_run_as,
)
from mailserver.errors import MailError

NOW = 1700000000.0
MESSAGE = b"Subject: hello\n\nFrom the start\nbody\n>From quoted\n"
NOBODY = pwd.getpwnam("nobody")
ROOT = os.geteuid() == 0


def shared_directory(case: SynchronousTestCase) -> str:
    """
    A temporary directory that the unprivileged user can reach and write
    (trial's own temporary directories are private to their owner).
    """
    path = tempfile.mkdtemp(prefix="mailserver-test-")
    case.addCleanup(shutil.rmtree, path, True)
    os.chmod(path, 0o777)
    return path


def unprivileged_run_as() -> tuple[int, int]:
    return resolve_run_as(0, None, "nobody") if ROOT else (os.getuid(), os.getgid())


def python_for_nobody() -> str | None:
    """An interpreter the unprivileged user can run (ours may live in root's home)."""
    for candidate in (sys.executable, "/usr/bin/python3", "/usr/local/bin/python3"):
        try:
            if subprocess.run(
                [candidate, "-I", "-S", mbox.__file__], user=NOBODY.pw_uid, group=NOBODY.pw_gid,
                extra_groups=[], capture_output=True, timeout=60, cwd="/",
            ).returncode == 1:  # fmt: skip
                return candidate  # mbox.py ran and complained about its arguments
        except OSError:
            continue
    return None


class MboxFormatTests(SynchronousTestCase):
    def test_record(self) -> None:
        record = mbox.format_message("harry@example.com", MESSAGE, NOW)
        first, rest = record.split(b"\n", 1)
        self.assertRegex(first.decode(), r"^From harry@example\.com \w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}$")
        self.assertEqual(rest, b"Subject: hello\n\n>From the start\nbody\n>From quoted\n\n")

    def test_null_sender_and_crlf(self) -> None:
        record = mbox.format_message("", b"Subject: x\r\n\r\nno final newline", NOW)
        self.assertTrue(record.startswith(b"From MAILER-DAEMON "))
        self.assertTrue(record.endswith(b"\nSubject: x\n\nno final newline\n\n"))
        self.assertNotIn(b"\r", record)

    def test_only_line_starts_quoted(self) -> None:
        record = mbox.format_message("a@b", b"x\n\nsay From here\nFromage\n", NOW)
        self.assertTrue(record.endswith(b"\nsay From here\nFromage\n\n"))


class MboxCorpusTests(SynchronousTestCase):
    def test_corpus(self) -> None:
        """Every real-world message becomes one record: one separator, nothing lost."""
        repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        corpus = os.path.join(os.path.dirname(repo), "shared", "corpus", "mail-fixtures")
        if not os.path.isdir(corpus):
            raise self.skipTest(f"no corpus at {corpus}")
        count = 0
        for directory, _, names in os.walk(corpus):
            for name in names:
                with open(os.path.join(directory, name), "rb") as handle:
                    message = handle.read()
                record = mbox.format_message("a@example.com", message, NOW)
                lines = record.split(b"\n")
                self.assertEqual([line.startswith(b"From ") for line in lines].count(True), 1, name)
                self.assertTrue(record.endswith(b"\n\n"), name)
                normal = message.replace(b"\r\n", b"\n")
                if normal and not normal.endswith(b"\n"):
                    normal += b"\n"
                quoted = b"\n".join(b">" + line if line.startswith(b"From ") else line for line in normal.split(b"\n"))
                self.assertEqual(record[len(lines[0]) + 1 : -1], quoted, name)
                count += 1
        self.assertGreater(count, 100)


class MboxAppendTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.path = os.path.join(self.directory, "mbox")

    def test_create_and_append(self) -> None:
        mbox.append(self.path, b"one\n\n")
        mbox.append(self.path, b"two\n\n")
        with open(self.path, "rb") as handle:
            self.assertEqual(handle.read(), b"one\n\ntwo\n\n")
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o600)

    def test_symlink_refused(self) -> None:
        target = os.path.join(self.directory, "target")
        open(target, "wb").close()
        os.symlink(target, self.path)
        error = self.assertRaises(OSError, mbox.append, self.path, b"x")
        self.assertEqual(error.errno, errno.ELOOP)
        self.assertEqual(os.path.getsize(target), 0)

    def test_hard_link_refused(self) -> None:
        target = os.path.join(self.directory, "target")
        open(target, "wb").close()
        os.link(target, self.path)
        error = self.assertRaises(OSError, mbox.append, self.path, b"x")
        self.assertEqual(error.errno, errno.EMLINK)
        self.assertEqual(os.path.getsize(target), 0)

    def test_not_a_regular_file(self) -> None:
        fifo = os.path.join(self.directory, "fifo")
        os.mkfifo(fifo)
        self.assertRaises(OSError, mbox.append, fifo, b"x")
        self.assertRaises(OSError, mbox.append, self.directory, b"x")

    def test_locked(self) -> None:
        """Another process holds the lock: EAGAIN after the attempts, nothing written."""
        open(self.path, "wb").close()
        holder = subprocess.Popen(
            [sys.executable, "-c",
             "import fcntl, sys; f = open(sys.argv[1], 'ab'); fcntl.lockf(f, fcntl.LOCK_EX);"
             " print('locked', flush=True); sys.stdin.read()", self.path],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )  # fmt: skip
        self.addCleanup(holder.wait)
        self.addCleanup(holder.stdin.close)
        self.assertEqual(holder.stdout.readline(), b"locked\n")
        sleeps: list[float] = []
        error = self.assertRaises(OSError, mbox.append, self.path, b"x", 3, 0.5, sleeps.append)
        self.assertEqual(error.errno, errno.EAGAIN)
        self.assertEqual(sleeps, [0.5, 0.5])
        self.assertEqual(os.path.getsize(self.path), 0)

    def test_failed_write_cut_back(self) -> None:
        mbox.append(self.path, b"one\n\n")

        def broken(fd: int) -> None:
            raise OSError(errno.EIO, "I/O error")

        self.patch(mbox.os, "fsync", broken)
        self.assertRaises(OSError, mbox.append, self.path, b"two\n\n")
        with open(self.path, "rb") as handle:
            self.assertEqual(handle.read(), b"one\n\n")

    def test_file_errors(self) -> None:
        cases = {
            errno.ENOSPC: (452, "4.3.1"),
            errno.EDQUOT: (552, "5.2.2"),
            errno.EAGAIN: (451, "4.2.0"),
            errno.EACCES: (550, "5.2.0"),
            errno.ELOOP: (550, "5.2.0"),
        }
        for number, expected in cases.items():
            error = local_targets._file_error(number, "why")
            self.assertEqual((error.code, error.enhanced), expected, number)


class ResolveRunAsTests(SynchronousTestCase):
    def test_owner(self) -> None:
        self.assertEqual(resolve_run_as(NOBODY.pw_uid, None, "root"), (NOBODY.pw_uid, NOBODY.pw_gid))
        self.assertEqual(resolve_run_as(NOBODY.pw_uid, 1234, "nobody"), (NOBODY.pw_uid, 1234))

    def test_root_or_unknown_owner_uses_default_privs(self) -> None:
        self.assertEqual(resolve_run_as(0, 0, "nobody"), (NOBODY.pw_uid, NOBODY.pw_gid))
        self.assertEqual(resolve_run_as(None, None, "nobody"), (NOBODY.pw_uid, NOBODY.pw_gid))

    def test_default_privs_root_refused(self) -> None:
        error = self.assertRaises(MailError, resolve_run_as, 0, 0, "root")
        self.assertEqual((error.code, error.enhanced), (550, "5.7.1"))

    def test_unknown_users(self) -> None:
        error = self.assertRaises(MailError, resolve_run_as, None, None, "no-such-user-here")
        self.assertEqual((error.code, error.enhanced), (451, "4.3.0"))
        unknown = 4000000
        while True:
            try:
                pwd.getpwuid(unknown)
            except KeyError:
                break
            unknown += 1
        error = self.assertRaises(MailError, resolve_run_as, unknown, None, "nobody")
        self.assertEqual((error.code, error.enhanced), (451, "4.3.0"))


class FakeTransport:
    def __init__(self) -> None:
        self.stdin = b""
        self.closed = False
        self.signals: list[str] = []

    def write(self, data: bytes) -> None:
        self.stdin += data

    def closeStdin(self) -> None:
        self.closed = True

    def signalProcess(self, signal: str) -> None:
        self.signals.append(signal)


class FakeProcessReactor(Clock):
    """A clock that records spawnProcess calls and connects a fake transport."""

    def __init__(self) -> None:
        super().__init__()
        self.spawned: list[SimpleNamespace] = []

    def spawnProcess(self, protocol, executable, args, env=None, path=None, uid=None, gid=None, usePTY=0, childFDs=None):
        transport = FakeTransport()
        self.spawned.append(SimpleNamespace(
            protocol=protocol, executable=executable, args=args, env=env, path=path, uid=uid, gid=gid,
            transport=transport,
        ))  # fmt: skip
        protocol.makeConnection(transport)
        return transport


class CommandWithFakeReactorTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = FakeProcessReactor()
        self.reactor.advance(NOW)
        self.patch(local_targets, "_geteuid", lambda: 0)
        self.run_as = (NOBODY.pw_uid, NOBODY.pw_gid)

    def deliver(self, command: str = "/usr/bin/procmail", **kwargs):
        options = dict(run_as=self.run_as, timeout=100.0)
        options.update(kwargs)
        return deliver_to_command(
            self.reactor, CommandTarget(command), "sender@example.org", "list@example.com", MESSAGE, **options
        )

    def test_never_as_root(self) -> None:
        """Security: a command never runs with uid or gid 0."""
        for run_as in ((0, 0), (0, 100), (100, 0)):
            error = self.failureResultOf(self.deliver(run_as=run_as), MailError).value
            self.assertEqual((error.code, error.enhanced), (550, "5.7.1"))
        self.assertEqual(self.reactor.spawned, [])

    def test_spawn(self) -> None:
        d = self.deliver(original_recipient="staff@example.com")
        [child] = self.reactor.spawned
        self.assertEqual(child.args, ["/bin/sh", "-c", "/usr/bin/procmail"])
        self.assertEqual((child.uid, child.gid, child.path), (NOBODY.pw_uid, NOBODY.pw_gid, "/"))
        self.assertEqual(child.env["SENDER"], "sender@example.org")
        self.assertEqual(child.env["RECIPIENT"], "list@example.com")
        self.assertEqual(child.env["ORIGINAL_RECIPIENT"], "staff@example.com")
        self.assertEqual((child.env["LOCAL"], child.env["DOMAIN"]), ("list", "example.com"))
        self.assertEqual(child.env["PATH"], "/usr/bin:/bin")
        self.assertEqual((child.env["USER"], child.env["HOME"]), (NOBODY.pw_name, NOBODY.pw_dir))
        self.assertEqual(child.env["SHELL"], NOBODY.pw_shell)
        self.assertTrue(child.transport.stdin.startswith(b"From sender@example.org "))
        self.assertTrue(child.transport.stdin.endswith(b"\n" + MESSAGE))
        self.assertTrue(child.transport.closed)
        self.assertNoResult(d)
        child.protocol.processEnded(Failure(ProcessDone(0)))
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_unprivileged_daemon_runs_as_itself(self) -> None:
        self.patch(local_targets, "_geteuid", lambda: NOBODY.pw_uid)
        self.deliver(run_as=(4242, 4242))
        [child] = self.reactor.spawned
        self.assertEqual((child.uid, child.gid), (None, None))
        self.assertEqual(child.env["USER"], NOBODY.pw_name)

    def test_timeout(self) -> None:
        d = self.deliver()
        [child] = self.reactor.spawned
        self.reactor.advance(99)
        self.assertEqual(child.transport.signals, [])
        self.reactor.advance(1)
        self.assertEqual(child.transport.signals, ["KILL"])
        child.protocol.processEnded(Failure(ProcessTerminated(signal=9)))
        error = self.failureResultOf(d, MailError).value
        self.assertEqual((error.code, error.enhanced, error.text), (451, "4.3.0", "Command time limit exceeded"))

    def test_exit_statuses(self) -> None:
        cases = [
            (ProcessTerminated(exitCode=75), b"try later\n", (451, "4.3.0", "Command temporarily failed: try later")),
            (ProcessTerminated(exitCode=67), b"\n  no such user\x07\n", (550, "5.3.0", "Command failed with status 67: no such user?")),
            (ProcessTerminated(exitCode=1), b"", (550, "5.3.0", "Command failed with status 1")),
            (ProcessTerminated(signal=11), b"", (451, "4.3.0", "Command died with signal 11")),
        ]  # fmt: skip
        for reason, output, expected in cases:
            d = self.deliver()
            child = self.reactor.spawned[-1]
            child.protocol.childDataReceived(2, output)
            child.protocol.processEnded(Failure(reason))
            error = self.failureResultOf(d, MailError).value
            self.assertEqual((error.code, error.enhanced, error.text), expected)

    def test_output_bounded(self) -> None:
        d = self.deliver()
        child = self.reactor.spawned[-1]
        for _ in range(100):
            child.protocol.childDataReceived(1, b"x" * 1000)
        self.assertEqual(len(child.protocol.output), local_targets._OUTPUT_LIMIT)
        child.protocol.processEnded(Failure(ProcessTerminated(exitCode=1)))
        self.assertEqual(len(self.failureResultOf(d, MailError).value.text), len("Command failed with status 1: ") + 200)

    def test_first_line(self) -> None:
        self.assertEqual(ChildResult(1, None, b"\n\n  hello \xff world \nnext\n").first_line(), "hello ? world")


class CommandTests(TestCase):
    """Real /bin/sh commands, run as nobody when the tests run as root."""

    def setUp(self) -> None:
        self.directory = shared_directory(self)
        self.run_as = unprivileged_run_as()

    def deliver(self, command: str, **kwargs):
        return deliver_to_command(
            reactor, CommandTarget(command), "sender@example.org", "list@example.com", MESSAGE,
            self.run_as, 60.0, **kwargs,
        )  # fmt: skip

    async def test_cat_to_file(self) -> None:
        out = os.path.join(self.directory, "out")
        await self.deliver(f"cat > {out}")
        with open(out, "rb") as handle:
            data = handle.read()
        self.assertTrue(data.startswith(b"From sender@example.org "))
        self.assertTrue(data.endswith(b"\n" + MESSAGE))

    async def test_identity_and_environment(self) -> None:
        """Security: the command runs as the unprivileged user, without root's groups."""
        out = os.path.join(self.directory, "env")
        await self.deliver(
            f'{{ id -u; id -g; id -G; echo "$SENDER"; echo "$RECIPIENT"; echo "$PATH"; pwd; }} > {out}'
        )
        with open(out) as handle:
            uid, gid, groups, sender, recipient, path, cwd = handle.read().splitlines()
        self.assertEqual((int(uid), int(gid)), self.run_as)
        if ROOT:
            self.assertNotIn("0", groups.split())
        self.assertEqual((sender, recipient, path, cwd), ("sender@example.org", "list@example.com", "/usr/bin:/bin", "/"))

    async def test_tempfail(self) -> None:
        with self.assertRaises(MailError) as caught:
            await self.deliver("echo busy; exit 75")
        self.assertEqual((caught.exception.code, caught.exception.enhanced), (451, "4.3.0"))
        self.assertIn("busy", caught.exception.text)

    async def test_failure_with_stderr(self) -> None:
        with self.assertRaises(MailError) as caught:
            await self.deliver("cat > /dev/null; echo 'unknown list' >&2; exit 67")
        self.assertEqual(
            (caught.exception.code, caught.exception.enhanced, caught.exception.text),
            (550, "5.3.0", "Command failed with status 67: unknown list"),
        )

    async def test_killed(self) -> None:
        with self.assertRaises(MailError) as caught:
            await self.deliver("kill -9 $$")
        self.assertEqual((caught.exception.code, caught.exception.enhanced), (451, "4.3.0"))
        self.assertIn("signal 9", caught.exception.text)

    async def test_command_that_ignores_stdin(self) -> None:
        await self.deliver("exit 0")


class FileDeliveryTests(TestCase):
    def setUp(self) -> None:
        self.directory = shared_directory(self)

    def test_refused_as_root(self) -> None:
        """Security: file deliveries never run as root."""
        self.patch(local_targets, "_geteuid", lambda: 0)
        target = FileTarget(os.path.join(self.directory, "mbox"))
        for run_as in (None, (0, 0), (NOBODY.pw_uid, 0)):
            error = self.failureResultOf(deliver_to_file(reactor, target, "a@b", MESSAGE, run_as), MailError).value
            self.assertEqual((error.code, error.enhanced), (550, "5.7.1"))
        self.assertFalse(os.path.exists(target.path))

    def test_dev_null(self) -> None:
        self.successResultOf(deliver_to_file(reactor, FileTarget("/dev/null"), "a@b", MESSAGE, None))

    async def test_in_thread_when_unprivileged(self) -> None:
        self.patch(local_targets, "_geteuid", lambda: NOBODY.pw_uid)
        path = os.path.join(self.directory, "mbox")
        await deliver_to_file(reactor, FileTarget(path), "harry@example.com", MESSAGE, None, now=NOW)
        await deliver_to_file(reactor, FileTarget(path), "", b"second\n", None, now=NOW)
        with open(path, "rb") as handle:
            records = re.split(rb"^From ", handle.read(), flags=re.MULTILINE)
        self.assertEqual(len(records), 3)
        self.assertTrue(records[1].startswith(b"harry@example.com "))
        self.assertTrue(records[1].endswith(b"\n>From the start\nbody\n>From quoted\n\n"))
        self.assertTrue(records[2].startswith(b"MAILER-DAEMON "))

    async def test_in_thread_error(self) -> None:
        self.patch(local_targets, "_geteuid", lambda: NOBODY.pw_uid)
        with self.assertRaises(MailError) as caught:
            await deliver_to_file(reactor, FileTarget(self.directory), "a@b", MESSAGE, None)
        self.assertEqual((caught.exception.code, caught.exception.enhanced), (550, "5.2.0"))

    async def test_helper_process(self) -> None:
        """The mbox.py child (here as the current user) appends and reports errors."""
        path = os.path.join(self.directory, "mbox")
        await append_as(reactor, path, b"From x\none\n\n", None, None, 60.0)
        with open(path, "rb") as handle:
            self.assertEqual(handle.read(), b"From x\none\n\n")
        with self.assertRaises(MailError) as caught:
            await append_as(reactor, self.directory, b"x", None, None, 60.0)
        self.assertEqual((caught.exception.code, caught.exception.enhanced), (550, "5.2.0"))
        self.assertIn("Is a directory", caught.exception.text)

    async def test_as_unprivileged_user(self) -> None:
        """Security: as root, the append runs as the target user, so the kernel checks permissions."""
        if not ROOT:
            raise self.skipTest("needs root to change user")
        python = python_for_nobody()
        if python is None:
            raise self.skipTest(f"nobody cannot run {sys.executable} or a system python3")
        self.patch(local_targets, "_helper_python", python)
        run_as = unprivileged_run_as()
        path = os.path.join(self.directory, "mbox")
        await deliver_to_file(reactor, FileTarget(path), "a@b", MESSAGE, run_as, now=NOW)
        self.assertEqual(os.stat(path).st_uid, run_as[0])
        private = os.path.join(self.directory, "root-only")
        with open(private, "wb"):
            pass
        os.chmod(private, 0o600)
        with self.assertRaises(MailError) as caught:
            await deliver_to_file(reactor, FileTarget(private), "a@b", MESSAGE, run_as, now=NOW)
        self.assertEqual((caught.exception.code, caught.exception.enhanced), (550, "5.2.0"))
        self.assertEqual(os.path.getsize(private), 0)
