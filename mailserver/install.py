"""
First-run files: the default aliases of the embedded configuration, and the
commented sample configuration installed into an empty configuration
directory (C{mailserver init-config DIR}, the Docker image's first start).
Blocking: called before the reactor runs, or by a command.
"""

from __future__ import annotations

import os

from mailserver.config.embedded import DEFAULT_ALIASES
from mailserver.config.parameters import EMBEDDED
from mailserver.durable import replace_atomically
from mailserver.tables.aliases import source_path, table_type

#: The sample files (etc/ of the source tree), in the order they are copied.
#: mailserver.cf last: a run cut short leaves no main file, so the next one completes it.
SAMPLE_FILES = ("aliases", "header_checks", "mime_header_checks", "body_checks", "mailserver.cf")
#: The directory the samples name in their paths, replaced by the target directory.
SAMPLE_DIRECTORY = "/etc/mailserver"
#: Where the Docker image (and packagers) put the samples.
INSTALLED_SAMPLES = "/usr/share/mailserver/etc"


def install_default_aliases(config) -> str | None:
    """For the embedded default: create its C{texthash:} aliases file if missing; its path."""
    if config.path != EMBEDDED:
        return None
    for table in config.alias_maps:
        path = source_path(table)
        if table_type(table) == "texthash" and not os.path.exists(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            replace_atomically(path, DEFAULT_ALIASES.encode("utf-8"), 0o644)
            return path
    return None


def default_samples() -> str:
    """The sample directory: the checkout's C{etc/} if there is one, else L{INSTALLED_SAMPLES}."""
    checkout = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "etc")
    if os.path.isfile(os.path.join(checkout, "mailserver.cf")):
        return checkout
    return INSTALLED_SAMPLES


class AlreadyConfigured(Exception):
    """The directory holds a main configuration already: nothing is changed."""


def init_config(directory: str, samples: str | None = None) -> list[str]:
    """
    Install the commented samples into C{directory} (created if needed),
    their C{/etc/mailserver} paths rewritten to it, with an empty passwd
    file (0600); the paths written.  Files already there are kept.

    @raise AlreadyConfigured: C{directory/mailserver.cf} exists.
    @raise OSError: a sample cannot be read or a file written.
    """
    samples = samples or default_samples()
    directory = os.path.abspath(directory)
    main_cf = os.path.join(directory, "mailserver.cf")
    if os.path.exists(main_cf):
        raise AlreadyConfigured(main_cf)
    os.makedirs(directory, exist_ok=True)
    written = []
    passwd = os.path.join(directory, "passwd")
    if not os.path.exists(passwd):
        os.close(os.open(passwd, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        written.append(passwd)
    for name in SAMPLE_FILES:
        target = os.path.join(directory, name)
        if os.path.exists(target):
            continue
        with open(os.path.join(samples, name), encoding="utf-8") as handle:
            text = handle.read()
        if directory != SAMPLE_DIRECTORY:
            text = text.replace(SAMPLE_DIRECTORY + "/", directory + "/")
        mode = os.stat(os.path.join(samples, name)).st_mode & 0o7777
        replace_atomically(target, text.encode("utf-8"), mode)
        written.append(target)
    return written
