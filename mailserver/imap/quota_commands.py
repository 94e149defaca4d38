"""
IMAP QUOTA (RFC 9208): GETQUOTAROOT and GETQUOTA report the user's one
quota root C{""} (STORAGE in units of 1024 octets, MESSAGE); SETQUOTA is
refused, as quotas are set by the administrator (main.cf C{quota_rule},
passwd-file C{userdb_quota_rule}).  A user without limits has no quota root.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mailserver.imap.folder_commands import AUTHED, encode_name, read_mailbox
from mailserver.imap.replies import Refused
from mailserver.imap.syntax import Command
from mailserver.imap.wire import astring

if TYPE_CHECKING:
    from mailserver.imap.server import IMAPServer

#: The capabilities these commands add (RFC 9208 section 3.2).
CAPABILITIES = (b"QUOTA", b"QUOTA=RES-STORAGE", b"QUOTA=RES-MESSAGE")
ROOT = ""


async def _quota_line(server: "IMAPServer") -> bytes | None:
    """The untagged QUOTA response for the user's root, or None without limits."""
    result = await server.account.quota_usage()
    if result is None:
        return None
    usage, limits = result
    resources = []
    if limits.storage:
        resources.append(b"STORAGE %d %d" % (-(-usage.storage // 1024), limits.storage // 1024))
    if limits.messages:
        resources.append(b"MESSAGE %d %d" % (usage.messages, limits.messages))
    return b"QUOTA " + astring(ROOT.encode()) + b" (" + b" ".join(resources) + b")"


async def getquotaroot(server: "IMAPServer", cmd: Command) -> bytes:
    name = read_mailbox(cmd)
    cmd.args.end()
    await server.account.target(name)  # NO for a mailbox that does not exist
    line = await _quota_line(server)
    roots = b"" if line is None else b" " + astring(ROOT.encode())
    server.untagged(b"QUOTAROOT " + encode_name(name) + roots)
    if line is not None:
        server.untagged(line)
    return b"GETQUOTAROOT completed"


async def getquota(server: "IMAPServer", cmd: Command) -> bytes:
    root = cmd.args.astring("quota root").decode("utf-8", "replace")
    cmd.args.end()
    line = await _quota_line(server) if root == ROOT else None
    if line is None:
        raise Refused("No such quota root", "NONEXISTENT")
    server.untagged(line)
    return b"GETQUOTA completed"


async def setquota(server: "IMAPServer", cmd: Command) -> bytes:
    raise Refused("Quotas are set by the administrator", "NOPERM")


COMMANDS = {
    "GETQUOTAROOT": (getquotaroot, AUTHED),
    "GETQUOTA": (getquota, AUTHED),
    "SETQUOTA": (setquota, AUTHED),
}
