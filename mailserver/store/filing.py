"""
Sieve's fileinto at final delivery: where a copy filed into a folder goes,
with which Maildir info letters (the blocking half of
L{mailserver.interfaces.IMailStore.file_into}).

A folder that does not exist is made only when asked (``:create``,
C{lda_mailbox_autocreate}) or when it is a SPECIAL-USE folder (Dovecot's
auto = create); otherwise, or for a bad name, the copy goes to INBOX.
Keywords are added to the folder's ``dovecot-keywords`` table under its
UID-list lock, as IMAP STORE does.  Nothing here raises for a folder
problem: the reason is returned as an event for the Sieve log.
"""

from __future__ import annotations

import os
from typing import Sequence

from mailserver.durable import replace_atomically
from mailserver.store import flags as flagmod
from mailserver.store.folders import FolderError, FolderExistsError, Folders, ensure_maildir, is_inbox, normalize_name
from mailserver.store.index import KEYWORDS_FILE
from mailserver.store.uidlist import UidList


def file_into(maildir: str, folder: str, flags: Sequence[str] = (), create: bool = False) -> tuple[str, str, list[str]]:
    """
    C{(folder's Maildir path, info letters, events)} for a copy of the user
    whose INBOX is C{maildir} filed into C{folder} with IMAP C{flags};
    blocking.  C{create}: make a missing folder (and subscribe it).
    """
    events: list[str] = []
    path = maildir
    if not is_inbox(folder):
        folders = Folders(maildir)
        try:
            candidate = folders.path(folder)
            if not folders.exists(folder):
                # The SPECIAL-USE folders exist for IMAP from the first login (Dovecot's
                # auto = create): a new user's Junk must not depend on having logged in.
                if not (create or normalize_name(folder) in folders.special_use):
                    raise FolderError(f"folder {folder!r} does not exist")
                try:
                    folders.create(folder)
                    folders.subscribe(folder)  # clients that list subscribed folders see it
                except FolderExistsError:
                    pass
            path = candidate
            events.append(f"fileinto {folder}")
        except FolderError as error:
            events.append(f"fileinto {folder!r} failed ({error}): INBOX")
    return path, info_letters(path, flags, events) if flags else "", events


def info_letters(maildir: str, flags: Sequence[str], events: list[str]) -> str:
    """
    Maildir info letters for IMAP C{flags}: system flags as ``DFRST``,
    keywords as the folder's ``dovecot-keywords`` letters, added to that
    file under the folder's UID-list lock as IMAP STORE does.
    """
    wanted = []
    for flag in flags:
        if flagmod.is_system_flag(flag) and flagmod.canonical_flag(flag) not in flagmod.SYSTEM_FLAGS:
            events.append(f"flag {flag} cannot be stored")
        else:
            wanted.append(flagmod.canonical_flag(flag))
    keywords = [f for f in wanted if not flagmod.is_system_flag(f)]
    table: list[str | None] = []
    if keywords:
        ensure_maildir(maildir)
        path = os.path.join(maildir, KEYWORDS_FILE)
        try:
            with UidList(maildir).locked():
                try:
                    with open(path, encoding="utf-8", errors="replace") as handle:
                        table = flagmod.parse_keywords(handle.read(1 << 16))
                except FileNotFoundError:
                    table = []
                grown = flagmod.add_keywords(table, keywords)
                if grown != table:
                    replace_atomically(path, flagmod.format_keywords(grown).encode("utf-8"))
                table = grown
        except flagmod.FlagError as error:
            events.append(f"keywords not stored: {error}")
            wanted = [f for f in wanted if flagmod.is_system_flag(f)]
    return flagmod.flags_to_letters(wanted, table)
