"""Real SMTP sessions over loopback against the service built by service.py."""

from __future__ import annotations

import os
import smtplib
import re
import socket

from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from mailserver.delivery.received import has_header, header_end
from tests.harness import RunningServer

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CORPUS = os.path.join(os.path.dirname(REPO), "shared", "corpus", "mail-fixtures")


def corpus_files() -> list[str]:
    found = []
    for root, _, names in os.walk(CORPUS):
        found += [os.path.join(root, n) for n in names if n != "LICENSE" and not n.startswith(".") and not n.endswith(".md")]
    return sorted(found)


def normalise(raw: bytes) -> bytes:
    """
    What the store keeps of a message sent by smtplib: CRLF as LF; smtplib
    appends CRLF unless the message already ends with one.
    """
    data = raw.replace(b"\r\n", b"\n")
    return data if raw.endswith(b"\r\n") else data + b"\n"


def without_added_headers(stored: bytes, sent: bytes) -> bytes:
    """Undo what Postfix-like cleanup adds: Message-ID and Date when they were missing."""
    end = header_end(stored)
    head, rest = stored[:end], stored[end:]
    if not has_header(sent, header_end(sent), b"Message-ID"):
        head = re.sub(rb"Message-ID: <\d{14}\.[0-9A-F]+@mx\.example\.com>\n(?=(Date: [^\n]*\n)?\Z)", b"", head)
    if not has_header(sent, header_end(sent), b"Date"):
        head = re.sub(rb"Date: [^\n]*\n\Z", b"", head)
    return head + rest


def body_of(stored: bytes) -> bytes:
    """
    The message as sent: strip the prepended delivery headers, our Received
    block and our Authentication-Results block (mail authentication).
    """
    lines = stored.split(b"\n")
    assert lines[0].startswith(b"Return-Path:"), lines[0]
    index = 1
    while not lines[index].startswith(b"Received:"):
        index += 1
    index += 1
    while lines[index][:1] in (b" ", b"\t"):
        index += 1
    assert lines[index].startswith(b"Authentication-Results: mx.example.com;"), lines[index]
    index += 1
    while lines[index][:1] in (b" ", b"\t"):
        index += 1
    return b"\n".join(lines[index:])


class LoopbackSMTPTests(TestCase):
    timeout = 120

    def setUp(self):
        self.server = RunningServer(self)
        return self.server.start()

    def smtp(self) -> smtplib.SMTP:
        return smtplib.SMTP("127.0.0.1", self.server.ports["smtpd_listen"], timeout=30)

    def test_smtplib_delivers_into_maildir(self):
        def send():
            with self.smtp() as client:
                client.ehlo("client.example")
                refused = client.sendmail(
                    "sender@remote.example", ["alice+news@example.com", "bob@example.com"],
                    b"Subject: hello\r\nMessage-ID: <1@x>\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n\r\nline one\r\n.dot line\r\n",
                )
                return refused

        def check(refused):
            self.assertEqual(refused, {})
            [alice] = self.server.messages("alice")
            [bob] = self.server.messages("bob")
            self.assertTrue(alice.startswith(b"Return-Path: <sender@remote.example>\nX-Original-To: alice+news@example.com\n"
                                             b"Delivered-To: alice@example.com\nReceived: from client.example"))
            self.assertIn(b"Delivered-To: bob@example.com\n", bob)
            self.assertEqual(body_of(alice), b"Subject: hello\nMessage-ID: <1@x>\nDate: Mon, 1 Jan 2024 00:00:00 +0000\n\nline one\n.dot line\n")
            self.assertEqual(body_of(alice), body_of(bob))
            new = os.path.join(self.server.maildir("alice"), "new")
            [name] = os.listdir(new)
            self.assertIn(f",S={len(alice)}", name)
            self.assertEqual(os.listdir(os.path.join(self.server.maildir("alice"), "tmp")), [])

        return deferToThread(send).addCallback(check)

    def test_unknown_user_and_relay_refused_while_connected(self):
        def send():
            with self.smtp() as client:
                client.ehlo("c")
                client.mail("a@remote.example")
                unknown = client.rcpt("nobody@example.com")
                relay = client.rcpt("victim@elsewhere.example")
                return unknown, relay

        def check(result):
            unknown, relay = result
            self.assertEqual(unknown[0], 550)
            self.assertTrue(unknown[1].startswith(b"5.1.1"))
            self.assertEqual(relay, (554, b"5.7.1 Relay access denied"))

        return deferToThread(send).addCallback(check)

    def test_raw_smuggling_attempt_is_not_split(self):
        def send():
            with socket.create_connection(("127.0.0.1", self.server.ports["smtpd_listen"]), timeout=30) as sock:
                stream = sock.makefile("rb")
                stream.readline()
                sock.sendall(b"EHLO c\r\nMAIL FROM:<a@remote.example>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n")
                replies = [stream.readline() for _ in range(1)]
                while not replies[-1].startswith(b"354"):
                    replies.append(stream.readline())
                sock.sendall(b"Subject: x\r\n\r\nhi\n.\nMAIL FROM:<evil@remote.example>\nRCPT TO:<alice@example.com>\nDATA\nsmuggled\r\n.\r\nQUIT\r\n")
                return stream.readline(), stream.readline()

        def check(result):
            end, quit = result
            self.assertTrue(end.startswith(b"250 2.0.0"), end)
            self.assertTrue(quit.startswith(b"221"), quit)
            self.assertEqual(self.server.messages("alice"), [])
            [only] = self.server.messages("bob")
            self.assertTrue(only.endswith(b"hi\n\nMAIL FROM:<evil@remote.example>\nRCPT TO:<alice@example.com>\nDATA\nsmuggled\n"))

        return deferToThread(send).addCallback(check)

    def test_large_message_spooled_arrives_byte_identical(self):
        """Past the spill threshold DATA goes through data_directory/incoming/, and nothing is left there."""
        lines = [b"line %06d " % n + bytes(range(33, 127)) + b"\r\n" for n in range(12000)]
        raw = b"Subject: big\r\nMessage-ID: <big@x>\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n\r\n" + b"".join(lines)
        raw += b".starts with a dot\r\n"

        def send():
            with self.smtp() as client:
                return client.sendmail("sender@remote.example", ["bob@example.com", "alice@example.com"], raw)

        def check(refused):
            self.assertEqual(refused, {})
            self.assertGreater(len(raw), 1 << 20)
            for user in ("alice", "bob"):
                [stored] = self.server.messages(user)
                self.assertEqual(body_of(stored), normalise(raw))
            incoming = os.path.join(self.server.config.data_directory, "incoming")
            self.assertEqual(os.listdir(incoming), [])

        return deferToThread(send).addCallback(check)

    def test_corpus_byte_identical(self):
        files = corpus_files()
        if not files:
            self.skipTest("corpus not found at " + CORPUS)

        def send():
            with self.smtp() as client:
                for path in files:
                    with open(path, "rb") as handle:
                        raw = handle.read()
                    client.sendmail("corpus@remote.example", ["bob@example.com"], raw)
            return files

        def check(files):
            stored = [body_of(m) for m in self.server.messages("bob")]
            self.assertEqual(len(stored), len(files))
            for path in files:
                with open(path, "rb") as handle:
                    want = normalise(handle.read())
                matches = [got for got in stored if without_added_headers(got, want) == want]
                self.assertTrue(matches, f"{path} not stored byte-identical")

        return deferToThread(send).addCallback(check)


