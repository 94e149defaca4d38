"""
Optional: Postfix's own lmtp(8) client delivering to us, as in a migration
(docs/lmtp.rst).  A private Postfix instance (its own config, queue and
loopback port) takes mail by SMTP and hands it over LMTP on a unix socket.
Skipped unless Postfix is installed and the tests run as root (master(8)
must start as root).
"""

from __future__ import annotations

import os
import shutil
import smtplib
import socket
import subprocess
import tempfile

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SkipTest, TestCase

from tests.harness import RunningServer

POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"
SERVICES = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def _free_port() -> int:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return port


class PostfixLMTPClientTests(TestCase):
    timeout = 180

    def start_postfix(self, socket_path: str) -> int:
        if not os.path.exists(POSTFIX) or os.geteuid() != 0:
            raise SkipTest("needs Postfix installed and root")
        import pwd

        try:
            owner = pwd.getpwnam("postfix").pw_uid
        except KeyError:
            raise SkipTest("no postfix user") from None
        base = tempfile.mkdtemp(prefix="pf-lmtp-")
        os.chmod(base, 0o755)
        self.addCleanup(shutil.rmtree, base, True)
        for sub in ("etc", "spool", "data"):
            os.mkdir(os.path.join(base, sub))
        os.chown(os.path.join(base, "data"), owner, -1)
        port = _free_port()
        with open(os.path.join(base, "etc", "main.cf"), "w") as handle:
            handle.write(
                "compatibility_level = 3.6\n"
                f"queue_directory = {base}/spool\ndata_directory = {base}/data\n"
                "mail_owner = postfix\nsetgid_group = postdrop\nmyhostname = pf.example.test\n"
                "mydestination = example.com\nlocal_recipient_maps =\n"
                f"local_transport = lmtp:unix:{socket_path}\n"
                "inet_interfaces = 127.0.0.1\ninet_protocols = ipv4\nmynetworks = 127.0.0.0/8\n"
                f"maillog_file = {base}/maillog\nmaillog_file_prefixes = {base}\n"
                "alias_maps =\nalias_database =\nsmtputf8_enable = no\n"
            )
        with open(os.path.join(base, "etc", "master.cf"), "w") as handle:
            handle.write(f"127.0.0.1:{port} inet n - n - - smtpd\n" + SERVICES)
        command = [POSTFIX, "-c", os.path.join(base, "etc")]
        started = subprocess.run(command + ["start"], capture_output=True, timeout=60)
        if started.returncode != 0:
            raise SkipTest(f"private Postfix did not start: {started.stderr[-300:]!r}")
        self.addCleanup(subprocess.run, command + ["stop"], capture_output=True, timeout=60)
        self.maillog = os.path.join(base, "maillog")
        return port

    @inlineCallbacks
    def test_postfix_lmtp_client_delivers(self):
        directory = tempfile.mkdtemp(prefix="lmtp-")
        os.chmod(directory, 0o755)
        self.addCleanup(shutil.rmtree, directory, True)
        path = os.path.join(directory, "lmtp")
        server = RunningServer(
            self, extra=f"lmtp_listen = unix:{path}:mode=666\n", listeners=(),
            user_extra={"bob@example.com": "userdb_quota_rule=*:storage=10"},
        )
        yield server.start()
        port = self.start_postfix(path)

        def send():
            client = smtplib.SMTP("127.0.0.1", port, timeout=30)
            try:
                client.sendmail("s@remote.example", ["alice@example.com", "bob@example.com"],
                                b"Subject: via postfix\r\n\r\nhanded over by lmtp(8)\r\n")
            finally:
                client.quit()

        yield deferToThread(send)
        for _ in range(900):  # bounded: 90 s (Postfix's queue manager on a loaded machine)
            log = self._log()  # Postfix writes its log lines a moment after delivering
            if server.messages("alice") and b"status=bounced" in log and b"to=<alice@example.com>" in log:
                break
            yield deferLater(reactor, 0.1, lambda: None)
        log = self._log()
        self.assertEqual(len(server.messages("alice")), 1, log[-3000:].decode("utf-8", "replace"))
        [message] = server.messages("alice")
        self.assertIn(b"handed over by lmtp(8)", message)
        self.assertIn(b"with LMTP id", message)
        self.assertEqual(server.messages("bob"), [])
        self.assertIn(b"to=<alice@example.com>", log)
        self.assertIn(b"status=sent (250 2.0.0 Ok: queued as", log)
        self.assertIn(b"552 5.2.2", log)  # bob: per-recipient refusal, bounced by Postfix

    def _log(self) -> bytes:
        try:
            with open(self.maillog, "rb") as handle:
                return handle.read()
        except FileNotFoundError:
            return b""
