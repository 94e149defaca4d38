"""SMTP over TLS against the real service: STARTTLS on 25 and 587, implicit TLS on 465."""

from __future__ import annotations

import os
import smtplib
import ssl

from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.harness import RunningServer


class SMTPTLSTests(TestCase):
    timeout = 60

    def setUp(self):
        self.server = RunningServer(self, listeners=("smtpd_listen", "submission_listen", "smtps_listen"))
        return self.server.start()

    def context(self) -> ssl.SSLContext:
        cafile = os.path.join(self.server.config.data_directory, "tls", "selfsigned-cert.pem")
        context = ssl.create_default_context(cafile=cafile)
        context.check_hostname = False  # we connect to 127.0.0.1; the name is checked below
        context.verify_mode = ssl.CERT_REQUIRED
        return context

    def test_starttls_on_port_25_serves_the_self_signed_certificate(self):
        def send():
            with smtplib.SMTP("127.0.0.1", self.server.ports["smtpd_listen"], timeout=30) as client:
                client.ehlo("c")
                offered = client.has_extn("starttls")
                client.starttls(context=self.context())
                client.ehlo("c")
                after = client.has_extn("starttls")
                cert = client.sock.getpeercert()
                version = client.sock.version()
                client.sendmail("x@remote.example", ["bob@example.com"], b"Subject: tls\r\n\r\nsecret\r\n")
                return offered, after, cert, version

        def check(result):
            offered, after, cert, version = result
            self.assertTrue(offered)
            self.assertFalse(after)
            self.assertIn(("DNS", "mx.example.com"), cert["subjectAltName"])
            self.assertIn(version, ("TLSv1.2", "TLSv1.3"))
            [stored] = self.server.messages("bob")
            self.assertIn(b" with ESMTPS id ", stored)

        return deferToThread(send).addCallback(check)

    def test_submission_after_starttls_says_esmtpsa(self):
        def send():
            with smtplib.SMTP("127.0.0.1", self.server.ports["submission_listen"], timeout=30) as client:
                client.starttls(context=self.context())
                client.login("alice@example.com", "secret")
                client.sendmail("alice@example.com", ["bob@example.com"], b"Subject: s\r\n\r\nx\r\n")

        def check(_):
            [stored] = self.server.messages("bob")
            self.assertIn(b" with ESMTPSA id ", stored)

        return deferToThread(send).addCallback(check)

    def test_implicit_tls_on_465(self):
        def send():
            with smtplib.SMTP_SSL("127.0.0.1", self.server.ports["smtps_listen"], timeout=30,
                                  context=self.context()) as client:
                client.ehlo("c")
                starttls = client.has_extn("starttls")
                client.login("alice@example.com", "secret")
                client.sendmail("alice@example.com", ["bob@example.com"], b"Subject: s\r\n\r\nx\r\n")
                return starttls

        def check(starttls):
            self.assertFalse(starttls)
            [stored] = self.server.messages("bob")
            self.assertIn(b" with ESMTPSA id ", stored)

        return deferToThread(send).addCallback(check)

    def test_tls_1_1_refused(self):
        def connect():
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            try:
                context.minimum_version = ssl.TLSVersion.TLSv1_1
                context.maximum_version = ssl.TLSVersion.TLSv1_1
                # Without this, OpenSSL 3 refuses TLS 1.1 in the client and never
                # sends a ClientHello: the server would not be tested at all.
                context.set_ciphers("DEFAULT:@SECLEVEL=0")
            except (ValueError, ssl.SSLError):
                return "unsupported"
            try:
                with smtplib.SMTP_SSL("127.0.0.1", self.server.ports["smtps_listen"], timeout=30, context=context):
                    return "connected"
            except (ssl.SSLError, OSError) as error:
                return str(error)

        def check(result):
            if result == "unsupported":
                self.skipTest("this OpenSSL cannot offer TLS 1.1")
            self.assertIn("TLSV1_ALERT_PROTOCOL_VERSION", result)  # the server's alert

        return deferToThread(connect).addCallback(check)
