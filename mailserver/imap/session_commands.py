"""
IMAP commands valid before login or in any state: CAPABILITY, NOOP,
LOGOUT, ID, LOGIN, AUTHENTICATE (SASL through twisted's challengers, with
SASL-IR), STARTTLS, ENABLE, NAMESPACE, IDLE.

LOGIN and AUTHENTICATE PLAIN/LOGIN are refused with C{NO
[PRIVACYREQUIRED]} where the connection's plain-text policy says so.
"""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING, Any

from twisted.cred.credentials import UsernamePassword
from twisted.logger import Logger
from twisted.mail import imap4
from twisted.mail.imap4 import IAccount

import mailserver
from mailserver.imap import condstore
from mailserver.imap.replies import Refused, printable
from mailserver.imap.syntax import Command, ParseError

if TYPE_CHECKING:
    from mailserver.imap.server import IMAPServer

log = Logger()
ANY = frozenset({"unauth", "auth", "select"})
AUTHED = frozenset({"auth", "select"})


async def _capability(server: "IMAPServer", cmd: Command) -> bytes:
    cmd.args.end()
    server.untagged(b"CAPABILITY " + b" ".join(server.listCapabilities()))
    return b"CAPABILITY completed"


async def _noop(server: "IMAPServer", cmd: Command) -> bytes:
    cmd.args.end()
    return b"NOOP completed"


async def _logout(server: "IMAPServer", cmd: Command) -> None:
    cmd.args.end()
    server.untagged(b"BYE Logging out")
    server.sendPositiveResponse(cmd.tag, b"LOGOUT completed")
    server.set_selected(None)
    server.state = "logout"
    server.transport.loseConnection()
    return None


async def _id(server: "IMAPServer", cmd: Command) -> bytes:
    args = cmd.args
    fields: list[bytes] = []
    if args.maybe(b"("):
        while not args.maybe(b")"):
            if fields:
                args.sp()
            fields.append(args.string("ID field"))
            args.sp()
            value = args.atom("ID value") if args.peek().upper() == b"N" else None
            if value is not None and value.upper() != "NIL":
                raise ParseError("ID values are strings or NIL")
            fields.append(b"NIL" if value is not None else args.string("ID value"))
            if len(fields) > 60:
                raise ParseError("too many ID fields")
    else:
        if args.atom("ID list").upper() != "NIL":
            raise ParseError("ID takes a list or NIL")
    args.end()
    if fields:
        log.info("imap: client ID {fields}", fields=[printable(f) for f in fields])
    server.untagged(b'ID ("name" "mailserver" "version" "' + mailserver.__version__.encode() + b'")')
    return b"ID completed"


async def _enable(server: "IMAPServer", cmd: Command) -> bytes:
    names = [cmd.args.atom("capability")]
    while not cmd.args.at_end():
        cmd.args.sp()
        names.append(cmd.args.atom("capability"))
    newly = condstore.enable(server, names)
    server.untagged(b"ENABLED" + b"".join(b" " + n.encode() for n in newly))
    return b"ENABLE completed"


async def _namespace(server: "IMAPServer", cmd: Command) -> bytes:
    cmd.args.end()
    server.untagged(b'NAMESPACE (("" "/")) NIL NIL')
    return b"NAMESPACE completed"


async def _idle(server: "IMAPServer", cmd: Command) -> bytes | None:
    return await server.idle(cmd)


#: SASL mechanisms that carry the password itself: refused where plain text is.
PLAINTEXT_MECHANISMS = frozenset({b"PLAIN", b"LOGIN"})
#: Dovecot's replies when a password would travel in the clear.
PLAINTEXT_DISABLED = "Plaintext authentication disallowed on non-secure connections."
PLAINTEXT_ALERT = (
    b"BAD [ALERT] Plaintext authentication not allowed without SSL/TLS, but your client "
    b"did it anyway. If anyone was listening, the password was exposed."
)


def _refuse_plaintext(server: "IMAPServer", command: str, password_sent: bool) -> Refused:
    """C{NO [PRIVACYREQUIRED]}, with Dovecot's alert if the password was already sent."""
    log.info("imap: plaintext authentication refused command={command} rip={rip}",
             command=command, rip=server.peer_ip)
    if password_sent:
        server.untagged(PLAINTEXT_ALERT)
    return Refused(PLAINTEXT_DISABLED, "PRIVACYREQUIRED")


async def _login(server: "IMAPServer", cmd: Command) -> bytes:
    user = cmd.args.astring("user name")
    cmd.args.sp()
    password = cmd.args.astring("password")
    cmd.args.end()
    if not server.plaintext_allowed():
        raise _refuse_plaintext(server, "LOGIN", password_sent=True)
    await _authenticated(server, UsernamePassword(user, password))
    return b"[CAPABILITY " + b" ".join(server.listCapabilities()) + b"] Logged in"


