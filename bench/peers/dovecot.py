"""
A private Dovecot instance for benchmarks: ``dovecot -F`` in the foreground
with its own configuration, base_dir and logs under a scratch directory,
IMAP and POP3 on 127.0.0.1 ports, reading a Maildir (the one Postfix's
virtual(8) writes, or one the benchmark fills), one passwd-file user with a
PLAIN password.  Stopped by its master's pid.

Run as root (Dovecot's master must start as root to drop to its users);
``bench/peers/install.sh`` installs the packages without starting the
system's instance.
"""

from __future__ import annotations

import os
import pwd

from accounting import Accounting
from postfix import MAIL_USER, _wait_for_port

DOVECOT = "/usr/sbin/dovecot"


def available() -> bool:
    return os.path.exists(DOVECOT) and os.geteuid() == 0


class DovecotInstance:
    """Dovecot serving C{user}@C{domain} (password C{password}) from C{mail}/DOMAIN/USER."""

    name = "dovecot"

    def __init__(self, root: str, mail: str, imap_port: int, pop3_port: int,
                 user: str = "bench", domain: str = "example.com", password: str = "bench-password",
                 extra: str = "") -> None:
        self.root = root
        self.imap_port, self.pop3_port = imap_port, pop3_port
        self.maildir = os.path.join(mail, domain, user)
        owner = pwd.getpwnam(MAIL_USER)
        os.makedirs(root, exist_ok=True)
        os.chmod(root, 0o755)
        conf = os.path.join(root, "dovecot.conf")
        passwd = os.path.join(root, "dovecot.passwd")
        with open(passwd, "w") as handle:
            handle.write(f"{user}@{domain}:{{PLAIN}}{password}::::::\n")
        home = os.path.join(root, "home")
        os.makedirs(home, exist_ok=True)
        os.chown(home, owner.pw_uid, owner.pw_gid)
        with open(conf, "w") as handle:
            handle.write(f"""\
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = imap pop3
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_username_format = %Lu
mail_location = maildir:{mail}/%d/%n
pop3_uidl_format = %08Xu%08Xv
default_internal_user = dovecot
default_login_user = dovenull
first_valid_uid = 1
mail_fsync = optimized
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {passwd}
}}
userdb {{
  driver = static
  args = uid={owner.pw_uid} gid={owner.pw_gid} home={home}/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {pop3_port}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
{extra}""")
        self.accounting = Accounting("dovecot")
        self.process = self.accounting.spawn([DOVECOT, "-F", "-c", conf], os.path.join(root, "dovecot.out"))
        _wait_for_port(imap_port, self.process, os.path.join(root, "dovecot.log"))
        _wait_for_port(pop3_port, self.process, os.path.join(root, "dovecot.log"))

    def stop(self) -> None:
        """TERM to the master (its own pid): it stops its children and exits."""
        self.accounting.stop()

    def give_to_mail_user(self) -> None:
        """chown -R the Maildir to the mail user (after the benchmark filled it as root)."""
        owner = pwd.getpwnam(MAIL_USER)
        for top in (os.path.dirname(os.path.dirname(self.maildir)), os.path.dirname(self.maildir)):
            os.chown(top, owner.pw_uid, owner.pw_gid)
        for path, dirs, files in os.walk(self.maildir):
            for name in [path] + [os.path.join(path, f) for f in dirs + files]:
                os.chown(name, owner.pw_uid, owner.pw_gid)


