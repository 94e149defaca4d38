"""ManageSieve: protocol tests on StringTransport, a loopback session, and sieve-connect when installed."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess

from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.portal import Portal
from twisted.internet import task
from twisted.internet.testing import StringTransport
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from mailserver.auth.realm import MailRealm
from mailserver.auth.throttle import AuthThrottle
from mailserver.interfaces import ISieveScripts
from mailserver.sieve.account import Quotas, sieve_account_factory
from mailserver.sieve.checker import EXTENSIONS
from mailserver.managesieve.server import ManageSieveFactory, run_now
from mailserver.sieve.scripts import UserScripts
from tests.harness import RunningServer

PLAIN = base64.b64encode(b"\0alice@example.com\0secret")
GOOD = b'require "fileinto"; fileinto "Lists";\r\n'


class _Session:
    def __init__(self, testcase, quotas=Quotas(), allow_plaintext=lambda transport: True, max_literal=1 << 20):
        self.home = os.path.abspath(testcase.mktemp())
        os.makedirs(self.home)
        checker = InMemoryUsernamePasswordDatabaseDontUse(**{"alice@example.com": b"secret"})
        realm = MailRealm({ISieveScripts: sieve_account_factory(lambda user: self.home, quotas)})
        self.clock = task.Clock()
        factory = ManageSieveFactory(
            Portal(realm, [checker]), self.clock, sieve_extensions=EXTENSIONS, allow_plaintext=allow_plaintext,
            throttle=AuthThrottle(self.clock, base_delay=0), run_in_thread=run_now, max_literal=max_literal,
        )
        self.protocol = factory.buildProtocol(None)
        self.transport = StringTransport(peerAddress=None)
        self.protocol.makeConnection(self.transport)

    def send(self, data: bytes) -> bytes:
        self.transport.clear()
        self.protocol.dataReceived(data)
        self.clock.advance(0)
        return self.transport.value()

    def login(self) -> bytes:
        return self.send(b'AUTHENTICATE "PLAIN" "' + PLAIN + b'"\r\n')


class ProtocolTests(SynchronousTestCase):
    def session(self, **kw) -> _Session:
        return _Session(self, **kw)

    def test_greeting_capabilities(self):
        s = self.session()
        greeting = s.transport.value()
        self.assertIn(b'"IMPLEMENTATION" "mailserver"\r\n', greeting)
        self.assertIn(b'"SASL" "PLAIN"\r\n', greeting)
        self.assertIn(b'"VERSION" "1.0"\r\n', greeting)
        self.assertIn(b"vacation", greeting)
        self.assertTrue(greeting.endswith(b'OK "mailserver ManageSieve ready."\r\n'))

    def test_sieve_capability_names_the_injected_extensions(self):
        """The SIEVE capability is what service.py passes in, sorted, comparators left out."""
        factory = ManageSieveFactory(None, task.Clock(), sieve_extensions={"vacation", "comparator-i;octet", "fileinto"})
        self.assertEqual(factory.sieve_capability, "fileinto vacation")

    def test_commands_need_authentication(self):
        s = self.session()
        self.assertTrue(s.send(b"LISTSCRIPTS\r\n").startswith(b"NO "))

    def test_authenticate_inline_and_continued(self):
        s = self.session()
        self.assertEqual(s.login(), b'OK "Logged in."\r\n')
        s = self.session()
        self.assertEqual(s.send(b'AUTHENTICATE "PLAIN"\r\n'), b'""\r\n')
        self.assertEqual(s.send(b'"' + PLAIN + b'"\r\n'), b'OK "Logged in."\r\n')

    def test_wrong_password(self):
        s = self.session()
        wrong = base64.b64encode(b"\0alice@example.com\0nope")
        self.assertEqual(s.send(b'AUTHENTICATE "PLAIN" "' + wrong + b'"\r\n'), b'NO "Authentication failed."\r\n')

    def test_plaintext_refused_without_tls(self):
        s = self.session(allow_plaintext=lambda transport: False)
        self.assertIn(b'"SASL" ""', s.transport.value())
        self.assertIn(b"NO (ENCRYPT-NEEDED)", s.login())

    def test_putscript_literal_and_listing(self):
        s = self.session()
        s.login()
        reply = s.send(b'PUTSCRIPT "main" {%d+}\r\n%s\r\n' % (len(GOOD), GOOD))
        self.assertEqual(reply, b'OK "Putscript completed."\r\n')
        self.assertEqual(s.send(b'SETACTIVE "main"\r\n'), b'OK "Setactive completed."\r\n')
        self.assertEqual(s.send(b"LISTSCRIPTS\r\n"), b'"main" ACTIVE\r\nOK "Listscripts completed."\r\n')
        self.assertEqual(s.send(b'GETSCRIPT "main"\r\n'), b"{%d}\r\n%s\r\nOK \"Getscript completed.\"\r\n" % (len(GOOD), GOOD))
        self.assertEqual(os.readlink(os.path.join(s.home, ".dovecot.sieve")), "sieve/main.sieve")

    def test_literal_split_across_packets(self):
        s = self.session()
        s.login()
        s.send(b'PUTSCRIPT "main" {%d}\r\n' % len(GOOD))
        s.send(GOOD[:5])
        self.assertEqual(s.send(GOOD[5:] + b"\r\n"), b'OK "Putscript completed."\r\n')

    def test_putscript_error_names_the_line(self):
        s = self.session()
        s.login()
        bad = b'require "fileinto";\r\nfileinto;\r\n'
        reply = s.send(b'PUTSCRIPT "bad" {%d+}\r\n%s\r\n' % (len(bad), bad))
        self.assertTrue(reply.startswith(b'NO "line 2: '), reply)
        self.assertEqual(s.send(b"LISTSCRIPTS\r\n"), b'OK "Listscripts completed."\r\n')
        self.assertTrue(s.send(b'CHECKSCRIPT {%d+}\r\n%s\r\n' % (len(bad), bad)).startswith(b'NO "line 2'))
        self.assertEqual(s.send(b'CHECKSCRIPT "keep;"\r\n'), b'OK "Script is valid."\r\n')

    def test_script_names_never_escape(self):
        s = self.session()
        s.login()
        for name in (b"../evil", b"a/b", b".hidden", b""):
            reply = s.send(b'PUTSCRIPT "' + name + b'" "keep;"\r\n')
            self.assertTrue(reply.startswith(b"NO"), (name, reply))
        self.assertEqual(os.listdir(s.home), [])

    def test_quotas(self):
        s = self.session(quotas=Quotas(max_script_size=100, max_scripts=1, max_storage=150))
        s.login()
        self.assertEqual(s.send(b'HAVESPACE "a" 50\r\n'), b'OK "Putscript would succeed."\r\n')
        self.assertIn(b"NO (QUOTA/MAXSIZE)", s.send(b'HAVESPACE "a" 500\r\n'))
        s.send(b'PUTSCRIPT "a" "keep;"\r\n')
        self.assertIn(b"NO (QUOTA/MAXSCRIPTS)", s.send(b'PUTSCRIPT "b" "keep;"\r\n'))

    def test_literal_too_large_refused(self):
        s = self.session(max_literal=10)
        s.login()
        reply = s.send(b'PUTSCRIPT "a" {20+}\r\n' + b"x" * 20 + b"\r\n")
        self.assertIn(b"NO (QUOTA/MAXSIZE)", reply)
        self.assertEqual(s.send(b"NOOP\r\n"), b'OK "Done"\r\n')

    def test_delete_rename(self):
        s = self.session()
        s.login()
        s.send(b'PUTSCRIPT "a" "keep;"\r\n')
        s.send(b'SETACTIVE "a"\r\n')
        self.assertIn(b"NO (ACTIVE)", s.send(b'DELETESCRIPT "a"\r\n'))
        self.assertEqual(s.send(b'RENAMESCRIPT "a" "b"\r\n'), b'OK "Renamescript completed."\r\n')
        self.assertEqual(s.send(b"LISTSCRIPTS\r\n"), b'"b" ACTIVE\r\nOK "Listscripts completed."\r\n')
        self.assertIn(b"NO (NONEXISTENT)", s.send(b'GETSCRIPT "a"\r\n'))
        s.send(b'SETACTIVE ""\r\n')
        self.assertEqual(s.send(b'DELETESCRIPT "b"\r\n'), b'OK "Deletescript completed."\r\n')

    def test_noop_tag_logout_unauthenticate(self):
        s = self.session()
        self.assertEqual(s.send(b'NOOP "t1"\r\n'), b'OK (TAG "t1") "Done"\r\n')
        s.login()
        self.assertEqual(s.send(b"UNAUTHENTICATE\r\n"), b'OK "Unauthenticated."\r\n')
        self.assertTrue(s.send(b"LISTSCRIPTS\r\n").startswith(b"NO"))
        self.assertEqual(s.send(b"LOGOUT\r\n"), b'OK "Logout completed."\r\n')
        self.assertTrue(s.transport.disconnecting)

    def test_bad_commands_disconnect(self):
        s = self.session()
        for _ in range(9):
            s.send(b"FROB\r\n")
        self.assertIn(b"BYE", s.send(b"FROB\r\n"))
        self.assertTrue(s.transport.disconnecting)

    def test_idle_timeout(self):
        s = self.session()
        s.clock.advance(601)
        self.assertIn(b'BYE "Disconnected for inactivity."', s.transport.value())

    def test_long_line_disconnects(self):
        s = self.session()
        self.assertIn(b"BYE", s.send(b"NOOP " + b"x" * 9000 + b"\r\n"))


class LoopbackTests(TestCase):
    """The listener built by service.py: a real session, and sieve-connect when it is installed."""

    timeout = 60

    def setUp(self):
        self.server = RunningServer(self, listeners=("smtpd_listen", "managesieve_listen"))
        return self.server.start()

    def test_session(self):
        import socket

        def talk():
            with socket.create_connection(("127.0.0.1", self.server.ports["managesieve_listen"]), timeout=30) as sock:
                reader = sock.makefile("rb")
                lines = []
                while not lines or not lines[-1].startswith(b"OK"):
                    lines.append(reader.readline())
                sock.sendall(b'AUTHENTICATE "PLAIN" "' + PLAIN + b'"\r\n')
                lines.append(reader.readline())
                sock.sendall(b'PUTSCRIPT "s" {%d+}\r\n%s\r\nSETACTIVE "s"\r\nLOGOUT\r\n' % (len(GOOD), GOOD))
                lines += [reader.readline() for _ in range(3)]
                return lines

        def check(lines):
            self.assertIn(b'"STARTTLS"\r\n', lines)
            self.assertEqual(lines[-4:], [b'OK "Logged in."\r\n', b'OK "Putscript completed."\r\n',
                                          b'OK "Setactive completed."\r\n', b'OK "Logout completed."\r\n'])
            self.assertEqual(UserScripts(self.server.maildir("alice")).active_name(), "s")

        return deferToThread(talk).addCallback(check)

    def test_sieve_connect(self):
        """sieve-connect (Debian package sieve-connect) uploads, activates and lists over STARTTLS."""
        program = shutil.which("sieve-connect")
        if program is None:
            raise __import__("twisted.trial.unittest", fromlist=["SkipTest"]).SkipTest("sieve-connect not installed")
        script = os.path.abspath(self.mktemp())
        with open(script, "wb") as handle:
            handle.write(GOOD)
        port = str(self.server.ports["managesieve_listen"])
        base = [program, "--server", "127.0.0.1", "--port", port, "--user", "alice@example.com",
                "--passwordfd", "0", "--authmech", "PLAIN", "--noclearauth"]

        def run():
            env = dict(os.environ, HOME=os.path.dirname(script))
            outputs = []
            for extra in (["--upload", "--localsieve", script, "--remotesieve", "main"],
                          ["--activate", "--remotesieve", "main"], ["--list"]):
                done = subprocess.run(base + ["--notlsverify"] + extra, input=b"secret\n", capture_output=True,
                                      timeout=30, env=env)
                outputs.append((done.returncode, done.stdout + done.stderr))
            return outputs

        def check(outputs):
            for code, output in outputs:
                self.assertEqual(code, 0, output)
            self.assertIn(b"main", outputs[-1][1])
            self.assertEqual(UserScripts(self.server.maildir("alice")).active_name(), "main")

        return deferToThread(run).addCallback(check)


class LimitTests(SynchronousTestCase):
    def factory(self, **limits):
        from mailserver.limits import LoginLimits

        clock = task.Clock()
        checker = InMemoryUsernamePasswordDatabaseDontUse(**{"alice@example.com": b"secret"})
        home = os.path.abspath(self.mktemp())
        realm = MailRealm({ISieveScripts: sieve_account_factory(lambda user: home, Quotas())})
        return clock, ManageSieveFactory(
            Portal(realm, [checker]), clock, sieve_extensions=EXTENSIONS, allow_plaintext=lambda t: True, run_in_thread=run_now,
            throttle=AuthThrottle(clock, base_delay=0), limits=LoginLimits("managesieve", **limits),
        )

    def connect(self, factory):
        from twisted.internet.address import IPv4Address

        protocol = factory.buildProtocol(None)
        transport = StringTransport(peerAddress=IPv4Address("TCP", "192.0.2.1", 5000))
        protocol.makeConnection(transport)
        return protocol, transport

    def test_per_ip_limit(self):
        _, factory = self.factory(per_ip_limit=1)
        first, _ = self.connect(factory)
        _, transport = self.connect(factory)
        self.assertTrue(transport.value().startswith(b"BYE (TRYLATER)"))
        first.connectionLost(None)
        _, transport = self.connect(factory)
        self.assertIn(b"OK", transport.value())

    def test_login_timeout(self):
        clock, factory = self.factory(login_timeout=60)
        _, transport = self.connect(factory)
        clock.advance(61)
        self.assertIn(b'BYE "Login timeout."', transport.value())
