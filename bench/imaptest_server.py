"""
Serve IMAP on 127.0.0.1 for Dovecot's imaptest compliance scripts.

Two users (``testuser`` and ``testuser2``, password ``pass``, as imaptest
expects) with Maildirs under a scratch directory (or ``--base``); prints
the port, serves until interrupted.  See docs/imap.rst for the imaptest
command line.

Usage: python bench/imaptest_server.py [--port 14300] [--base DIR]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--port", type=int, default=14300)
    parser.add_argument("--base", default=None)
    options = parser.parse_args()

    from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
    from twisted.cred.portal import Portal
    from twisted.internet import reactor
    from twisted.mail.imap4 import IAccount

    from mailserver.auth.realm import MailRealm
    from mailserver.service import maildir_imap_accounts
    from mailserver.imap.server import IMAPFactory
    from mailserver.store.notify import MailboxNotifier

    base = options.base or tempfile.mkdtemp(prefix="imaptest-")
    notifier = MailboxNotifier(reactor)
    accounts = maildir_imap_accounts(lambda user: os.path.join(base, user), notifier, reactor)
    checker = InMemoryUsernamePasswordDatabaseDontUse(testuser=b"pass", testuser2=b"pass")
    portal = Portal(MailRealm({IAccount: accounts}), [checker])
    factory = IMAPFactory(portal, reactor, notifier, login_failure_delay=0)
    port = reactor.listenTCP(options.port, factory, interface="127.0.0.1")
    print(f"imap on 127.0.0.1:{port.getHost().port}, Maildirs in {base}", flush=True)
    reactor.run()


if __name__ == "__main__":
    main()
