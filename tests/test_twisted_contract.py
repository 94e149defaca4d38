"""
The Twisted names we depend on, pinned in one place.

We subclass twisted.mail's ESMTP, POP3, IMAP4Server and ESMTPClient and reach
into some of their private state (``_cbAuthenticated``, ``_pendingLiteral``,
``_buffer``...).  A Twisted upgrade that renames or drops one of them must fail
here, loudly, naming the module of ours that needs it, instead of failing at
runtime on a live session.  When you start using another Twisted name in a
subclass or a collaborator, add it here.
"""

from __future__ import annotations

import ast
import inspect
import os
import re

from twisted.mail import imap4, pop3, smtp
from twisted.protocols.basic import LineReceiver
from twisted.protocols.policies import TimeoutMixin
from twisted.trial.unittest import SynchronousTestCase

import mailserver


def defines(cls: type, name: str) -> bool:
    """Whether C{cls} (or a base) has C{name} as a class attribute or assigns C{self.name}."""
    if hasattr(cls, name):
        return True
    pattern = re.compile(rf"self\.{re.escape(name)}\s*(?::[^=]+)?=")
    for klass in inspect.getmro(cls):
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        if pattern.search(source):
            return True
    return False


SMTP_SERVER = "mailserver/smtp/server.py"
SMTP_AUTH = "mailserver/smtp/auth.py"
IMAP_SERVER = "mailserver/imap/server.py"
POP3_SERVER = "mailserver/pop3/server.py"
RELAY_CLIENT = "mailserver/queue/client.py"
MANAGESIEVE = "mailserver/managesieve/server.py"

# (Twisted class, needed by, names: private first, then overridden hooks and attributes we read).
CONTRACT: list[tuple[type, str, tuple[str, ...]]] = [
    (smtp.ESMTP, SMTP_AUTH, ("_cbAuthenticated", "_ebAuthenticated", "state_AUTH", "challenger", "challengers",
                             "portal", "authenticated", "mode")),
    (smtp.ESMTP, SMTP_SERVER, ("_buffer", "_helo", "_onLogout", "_cbAuthenticated", "canStartTLS", "ctx",
                               "deliveryFactory", "do_DATA", "do_EHLO", "do_HELO", "do_MAIL", "do_QUIT",
                               "do_RCPT", "do_RSET", "ext_AUTH", "ext_STARTTLS", "extensions", "host",
                               "listExtensions", "lookupMethod", "sendCode", "startedTLS", "timeout",
                               "timeoutConnection", "dataReceived", "connectionMade", "connectionLost",
                               "callLater", "resetTimeout", "setTimeout", "timeOut")),
    (smtp.SMTPFactory, "mailserver/smtp/factory.py", ("buildProtocol", "portal", "protocol", "timeout")),
    (imap4.IMAP4Server, IMAP_SERVER, ("_pendingLiteral", "_onLogout", "parseState", "POSTAUTH_TIMEOUT",
                                      "parse_command", "account", "mbox", "state", "canStartTLS", "ctx",
                                      "challengers", "portal", "startedTLS", "listCapabilities",
                                      "sendBadResponse", "sendContinuationRequest", "sendNegativeResponse",
                                      "sendPositiveResponse", "lineLengthExceeded", "clearLineBuffer",
                                      "setRawMode", "pauseProducing", "resumeProducing", "stopProducing",
                                      "paused", "dataReceived", "connectionMade", "connectionLost",
                                      "callLater", "resetTimeout", "setTimeout", "timeOut")),
    (imap4.IMAP4Server, "mailserver/imap/session_commands.py", ("_onLogout",)),
    (pop3.POP3, POP3_SERVER, ("_buffer", "_onLogout", "_unblock", "blocked", "mbox", "portal", "MAX_LENGTH",
                              "delimiter", "do_APOP", "do_AUTH", "do_CAPA", "do_DELE", "do_LAST", "do_LIST",
                              "do_NOOP", "do_PASS", "do_QUIT", "do_RETR", "do_RPOP", "do_RSET", "do_STAT",
                              "do_TOP", "do_UIDL", "do_USER", "listCapabilities", "lineLengthExceeded",
                              "lineReceived", "dataReceived", "connectionMade", "connectionLost",
                              "stopProducing", "callLater", "resetTimeout", "setTimeout", "timeOut",
                              "timeoutConnection")),
    (smtp.ESMTPClient, RELAY_CLIENT, ("_disconnectFromServer", "_expected", "_failresponse", "_okresponse",
                                      "_tlsMode", "authenticate", "context", "esmtpState_ehlo",
                                      "esmtpState_serverConfig", "esmtpState_starttls", "esmtpTLSFailed",
                                      "finishedFileTransfer", "registerAuthenticator",
                                      "requireTransportSecurity", "sendError", "smtpConnectionFailed",
                                      "smtpState_data", "smtpState_from", "smtpState_helo", "smtpState_to",
                                      "transformChunk", "tryTLS", "timeout", "timeoutConnection",
                                      "resetTimeout", "connectionLost")),
    (LineReceiver, MANAGESIEVE, ("MAX_LENGTH", "lineLengthExceeded", "lineReceived", "rawDataReceived",
                                 "setLineMode", "setRawMode", "pauseProducing", "resumeProducing")),
    (TimeoutMixin, MANAGESIEVE, ("callLater", "resetTimeout", "setTimeout", "timeoutConnection")),
]  # fmt: skip