async def _authenticated(server: "IMAPServer", credentials: Any) -> None:
    """Log in through the portal (an AuthGuard: logged, delayed, banned), then open the account."""
    if server.portal is None:
        raise Refused("Authentication unavailable", "UNAVAILABLE")
    interface, avatar, logout = await server.portal.login(credentials, None, IAccount)
    opener = getattr(avatar, "open", None)  # folder set-up, in a thread
    if opener is not None:
        try:
            await opener()
        except Exception:
            logout()
            raise
    if server.transport is None or server.transport.disconnecting:
        logout()
        return
    connection = server.connection
    user = getattr(avatar, "user", None) or printable(getattr(credentials, "username", b"") or b"")
    if connection is not None and not connection.login(str(user).lower()):
        logout()
        raise Refused(connection.userip_refusal(), "LIMIT")
    log.info("imap: login of {user} rip={rip} tls={tls}",
             user=printable(getattr(credentials, "username", b"") or b""),
             rip=server.peer_ip, tls=server.is_secure())
    server.account = avatar
    server._onLogout = logout
    server.state = "auth"
    server.setTimeout(server.POSTAUTH_TIMEOUT)


async def _authenticate(server: "IMAPServer", cmd: Command) -> bytes:
    mechanism = cmd.args.atom("mechanism").upper().encode()
    initial = None
    if not cmd.args.at_end():
        cmd.args.sp()
        initial = cmd.args.atom("initial response").encode()
    cmd.args.end()
    factory = server.challengers.get(mechanism)
    if factory is None:
        raise Refused("Unsupported authentication mechanism", "CANNOT")
    if mechanism in PLAINTEXT_MECHANISMS and not server.plaintext_allowed():
        raise _refuse_plaintext(server, "AUTHENTICATE " + mechanism.decode(), password_sent=initial is not None)
    challenger = factory()
    while True:
        if initial is not None:
            response, initial = (b"" if initial == b"=" else initial), None
        else:
            server.sendLine(b"+ " + base64.b64encode(challenger.getChallenge()))
            response = await server.next_line()
        if response.strip() == b"*":
            raise ParseError("AUTHENTICATE cancelled")
        try:
            decoded = base64.b64decode(response.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise ParseError("malformed base64 in AUTHENTICATE") from None
        try:
            challenger.setResponse(decoded)
        except imap4.IllegalClientResponse as e:
            refuse = getattr(server.portal, "refuse", None)
            if refuse is None:
                raise ParseError(f"bad AUTHENTICATE response: {e}") from None
            # A malformed exchange (or another authzid) counts as a failed login (logged, delayed).
            await refuse(getattr(challenger, "username", None), str(e) or "malformed response")
        if not challenger.moreChallenges():
            break
    await _authenticated(server, challenger)
    return b"[CAPABILITY " + b" ".join(server.listCapabilities()) + b"] Logged in"


async def _starttls(server: "IMAPServer", cmd: Command) -> None:
    cmd.args.end()
    if server.is_secure():
        raise Refused("TLS is already active")
    if not server.can_start_tls():
        raise Refused("TLS is not available", "UNAVAILABLE")
    server.sendPositiveResponse(cmd.tag, b"Begin TLS negotiation now")
    server.start_tls()  # drops what was pipelined in the clear (CVE-2011-0411)
    return None


async def _compress(server: "IMAPServer", cmd: Command) -> None:
    mechanism = cmd.args.atom("compression mechanism").upper()
    cmd.args.end()
    if mechanism != "DEFLATE":
        raise ParseError(f"unknown compression mechanism {mechanism}")
    if server.compressing:
        raise Refused("DEFLATE is already active", "COMPRESSIONACTIVE")
    server.sendPositiveResponse(cmd.tag, b"DEFLATE active")
    server.start_compression()
    return None


COMMANDS = {
    "CAPABILITY": (_capability, ANY),
    "NOOP": (_noop, ANY),
    "LOGOUT": (_logout, ANY),
    "ID": (_id, ANY),
    "LOGIN": (_login, frozenset({"unauth"})),
    "AUTHENTICATE": (_authenticate, frozenset({"unauth"})),
    "STARTTLS": (_starttls, frozenset({"unauth"})),
    "ENABLE": (_enable, frozenset({"auth"})),
    "NAMESPACE": (_namespace, AUTHED),
    "IDLE": (_idle, AUTHED),
    "COMPRESS": (_compress, AUTHED),
}
