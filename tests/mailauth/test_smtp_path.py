"""
Inbound mail authentication on the real SMTP path: sessions over loopback,
DNS from a real twisted.names server on loopback (tests/dns.py).
"""

from __future__ import annotations

import os
import smtplib

from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase

from tests.dns import DNSTestServer
from tests.harness import RunningServer

ZONES = {
    "reject.example": {
        "reject.example": [("TXT", "v=spf1 -all")],
        "_dmarc.reject.example": [("TXT", "v=DMARC1; p=reject")],
    },
    "quarantine.example": {
        "quarantine.example": [("TXT", "v=spf1 -all")],
        "_dmarc.quarantine.example": [("TXT", "v=DMARC1; p=quarantine")],
    },
    "good.example": {
        "good.example": [("TXT", "v=spf1 ip4:127.0.0.1 -all")],
        "_dmarc.good.example": [("TXT", "v=DMARC1; p=reject")],
    },
}


def message(sender: str, body: bytes = b"hello\r\n") -> bytes:
    return (f"From: <{sender}>\r\nTo: <alice@example.com>\r\nSubject: test\r\n"
            f"Message-ID: <{sender}.1@x>\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n\r\n").encode() + body


class InboundAuthenticationSessionTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def start(self, extra: str = ""):
        self.dns = DNSTestServer(ZONES)
        yield self.dns.start(self)
        self.server = RunningServer(self, extra=extra, resolver=self.dns.resolver)
        yield self.server.start()

    def send(self, sender: str, data: bytes):
        def run():
            with smtplib.SMTP("127.0.0.1", self.server.ports["smtpd_listen"], timeout=30) as client:
                client.ehlo("client.example")
                try:
                    client.sendmail(sender, ["alice@example.com"], data)
                except (smtplib.SMTPDataError, smtplib.SMTPSenderRefused) as error:
                    return error.smtp_code, error.smtp_error
                return 250, b""

        return deferToThread(run)

    def junk(self) -> list[bytes]:
        new = os.path.join(self.server.maildir("alice"), ".Junk", "new")
        return [open(os.path.join(new, name), "rb").read() for name in sorted(os.listdir(new))] if os.path.isdir(new) else []

    @inlineCallbacks
    def test_dmarc_reject_refused_at_end_of_data(self):
        yield self.start()
        code, text = yield self.send("x@reject.example", message("ceo@reject.example"))
        self.assertEqual(code, 550)
        self.assertTrue(text.startswith(b"5.7.1 Message rejected: DMARC policy of reject.example is reject"), text)
        self.assertEqual(self.server.messages("alice"), [])

    @inlineCallbacks
    def test_dmarc_quarantine_goes_to_junk(self):
        yield self.start()
        code, _ = yield self.send("x@quarantine.example", message("ceo@quarantine.example"))
        self.assertEqual(code, 250)
        self.assertEqual(self.server.messages("alice"), [])
        [stored] = self.junk()
        self.assertIn(b"dmarc=fail", stored)

    @inlineCallbacks
    def test_aligned_pass_delivered_with_results_header(self):
        yield self.start()
        code, _ = yield self.send("x@good.example", message("ceo@good.example"))
        self.assertEqual(code, 250)
        [stored] = self.server.messages("alice")
        self.assertIn(b"Authentication-Results: mx.example.com;", stored)
        self.assertIn(b"spf=pass", stored)
        self.assertIn(b"dmarc=pass", stored)

    @inlineCallbacks
    def test_regression_forged_results_header_removed(self):
        yield self.start()
        forged = b"Authentication-Results: mx.example.com; dmarc=pass header.from=good.example\r\n"
        code, _ = yield self.send("x@good.example", forged + message("ceo@good.example"))
        self.assertEqual(code, 250)
        [stored] = self.server.messages("alice")
        self.assertEqual(stored.count(b"Authentication-Results: mx.example.com;"), 1)
        self.assertNotIn(b"dmarc=pass header.from=good.example\n", stored)

    @inlineCallbacks
    def test_regression_own_domain_spoof_never_reaches_inbox(self):
        """With the default settings, an unauthenticated From: of our own domain is refused."""
        yield self.start()
        code, text = yield self.send("x@good.example", message("boss@example.com"))
        self.assertEqual(code, 550)
        self.assertIn(b"example.com is ours", text)
        self.assertEqual(self.server.messages("alice") + self.junk(), [])

    @inlineCallbacks
    def test_large_spooled_message_checked_and_kept_intact(self):
        yield self.start()
        body = b"".join(b"line %06d of a message spooled to disk\r\n" % n for n in range(20000))
        code, _ = yield self.send("x@good.example", message("ceo@good.example", body))
        self.assertEqual(code, 250)
        [stored] = self.server.messages("alice")
        self.assertIn(b"dmarc=pass", stored)
        self.assertTrue(stored.endswith(body.replace(b"\r\n", b"\n")))

    @inlineCallbacks
    def test_trusted_clients_are_not_checked(self):
        yield self.start(extra="mynetworks = 127.0.0.0/8\n")
        code, _ = yield self.send("x@reject.example", message("ceo@reject.example"))
        self.assertEqual(code, 250)
        [stored] = self.server.messages("alice")
        self.assertNotIn(b"Authentication-Results:", stored)

    @inlineCallbacks
    def test_checks_can_be_turned_off(self):
        yield self.start(extra="mail_authentication_checks = no\n")
        code, _ = yield self.send("x@reject.example", message("ceo@reject.example"))
        self.assertEqual(code, 250)
        self.assertNotIn(b"Authentication-Results:", self.server.messages("alice")[0])

    @inlineCallbacks
    def test_regression_quarantine_with_sieve_configured_goes_to_junk(self):
        """Sieve is skipped for quarantined mail: the copy goes to Junk, no vacation reply is made."""
        script = os.path.abspath(self.mktemp())
        with open(script, "w") as handle:
            handle.write('require ["fileinto", "vacation"];\nvacation "away";\nfileinto "Elsewhere";\n')
        yield self.start(extra=f"sieve_before = {script}\n")
        code, _ = yield self.send("x@quarantine.example", message("ceo@quarantine.example"))
        self.assertEqual(code, 250)
        [stored] = self.junk()
        self.assertIn(b"dmarc=fail", stored)
        self.assertFalse(os.path.isdir(os.path.join(self.server.maildir("alice"), ".Elsewhere")))

    @inlineCallbacks
    def test_sieve_applies_to_authenticated_mail(self):
        script = os.path.abspath(self.mktemp())
        with open(script, "w") as handle:
            handle.write('require ["fileinto", "mailbox"];\nfileinto :create "Filed";\n')
        yield self.start(extra=f"sieve_before = {script}\n")
        code, _ = yield self.send("x@good.example", message("ceo@good.example"))
        self.assertEqual(code, 250)
        filed = os.path.join(self.server.maildir("alice"), ".Filed")
        names = [n for sub in ("new", "cur") for n in os.listdir(os.path.join(filed, sub))]
        self.assertEqual(len(names), 1)

    def log_lines(self) -> list[str]:
        lines: list[str] = []

        def observe(event):
            lines.append(formatEvent(event))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        return lines

    @inlineCallbacks
    def test_regression_spf_fail_refused_at_mail_from(self):
        """With spf_fail_action = reject, SPF fail was only refused at end of DATA (after the upload)."""
        lines = self.log_lines()
        yield self.start(extra="spf_fail_action = reject\n")

        def run():
            with smtplib.SMTP("127.0.0.1", self.server.ports["smtpd_listen"], timeout=30) as client:
                client.ehlo("client.example")
                return client.mail("x@reject.example")

        code, text = yield deferToThread(run)
        self.assertEqual(code, 550)
        self.assertTrue(text.startswith(b"5.7.23 Message rejected due to: SPF fail"), text)
        self.assertIn(b"reject.example does not designate 127.0.0.1", text)
        [line] = [line for line in lines if "5.7.23" in line]
        self.assertIn("NOQUEUE: reject: MAIL from unknown[127.0.0.1]: 550 5.7.23", line)
        [spf] = [line for line in lines if "Received-SPF" in line]
        self.assertIn("Received-SPF: Fail (mailfrom) identity=mailfrom; client-ip=127.0.0.1", spf)
        self.assertEqual(self.server.messages("alice"), [])

    @inlineCallbacks
    def test_spf_fail_reject_spares_trusted_clients(self):
        yield self.start(extra="spf_fail_action = reject\nmynetworks = 127.0.0.0/8\n")
        code, _ = yield self.send("x@reject.example", message("ceo@reject.example"))
        self.assertEqual(code, 250)

    @inlineCallbacks
    def test_regression_spf_evaluated_once_at_mail_from(self):
        """SPF is evaluated at MAIL FROM and that result is the one in Authentication-Results."""
        yield self.start()
        checker = self.server.service.server.authenticator.spf
        calls = []
        real = checker.check

        def counting(*args):
            calls.append(args)
            return real(*args)

        checker.check = counting

        def run():
            with smtplib.SMTP("127.0.0.1", self.server.ports["smtpd_listen"], timeout=30) as client:
                client.ehlo("client.example")
                client.mail("x@good.example")
                after_mail = len(calls)
                client.rcpt("alice@example.com")
                return after_mail, client.data(message("ceo@good.example"))[0]

        after_mail, code = yield deferToThread(run)
        self.assertEqual((after_mail, code), (1, 250))
        self.assertEqual(calls, [("127.0.0.1", "client.example", "x@good.example")])
        [stored] = self.server.messages("alice")
        self.assertIn(b"spf=pass", stored)

    @inlineCallbacks
    def test_spf_fail_header_action_still_accepts_at_mail_from(self):
        yield self.start(extra="spf_fail_action = header\n")
        code, text = yield self.send("x@reject.example", message("ceo@good.example"))
        # Not refused at MAIL FROM; end of DATA decides (DMARC of good.example fails: reject).
        self.assertEqual(code, 550)
        self.assertTrue(text.startswith(b"5.7.1 "), text)


