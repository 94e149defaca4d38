"""SMTP AUTH exchanges: malformed input answered (never a dropped session) and counted."""

from __future__ import annotations

from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from tests.smtp.auth_support import AuthSession, b64


class MalformedAuthTests(SynchronousTestCase):
    """Issue 17 item 2: a malformed AUTH closed the session with no reply and was not counted."""

    def assertRefusedAndCounted(self, lines: list[bytes], reply: str, reason: str) -> None:
        session = AuthSession()
        with capturedLogs() as events:
            replies = [r for line in lines for r in session.send(line)]
        self.assertEqual(replies[-1], reply, replies)
        self.assertFalse(session.transport.disconnecting)
        self.assertEqual(session.failures(), 1)
        [failed] = [e for e in events if e.get("auth_failure")]
        self.assertEqual(failed["reason"], reason)
        self.assertEqual([e for e in events if "log_failure" in e], [])
        # The session goes on.
        self.assertEqual(session.send(b"NOOP\r\n"), ["250 2.0.0 Ok"])

    def test_regression_bare_auth_answered_and_counted(self) -> None:
        self.assertRefusedAndCounted([b"AUTH\r\n"], "501 5.5.4 Syntax: AUTH mechanism", "malformed AUTH command")
        self.assertRefusedAndCounted([b"AUTH PLAIN a b\r\n"], "501 5.5.4 Syntax: AUTH mechanism", "malformed AUTH command")

    def test_regression_plain_equals_sign_answered_and_counted(self) -> None:
        self.assertRefusedAndCounted([b"AUTH PLAIN =\r\n"], "535 5.7.8 Authentication failed", "malformed PLAIN response")

    def test_regression_plain_empty_line_answered_and_counted(self) -> None:
        self.assertRefusedAndCounted([b"AUTH PLAIN\r\n", b"\r\n"], "535 5.7.8 Authentication failed",
                                     "malformed PLAIN response")

    def test_regression_plain_nul_in_authzid_answered_and_counted(self) -> None:
        self.assertRefusedAndCounted([b"AUTH PLAIN " + b64(b"a\0b\0alice\0right") + b"\r\n"],
                                     "535 5.7.8 Authentication failed", "malformed PLAIN response")

    def test_regression_plain_two_parts_answered_and_counted(self) -> None:
        self.assertRefusedAndCounted([b"AUTH PLAIN\r\n", b64(b"alice\0right") + b"\r\n"],
                                     "535 5.7.8 Authentication failed", "malformed PLAIN response")

    def test_bad_base64_answered_and_counted(self) -> None:
        self.assertRefusedAndCounted([b"AUTH LOGIN\r\n", b"not base64!\r\n"],
                                     "501 5.5.2 Invalid base64 data in response", "invalid base64 in response")
        self.assertRefusedAndCounted([b"AUTH PLAIN AGFsaWNl=x\r\n"],
                                     "501 5.5.2 Invalid base64 data in initial response",
                                     "invalid base64 in initial response")

    def test_login_empty_user_name_counted(self) -> None:
        self.assertRefusedAndCounted([b"AUTH LOGIN\r\n", b"\r\n"], "535 5.7.8 Authentication failed", "malformed user name")

    def test_cancel_is_not_a_failed_login(self) -> None:
        session = AuthSession()
        self.assertEqual(session.send(b"AUTH LOGIN\r\n"), ["334 " + b64(b"Username:").decode()])
        self.assertEqual(session.send(b"*\r\n"), ["501 5.7.0 Authentication aborted"])
        self.assertEqual(session.failures(), 0)

    def test_unknown_mechanism(self) -> None:
        session = AuthSession()
        self.assertEqual(session.send(b"AUTH CRAM-MD5\r\n"), ["504 5.5.4 Unsupported authentication mechanism"])
        self.assertEqual(session.failures(), 0)

    def test_without_throttle_still_answered_and_logged(self) -> None:
        session = AuthSession(throttle=False)
        with capturedLogs() as events:
            self.assertEqual(session.send(b"AUTH\r\n"), ["501 5.5.4 Syntax: AUTH mechanism"])
        self.assertEqual([e["reason"] for e in events if e.get("auth_failure")], ["malformed AUTH command"])

    def test_ehlo_first(self) -> None:
        session = AuthSession(ehlo=False)
        self.assertEqual(session.send(b"AUTH PLAIN\r\n"), ["503 5.5.1 Error: send HELO/EHLO first"])

    def test_login_exchange_succeeds(self) -> None:
        session = AuthSession()
        self.assertEqual(session.send(b"AUTH LOGIN " + b64(b"alice") + b"\r\n"), ["334 " + b64(b"Password:").decode()])
        self.assertEqual(session.send(b64(b"right") + b"\r\n"), ["235 2.7.0 Authentication successful"])
        self.assertEqual(session.protocol.sasl_user, "alice")
        self.assertEqual(session.send(b"AUTH PLAIN\r\n"), ["503 5.5.1 Error: already authenticated"])

    def test_commands_pipelined_after_auth_wait_for_its_answer(self) -> None:
        session = AuthSession()
        replies = session.send(b"AUTH PLAIN " + b64(b"\0alice\0wrong") + b"\r\nNOOP\r\n")
        self.assertEqual(replies, ["535 5.7.8 Authentication failed", "250 2.0.0 Ok"])

    def test_banned_client_told_so(self) -> None:
        session = AuthSession(limit=1)
        session.send(b"AUTH\r\n")  # a malformed attempt counts towards the ban
        self.assertEqual(session.send(b"AUTH PLAIN " + b64(b"\0alice\0right") + b"\r\n"), ["454 4.7.0 Too many failed logins from your address, try again later"])


class AuthorizationIdentityTests(SynchronousTestCase):
    """Issue 17 item 6: a PLAIN authzid other than the login was ignored (235, acting as the login)."""

    def test_regression_smtp_plain_authzid_other_than_login_refused(self) -> None:
        session = AuthSession()
        with capturedLogs() as events:
            replies = session.send(b"AUTH PLAIN " + b64(b"bob\0alice\0right") + b"\r\n")
        self.assertEqual(replies, ["535 5.7.8 Authentication failed"])
        self.assertIsNone(session.protocol.sasl_user)
        self.assertEqual([e["reason"] for e in events if e.get("auth_failure")],
                         ["authorization identity not permitted"])
        self.assertEqual(session.failures(), 1)

    def test_authzid_equal_to_login_accepted(self) -> None:
        session = AuthSession()
        self.assertEqual(session.send(b"AUTH PLAIN " + b64(b"alice\0alice\0right") + b"\r\n"),
                         ["235 2.7.0 Authentication successful"])
        self.assertEqual(session.protocol.sasl_user, "alice")
