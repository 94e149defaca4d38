"""mailserver: ESMTP, Maildir, POP3 and IMAP4 in one Twisted process."""

__version__ = "0.1.0"
