"""twistd plugin: C{twistd -n mailserver [--config PATH]}."""

from twisted.application.service import ServiceMaker

mailserver = ServiceMaker(
    "mailserver",
    "mailserver.tap",
    "ESMTP, Maildir, POP3 and IMAP4 mail server",
    "mailserver",
)