class InWorkersSessionTests(InboundAuthenticationSessionTests):
    """
    The same sessions with one mail authentication worker: the whole check
    runs there (L{Authenticator.in_worker}), except for the spooled message.
    """

    @inlineCallbacks
    def start(self, extra: str = ""):
        yield super().start(extra="mail_authentication_verify_processes = 1\n" + extra)
        authenticator = self.server.service.server.authenticator
        self.verdicts: list[object] = []
        in_worker = authenticator.in_worker

        def counted(*arguments):
            outcome = in_worker(*arguments)
            if outcome is not None:
                outcome.addCallback(lambda result: self.verdicts.append(result) or result)
            return outcome

        authenticator.in_worker = counted

    @inlineCallbacks
    def test_checked_in_the_worker(self):
        """A pass and a refusal, both decided by the worker (a Verdict), not by the reactor's checks."""
        from mailserver.mailauth.inbound import Verdict

        yield self.start()
        self.assertEqual((yield self.send("x@good.example", message("ceo@good.example")))[0], 250)
        self.assertEqual((yield self.send("x@reject.example", message("ceo@reject.example")))[0], 550)
        self.assertEqual([type(verdict) for verdict in self.verdicts], [Verdict, Verdict])
        self.assertEqual([verdict.disposition for verdict in self.verdicts], ["accept", "reject"])
