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
"""
