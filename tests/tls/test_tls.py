"""Tests for mailserver.tls: settings, the self-signed default, contexts, reload, real handshakes."""

from __future__ import annotations

import datetime
import os
import ssl
import stat

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from service_identity import VerificationError
from twisted.internet import reactor
from twisted.internet.address import UNIXAddress
from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, capturedLogs
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from mailserver import tls
from mailserver.config.parameters import TLS_HIGH_CIPHERLIST, parse_config
from tests.tls.support import (
    HOSTNAME,
    EchoFactory,
    TLSStringTransport,
    client_context,
    in_thread,
    listen,
    pair,
    read_line,
    tls_connect,
    write_pair,
)


def config(text: str, base: str):
    conf, _ = parse_config(text, "main.cf", base_directory=base, fqdn=lambda: HOSTNAME)
    return conf


def load(path: str) -> x509.Certificate:
    with open(path, "rb") as f:
        return x509.load_pem_x509_certificate(f.read())


def fingerprint(der: bytes) -> bytes:
    return x509.load_der_x509_certificate(der).fingerprint(hashes.SHA256())


def pem_fingerprint(pem: bytes) -> bytes:
    return x509.load_pem_x509_certificate(pem).fingerprint(hashes.SHA256())


class SettingsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.base = os.path.abspath(self.mktemp())
        os.makedirs(self.base)

    def test_defaults(self) -> None:
        settings = tls.TLSSettings.from_config(config("", self.base))
        self.assertEqual(settings, tls.TLSSettings(None, None, None, "TLSv1.2", "TLSv1.3", TLS_HIGH_CIPHERLIST))

    def test_one_certificate_for_all_services(self) -> None:
        settings = tls.TLSSettings.from_config(config(
            "smtpd_tls_cert_file = /etc/ssl/mail.pem\nsmtpd_tls_key_file = /etc/ssl/mail.key\n", self.base
        ))
        files = tls.CertificateFiles("/etc/ssl/mail.pem", "/etc/ssl/mail.key")
        self.assertEqual((settings.smtpd, settings.imap, settings.pop3), (files, files, files))

    def test_key_in_certificate_file_postfix_style(self) -> None:
        settings = tls.TLSSettings.from_config(config("smtpd_tls_cert_file = both.pem\n", self.base))
        both = os.path.join(self.base, "both.pem")
        self.assertEqual(settings.smtpd, tls.CertificateFiles(both, both))

    def test_per_service_certificate(self) -> None:
        settings = tls.TLSSettings.from_config(config(
            "smtpd_tls_cert_file = /s.pem\nsmtpd_tls_key_file = /s.key\n"
            "imap_tls_cert_file = /i.pem\nimap_tls_key_file = /i.key\n"
            "pop3_tls_cert_file = /p.pem\n",
            self.base,
        ))
        self.assertEqual(settings.smtpd, tls.CertificateFiles("/s.pem", "/s.key"))
        self.assertEqual(settings.imap, tls.CertificateFiles("/i.pem", "/i.key"))
        # Its own certificate but no key of its own: not SMTP's key.
        self.assertEqual(settings.pop3, tls.CertificateFiles("/p.pem", "/p.pem"))

    def test_protocols_and_ciphers(self) -> None:
        settings = tls.TLSSettings.from_config(config(
            "smtpd_tls_mandatory_protocols = >=TLSv1.3\ntls_high_cipherlist = ECDHE+AESGCM\n", self.base
        ))
        self.assertEqual((settings.min_protocol, settings.max_protocol), ("TLSv1.3", "TLSv1.3"))
        self.assertEqual(settings.cipherlist, "ECDHE+AESGCM")


class SelfSignedTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.data = self.mktemp()
        self.now = datetime.datetime.now(datetime.timezone.utc)

    def ensure(self, hostname: str = HOSTNAME, now: datetime.datetime | None = None):
        with capturedLogs() as events:
            paths = tls.ensure_certificate(self.data, hostname, now=lambda: now or self.now, key_type="ec")
        generated = [e for e in events if "generated a self-signed" in e["log_format"]]
        return paths, generated

    def test_generated_for_hostname_and_logged(self) -> None:
        (cert_path, key_path), generated = self.ensure()
        self.assertEqual(os.path.dirname(cert_path), os.path.join(self.data, "tls"))
        cert = load(cert_path)
        self.assertEqual(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value, HOSTNAME)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        self.assertEqual(san.get_values_for_type(x509.DNSName), [HOSTNAME])
        self.assertFalse(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
        lifetime = cert.not_valid_after_utc - self.now
        self.assertEqual(lifetime.days, tls.SELF_SIGNED_DAYS - 1)  # minus a few seconds
        self.assertEqual(len(generated), 1)
        self.assertEqual(generated[0]["hostname"], HOSTNAME)
        self.assertEqual(generated[0]["log_level"], LogLevel.warn)

    def test_key_is_private_and_written_atomically(self) -> None:
        (cert_path, key_path), _ = self.ensure()
        self.assertEqual(stat.S_IMODE(os.stat(key_path).st_mode), 0o600)
        self.assertEqual(stat.S_IMODE(os.stat(os.path.dirname(key_path)).st_mode) & 0o077, 0)
        self.assertEqual(sorted(os.listdir(os.path.dirname(key_path))), [tls.SELF_SIGNED_CERT, tls.SELF_SIGNED_KEY])
        tls.parse_pem_pair(open(cert_path, "rb").read(), open(key_path, "rb").read())  # they match

    def test_generated_once_then_reused(self) -> None:
        (cert_path, _), first = self.ensure()
        before = open(cert_path, "rb").read()
        (again, _), second = self.ensure(now=self.now + datetime.timedelta(days=100))
        self.assertEqual((len(first), len(second)), (1, 0))
        self.assertEqual(again, cert_path)
        self.assertEqual(open(cert_path, "rb").read(), before)

    def test_replaced_for_another_hostname(self) -> None:
        (cert_path, _), _ = self.ensure()
        _, generated = self.ensure("other.example.test")
        self.assertEqual(len(generated), 1)
        self.assertIn("another host name", generated[0]["why"])
        self.assertTrue(tls.covers(load(cert_path), "other.example.test"))

    def test_replaced_before_expiry(self) -> None:
        (cert_path, _), _ = self.ensure()
        later = self.now + datetime.timedelta(days=tls.SELF_SIGNED_DAYS - 20)
        _, generated = self.ensure(now=later)
        self.assertEqual(len(generated), 1)
        self.assertGreater(load(cert_path).not_valid_after_utc, later + datetime.timedelta(days=800))

    def test_replaced_when_damaged(self) -> None:
        (cert_path, key_path), _ = self.ensure()
        with open(key_path, "wb") as f:
            f.write(b"garbage")
        _, generated = self.ensure()
        self.assertEqual(len(generated), 1)
        self.assertIn("unusable", generated[0]["why"])

    def test_rsa_default(self) -> None:
        cert_path, _ = tls.ensure_certificate(self.data, HOSTNAME)
        self.assertEqual(load(cert_path).public_key().key_size, 2048)


class PemTests(SynchronousTestCase):
    def test_key_and_certificate_in_one_file(self) -> None:
        cert, key = pair()
        chain, _ = tls.parse_pem_pair(cert + key, cert + key)
        self.assertEqual(len(chain), 1)

    def test_chain_kept_in_order(self) -> None:
        cert, key = pair()
        other, _ = pair("intermediate.example.test")
        chain, _ = tls.parse_pem_pair(cert + other, key)
        self.assertEqual([c.fingerprint(hashes.SHA256()) for c in chain],
                         [pem_fingerprint(cert), pem_fingerprint(other)])

    def test_errors_name_the_file(self) -> None:
        cert, key = pair()
        _, other_key = pair(serial=1)
        cases = [
            (b"", key, "c.pem: no PEM certificate"),
            (cert, b"", "k.pem: no PEM private key"),
            (cert, other_key, "does not match"),
            (cert, b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n", "encrypted"),
            (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", key, "invalid certificate"),
        ]
        for cert_pem, key_pem, message in cases:
            with self.assertRaises(tls.CertificateError) as caught:
                tls.parse_pem_pair(cert_pem, key_pem, "c.pem", "k.pem")
            self.assertIn(message, str(caught.exception))


class ContextFactoryTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = self.mktemp()
        self.cert, self.key = write_pair(self.dir, pair())

    def test_interfaces(self) -> None:
        factory = tls.ReloadableContextFactory(self.cert, self.key)
        self.assertTrue(verifyObject(IOpenSSLServerConnectionCreator, factory))
        self.assertIsInstance(factory.getContext(), SSL.Context)
        connection = factory.serverConnectionForTLS(None)
        self.assertIsInstance(connection, SSL.Connection)
        self.assertIs(connection.get_context(), factory.getContext())

    def test_missing_file_refused_at_start(self) -> None:
        with self.assertRaises(tls.CertificateError) as caught:
            tls.ReloadableContextFactory(self.cert + ".missing", self.key)
        self.assertIn(".missing: cannot read", str(caught.exception))

    def test_reload_swaps_context_and_certificate(self) -> None:
        factory = tls.ReloadableContextFactory(self.cert, self.key)
        old_context = factory.getContext()
        write_pair(self.dir, pair(serial=1))
        with capturedLogs() as events:
            self.assertTrue(factory.reload())
        self.assertIsNot(factory.getContext(), old_context)
        self.assertEqual(factory.certificate.fingerprint(hashes.SHA256()), pem_fingerprint(pair(serial=1)[0]))
        self.assertTrue(any("reloaded" in e["log_format"] for e in events))

    def test_bad_reload_keeps_the_old_pair(self) -> None:
        factory = tls.ReloadableContextFactory(self.cert, self.key)
        old_context = factory.getContext()
        # A renewal half done: new certificate, old key.
        with open(self.cert, "wb") as f:
            f.write(pair(serial=1)[0])
        with capturedLogs() as events:
            self.assertFalse(factory.reload())
        self.assertIs(factory.getContext(), old_context)
        self.assertEqual(factory.certificate.fingerprint(hashes.SHA256()), pem_fingerprint(pair()[0]))
        [error] = [e for e in events if e["log_level"] == LogLevel.error]
        self.assertIn("does not match", error["error"])

    def test_hostname_mismatch_and_expiry_warned(self) -> None:
        later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=tls.SELF_SIGNED_DAYS - 5)
        with capturedLogs() as events:
            tls.ReloadableContextFactory(self.cert, self.key, hostname="other.example.test", now=lambda: later)
        formats = [e["log_format"] for e in events if e["log_level"] == LogLevel.warn]
        self.assertTrue(any("not valid for" in f for f in formats))
        self.assertTrue(any("expires soon" in f for f in formats))


class BuildContextsTests(SynchronousTestCase):
    def test_one_shared_generated_pair(self) -> None:
        data = self.mktemp()
        contexts = tls.build_contexts(tls.TLSSettings(None, None, None), data, HOSTNAME)
        self.assertIs(contexts.smtpd, contexts.imap)
        self.assertIs(contexts.smtpd, contexts.pop3)
        self.assertEqual(contexts.smtpd.cert_file, os.path.join(data, "tls", tls.SELF_SIGNED_CERT))
        self.assertEqual(len(contexts.all()), 1)
        self.assertTrue(contexts.reload())

    def test_per_service_pair_and_no_generation_when_configured(self) -> None:
        data = self.mktemp()
        files = tls.CertificateFiles(*write_pair(self.mktemp(), pair()))
        pop3 = tls.CertificateFiles(*write_pair(self.mktemp(), pair(serial=1)))
        contexts = tls.build_contexts(tls.TLSSettings(files, files, pop3), data, HOSTNAME)
        self.assertIs(contexts.smtpd, contexts.imap)
        self.assertIsNot(contexts.smtpd, contexts.pop3)
        self.assertEqual(len(contexts.all()), 2)
        self.assertFalse(os.path.exists(os.path.join(data, "tls")))


class PlaintextPolicyTests(SynchronousTestCase):
    def test_remote_cleartext_refused(self) -> None:
        policy = tls.PlaintextPolicy()
        self.assertFalse(policy(TLSStringTransport("192.0.2.10")))
        self.assertFalse(policy(TLSStringTransport("2001:db8::1")))
        self.assertFalse(policy(StringTransport()))  # 192.168.1.1

    def test_loopback_allowed(self) -> None:
        policy = tls.PlaintextPolicy()
        for host in ("127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"):
            self.assertTrue(policy(TLSStringTransport(host)), host)

    def test_tls_allowed(self) -> None:
        self.assertTrue(tls.PlaintextPolicy()(TLSStringTransport("192.0.2.10", secure=True)))
        transport = TLSStringTransport("192.0.2.10")
        transport.startTLS(object())
        self.assertTrue(tls.PlaintextPolicy()(transport))

    def test_relaxed_for_labs(self) -> None:
        self.assertTrue(tls.PlaintextPolicy(disable_plaintext_auth=False)(TLSStringTransport("192.0.2.10")))

    def test_no_trusted_networks(self) -> None:
        self.assertFalse(tls.PlaintextPolicy(trusted_networks=())(TLSStringTransport("127.0.0.1")))

    def test_not_ip(self) -> None:
        self.assertFalse(tls.PlaintextPolicy()(StringTransport(peerAddress=UNIXAddress(b"/tmp/s"))))

    def test_from_config(self) -> None:
        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        self.assertTrue(tls.PlaintextPolicy.from_config(config("", base)).disable_plaintext_auth)
        relaxed = tls.PlaintextPolicy.from_config(config("disable_plaintext_auth = no\n", base))
        self.assertFalse(relaxed.disable_plaintext_auth)


class HandshakeTests(TestCase):
    """Real handshakes over loopback against an implicit-TLS echo listener."""

    def setUp(self) -> None:
        self.dir = self.mktemp()
        self.cert, self.key = write_pair(self.dir, pair())

    def serve(self, **kw) -> tuple[int, tls.ReloadableContextFactory]:
        context = tls.ReloadableContextFactory(
            self.cert, self.key, cipherlist=kw.pop("cipherlist", TLS_HIGH_CIPHERLIST), **kw
        )
        echo = EchoFactory()
        port = listen(self, tls.wrap_implicit(echo, context))
        self.addCleanup(echo.all_closed)
        return port, context

    @inlineCallbacks
    def test_certificate_for_hostname_tls12_and_tls13(self):
        port, _ = self.serve()

        def client(version: ssl.TLSVersion):
            context = client_context(self.cert, minimum=version, maximum=version)
            with tls_connect(port, context) as sock:  # checks the name: CN/SAN = hostname
                greeting = read_line(sock)
                sock.sendall(b"ping\r\n")
                return sock.version(), sock.compression(), greeting, read_line(sock)

        for version, name in ((ssl.TLSVersion.TLSv1_2, "TLSv1.2"), (ssl.TLSVersion.TLSv1_3, "TLSv1.3")):
            got = yield in_thread(client, version)
            self.assertEqual(got, (name, None, b"hello\r\n", b"ping\r\n"))

    @inlineCallbacks
    def test_wrong_name_does_not_verify(self):
        port, _ = self.serve()

        def client():
            try:
                tls_connect(port, client_context(self.cert), "other.example.test").close()
            except ssl.SSLCertVerificationError as e:
                return e.verify_message
            return None

        message = yield in_thread(client)
        self.assertIn("mismatch", message or "")

    @inlineCallbacks
    def test_tls11_refused(self):
        old = dict(minimum=ssl.TLSVersion.TLSv1_1, maximum=ssl.TLSVersion.TLSv1_1, ciphers="DEFAULT:@SECLEVEL=0")

        def client(port: int):
            try:
                with tls_connect(port, client_context(self.cert, **old)) as sock:
                    return sock.version()
            except (ssl.SSLError, ConnectionError) as e:
                return e

        # Control: this client can speak TLS 1.1 to a server that allows it.
        permissive, _ = self.serve(min_protocol="TLSv1.1", cipherlist="DEFAULT:@SECLEVEL=0")
        control = yield in_thread(client, permissive)
        if control != "TLSv1.1":
            raise SkipTest(f"this OpenSSL cannot speak TLS 1.1 at all: {control}")
        # The default floor refuses it, even with every cipher allowed.
        for cipherlist in (TLS_HIGH_CIPHERLIST, "DEFAULT:@SECLEVEL=0"):
            strict, _ = self.serve(cipherlist=cipherlist)
            refused = yield in_thread(client, strict)
            self.assertIsInstance(refused, ssl.SSLError)
            self.assertIn("VERSION", str(refused).upper())

    @inlineCallbacks
    def test_configured_floor_tls13(self):
        port, _ = self.serve(min_protocol="TLSv1.3")

        def client(version: ssl.TLSVersion):
            try:
                with tls_connect(port, client_context(self.cert, maximum=version)) as sock:
                    return sock.version()
            except ssl.SSLError as e:
                return e.reason

        self.assertEqual((yield in_thread(client, ssl.TLSVersion.TLSv1_3)), "TLSv1.3")
        self.assertEqual((yield in_thread(client, ssl.TLSVersion.TLSv1_2)), "TLSV1_ALERT_PROTOCOL_VERSION")

    @inlineCallbacks
    def test_twisted_client_refuses_another_name(self):
        port, _ = self.serve()
        with open(self.cert, "rb") as f:
            trust = Certificate.loadPEM(f.read())
        endpoint = wrapClientTLS(
            optionsForClientTLS("other.example.test", trustRoot=trust),
            TCP4ClientEndpoint(reactor, "127.0.0.1", port),
        )
        received = []

        class Client(Protocol):
            def dataReceived(self, data: bytes) -> None:
                received.append(data)

        protocol = yield endpoint.connect(Factory.forProtocol(Client))
        [reason] = yield _lost(protocol)
        self.assertEqual(received, [])
        self.assertIsInstance(reason.value, VerificationError)
        self.flushLoggedErrors(VerificationError)  # Twisted may also log the verdict

    @inlineCallbacks
    def test_twisted_client_verifies_service_identity(self):
        port, _ = self.serve()
        with open(self.cert, "rb") as f:
            trust = Certificate.loadPEM(f.read())
        received = []

        class Client(Protocol):
            def dataReceived(self, data: bytes) -> None:
                received.append(data)
                if b"".join(received) == b"hello\r\n":
                    self.transport.write(b"via twisted\r\n")
                elif b"".join(received).endswith(b"via twisted\r\n"):
                    self.transport.loseConnection()

        endpoint = wrapClientTLS(
            optionsForClientTLS(HOSTNAME, trustRoot=trust), TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        )
        protocol = yield endpoint.connect(Factory.forProtocol(Client))
        yield _lost(protocol)
        self.assertEqual(b"".join(received), b"hello\r\nvia twisted\r\n")

    @inlineCallbacks
    def test_reload_applies_to_new_connections_only(self):
        port, context = self.serve()
        first = yield in_thread(tls_connect, port, client_context(self.cert))
        self.addCleanup(first.close)
        self.assertEqual((yield in_thread(read_line, first)), b"hello\r\n")

        renewed = pair(serial=1)
        new_cert, _ = write_pair(self.dir, renewed)  # same paths, as an ACME client does
        self.assertTrue(context.reload())

        def second_connection():
            with tls_connect(port, client_context(new_cert)) as sock:
                read_line(sock)
                return sock.getpeercert(binary_form=True)

        served = yield in_thread(second_connection)
        self.assertEqual(fingerprint(served), pem_fingerprint(renewed[0]))

        # The connection made before the reload still works, on the old certificate.
        def old_connection_still_works():
            first.sendall(b"still here\r\n")
            return read_line(first), first.getpeercert(binary_form=True)

        line, old_served = yield in_thread(old_connection_still_works)
        self.assertEqual(line, b"still here\r\n")
        self.assertEqual(fingerprint(old_served), pem_fingerprint(pair()[0]))


def _lost(protocol: Protocol):
    """A Deferred firing with C{[reason]} when C{protocol}'s connection is lost."""
    from twisted.internet.defer import Deferred

    d: Deferred = Deferred()
    lost = protocol.connectionLost

    def connectionLost(reason=None):
        lost(reason)
        d.callback([reason])

    protocol.connectionLost = connectionLost
    return d
