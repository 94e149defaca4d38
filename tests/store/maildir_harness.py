"""
Shared by the Maildir store tests: a reactor whose thread pool runs work
inline (so tests stay synchronous), and delivery helpers.
"""

from __future__ import annotations

import os
from mailserver.errors import MailError
from mailserver.store.maildir import MaildirStore
from tests.reactors import ThreadedClock

HOST = "mx.example.org"
MESSAGE = b"From: a@example.org\nTo: b@example.org\nSubject: hi\n\nHello\n"
PREFIX = b"Return-Path: <a@example.org>\nDelivered-To: b@example.org\n"


def corpus_directory() -> str:
    """/work/shared/corpus/mail-fixtures, found relative to the repository."""
    repo_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return os.path.join(os.path.dirname(repo_root), "shared", "corpus", "mail-fixtures")


def files(directory: str) -> list[str]:
    return sorted(os.listdir(directory)) if os.path.isdir(directory) else []


def proc_path(fd: int) -> str:
    return os.readlink(f"/proc/self/fd/{fd}")


class DeliveryTestsMixin:
    """Helpers shared by the tests below."""

    def setUp(self) -> None:
        self.root = os.path.abspath(self.mktemp())  # type: ignore[attr-defined]
        os.makedirs(self.root)
        self.reactor = ThreadedClock()
        self.reactor.advance(1700000000.25)
        self.delivered: list[list[str]] = []
        self.store = MaildirStore(self.reactor, HOST, on_delivered=self.delivered.append)

    def maildir(self, name: str) -> str:
        return os.path.join(self.root, name, "Maildir")

    def deliver(self, message: bytes, copies: list[tuple[str, bytes]]) -> list[str]:
        return self.successResultOf(self.store.deliver(message, copies))  # type: ignore

    def fail_delivery(self, message: bytes, copies: list[tuple[str, bytes]]) -> MailError:
        failure = self.failureResultOf(  # type: ignore[attr-defined]
            self.store.deliver(message, copies), MailError
        )
        return failure.value

    def assertNothingLeft(self, *maildirs: str) -> None:
        for m in maildirs:
            self.assertEqual(files(os.path.join(m, "new")), [])  # type: ignore
            self.assertEqual(files(os.path.join(m, "tmp")), [])  # type: ignore

    def assertNothingLeftIn(self, sub: str, *maildirs: str) -> None:
        for m in maildirs:
            self.assertEqual(files(os.path.join(m, sub)), [])  # type: ignore
