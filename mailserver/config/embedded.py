"""
The configuration used when no file is given: main.cf text, parsed by the
same code as a real file.  Safe to start unprivileged for testing: loopback
only, GreenMail's ports, data under ./mailserver-data.
"""

from __future__ import annotations

EMBEDDED_MAIN_CF = """\
# Built-in default configuration (mailserver started without a file).
inet_interfaces = loopback-only

# GreenMail's unprivileged ports.
smtpd_listen = tcp:3025
submission_listen = tcp:3587
smtps_listen = tcp:3465
pop3_listen = tcp:3110
pop3s_listen = tcp:3995
imap_listen = tcp:3143
imaps_listen = tcp:3993
managesieve_listen = tcp:34190

# Relative to the current directory.
data_directory = ./mailserver-data
passwd_file = $data_directory/passwd
recipient_delimiter = +

# Created with DEFAULT_ALIASES at first start: root and postmaster reach a mailbox.
alias_maps = texthash:$data_directory/aliases
"""

DEFAULT_ALIASES = """\
# aliases(5) of the built-in default configuration, created at first start.
# Read directly (texthash:): edits count within seconds, no newaliases needed.
#
# postmaster always has a mailbox, even with no such user:
# $virtual_mailbox_base/DOMAIN/postmaster/ (add the user postmaster@DOMAIN
# to read it over IMAP or POP3), so what is sent to root and the system
# names ends there.  To send it to a person instead:
#   postmaster: alice@localhost
MAILER-DAEMON:  postmaster
root:           postmaster
abuse:          postmaster
"""