def private_names_used(module_path: str) -> set[str]:
    """C{_names} read or written on C{self}/C{session}/C{server}, or via C{super()}, in one of our modules."""
    root = os.path.dirname(os.path.dirname(mailserver.__file__))
    with open(os.path.join(root, module_path), encoding="utf-8") as f:
        tree = ast.parse(f.read())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            owner = node.value
            if isinstance(owner, ast.Name) and owner.id in ("self", "session", "server"):
                found.add(node.attr)
            elif isinstance(owner, ast.Call) and getattr(owner.func, "id", None) == "super":
                found.add(node.attr)
    return found


class TwistedContractTests(SynchronousTestCase):
    def test_every_private_twisted_name_in_use_is_pinned(self) -> None:
        """A new C{self._x} that is Twisted's (not ours) must be added to CONTRACT."""
        for cls, needed_by, names in CONTRACT:
            theirs = {name for name in private_names_used(needed_by) if defines(cls, name)}
            pinned = {name for c, n, ns in CONTRACT if n == needed_by for name in ns}
            self.assertEqual(theirs - pinned, set(), f"{needed_by} uses private names of {cls.__qualname__}")

    def test_every_name_we_depend_on_exists(self) -> None:
        missing = [
            f"{cls.__module__}.{cls.__qualname__}.{name} (needed by {needed_by})"
            for cls, needed_by, names in CONTRACT
            for name in names
            if not defines(cls, name)
        ]
        self.assertEqual(missing, [], "Twisted no longer provides these; adapt the named modules")

    def test_private_modules_and_functions(self) -> None:
        from twisted.mail import _except

        self.assertTrue(
            issubclass(_except.IllegalClientResponse, Exception),
            "twisted.mail._except.IllegalClientResponse (needed by mailserver/smtp/auth.py, auth/challengers.py)",
        )
        from twisted.internet import endpoints

        self.assertTrue(
            callable(getattr(endpoints, "_tokenize", None)),
            "twisted.internet.endpoints._tokenize (mailserver/config/endpoints.py follows its tokenising rules)",
        )

    def test_authentication_callbacks_take_the_login_result(self) -> None:
        """smtp/auth.py calls _cbAuthenticated(result) and _ebAuthenticated(failure) itself."""
        for name in ("_cbAuthenticated", "_ebAuthenticated"):
            parameters = list(inspect.signature(getattr(smtp.ESMTP, name)).parameters)
            self.assertEqual(len(parameters), 2, f"smtp.ESMTP.{name}{parameters} (needed by {SMTP_AUTH})")

    def test_regression_contract_check_detects_a_missing_name(self) -> None:
        """The check itself: a name Twisted does not define is reported."""
        self.assertFalse(defines(smtp.ESMTP, "_noSuchPrivateName"))
        self.assertTrue(defines(smtp.ESMTP, "_helo"))  # assigned in a method, not a class attribute