class SubmissionTests(TestCase):
    """Submission (587): AUTH before MAIL; over loopback PLAIN/LOGIN are allowed without TLS."""

    timeout = 60

    def setUp(self):
        self.server = RunningServer(self, listeners=("submission_listen",))
        return self.server.start()

    def submission(self) -> smtplib.SMTP:
        return smtplib.SMTP("127.0.0.1", self.server.ports["submission_listen"], timeout=30)

    def test_mail_before_auth_refused(self):
        def send():
            with self.submission() as client:
                client.ehlo("c")
                return client.mail("alice@example.com")

        return deferToThread(send).addCallback(
            lambda reply: self.assertEqual(reply, (530, b"5.7.0 Authentication required")))

    def test_auth_then_send(self):
        def send():
            with self.submission() as client:
                client.ehlo("c")
                features = client.esmtp_features.get("auth", "")
                code, _ = client.login("alice@example.com", "secret")
                client.sendmail("alice@example.com", ["bob@example.com"], b"Subject: s\r\n\r\nx\r\n")
                return features, code

        def check(result):
            features, code = result
            self.assertIn("PLAIN", features)
            self.assertEqual(code, 235)
            [stored] = self.server.messages("bob")
            self.assertIn(b"with ESMTPA id", stored)

        return deferToThread(send).addCallback(check)

    def test_bad_password(self):
        def send():
            with self.submission() as client:
                client.ehlo("c")
                try:
                    client.login("alice@example.com", "wrong")
                except smtplib.SMTPAuthenticationError as error:
                    return error.smtp_code, error.smtp_error
                return None

        return deferToThread(send).addCallback(
            lambda result: self.assertEqual(result, (535, b"5.7.8 Authentication failed")))


class SenderLoginMismatchTests(TestCase):
    """reject_sender_login_mismatch: an authenticated user sends only as itself or its aliases."""

    timeout = 60

    def setUp(self):
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        aliases = os.path.join(directory, "aliases")
        with open(aliases, "w") as handle:
            handle.write("sales: alice\nsupport: bob\n")
        self.server = RunningServer(self, listeners=("submission_listen",), extra=f"alias_maps = {aliases}\n")
        return self.server.start()

    def mail_as(self, *senders: str):
        def send():
            with smtplib.SMTP("127.0.0.1", self.server.ports["submission_listen"], timeout=30) as client:
                client.ehlo("c")
                client.login("alice@example.com", "secret")
                replies = []
                for sender in senders:
                    replies.append(client.mail(sender))
                    client.rset()
                return replies

        return deferToThread(send)

    def test_own_addresses_and_aliases_accepted_others_refused(self):
        def check(replies):
            own, tagged, alias, other, foreign = replies
            self.assertEqual(own[0], 250)
            self.assertEqual(tagged[0], 250)
            self.assertEqual(alias[0], 250)
            self.assertEqual(other[0], 553)
            self.assertTrue(other[1].startswith(b"5.7.1 Sender address rejected"))
            self.assertEqual(foreign[0], 553)

        return self.mail_as("alice@example.com", "Alice+list@example.com", "sales@example.com",
                            "support@example.com", "ceo@bank.example").addCallback(check)
