"""Pure: where a user's Maildir lives (Postfix's home_mailbox / virtual_mailbox_base)."""

from __future__ import annotations

import functools
import os


@functools.lru_cache(maxsize=4096)  # pure: asked for every RCPT, with a few thousand users at most
def maildir_for(
    name: str, home: str | None, home_mailbox: str, virtual_mailbox_base: str
) -> str:
    """
    The Maildir directory of user C{name} (C{user@domain} or bare C{user}).

    A user with a home gets C{home/home_mailbox} (Postfix semantics, default
    C{Maildir/}); one without gets C{virtual_mailbox_base/<domain>/<user>/},
    or C{virtual_mailbox_base/<user>/} for a bare name.  Names are validated
    by the passwd-file parser; here any path separator is refused anyway.
    """
    if home:
        return os.path.join(home, home_mailbox).rstrip("/")
    local, _, domain = name.lower().partition("@")
    for part in (local, domain):
        if "/" in part or part in (".", "..") or "\0" in part:
            raise ValueError(f"unsafe user name {name!r}")
    parts = [virtual_mailbox_base] + ([domain] if domain else []) + [local]
    return os.path.join(*parts)
