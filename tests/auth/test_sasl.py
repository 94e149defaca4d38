"""Tests for mailserver.auth.sasl: the PLAIN and LOGIN exchanges."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from mailserver.auth.sasl import Challenge, Credentials, Failed, Login, Plain


class PlainTests(SynchronousTestCase):
    def test_initial_response(self) -> None:
        self.assertEqual(Plain().start(b"\0alice\0secret"), Credentials(b"alice", b"secret"))

    def test_empty_challenge_then_response(self) -> None:
        plain = Plain()
        self.assertEqual(plain.start(None), Challenge(b""))
        self.assertEqual(plain.respond(b"alice\0alice\0pw"), Credentials(b"alice", b"pw"))

    def test_other_authorization_identity_refused(self) -> None:
        self.assertIsInstance(Plain().start(b"bob\0alice\0pw"), Failed)

    def test_malformed(self) -> None:
        for bad in (b"alice\0pw", b"\0\0pw", b"\0alice\0", b"a\0b\0c\0d", b""):
            self.assertIsInstance(Plain().start(bad), Failed, bad)


class LoginTests(SynchronousTestCase):
    def test_two_challenges(self) -> None:
        login = Login()
        self.assertEqual(login.start(None), Challenge(b"Username:"))
        self.assertEqual(login.respond(b"alice"), Challenge(b"Password:"))
        self.assertEqual(login.respond(b"secret"), Credentials(b"alice", b"secret"))

    def test_initial_response_is_the_user_name(self) -> None:
        login = Login()
        self.assertEqual(login.start(b"alice"), Challenge(b"Password:"))
        self.assertEqual(login.respond(b"pw"), Credentials(b"alice", b"pw"))

    def test_empty_answers_fail(self) -> None:
        self.assertIsInstance(Login().start(b""), Failed)
        login = Login()
        login.start(b"alice")
        self.assertIsInstance(login.respond(b""), Failed)
