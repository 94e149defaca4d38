"""
A private Postfix instance for benchmarks: ``master -d`` in the foreground
with its own config, queue and data directories under a scratch directory,
smtpd on 127.0.0.1:PORT, and virtual(8) delivering into a Maildir.

virtual(8) rather than local(8): the recipient is a virtual user, as in our
server and in Dovecot, so no system account is created; it writes the same
Maildir (tmp/, fsync, rename into new/).  The ``postfix`` command is not
used (it refuses a config directory that the system's main.cf does not list
in alternate_config_directories); master runs as a child of the benchmark
and is stopped by its pid.

Run as root (master and virtual change uid); ``bench/peers/install.sh``
installs the package without starting the system's instance.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import socket
import subprocess
import time

from accounting import Accounting

DAEMONS = "/usr/lib/postfix/sbin"
MASTER_CF = "/usr/share/postfix/master.cf.dist"
#: Queue directories, owner and mode (as postfix-files creates them).
QUEUE_DIRS = (
    ("active", "postfix", 0o700), ("bounce", "postfix", 0o700), ("corrupt", "postfix", 0o700),
    ("defer", "postfix", 0o700), ("deferred", "postfix", 0o700), ("flush", "postfix", 0o700),
    ("hold", "postfix", 0o700), ("incoming", "postfix", 0o700), ("private", "postfix", 0o700),
    ("saved", "postfix", 0o700), ("trace", "postfix", 0o700), ("maildrop", "postfix", 0o730),
    ("public", "postfix", 0o710), ("pid", "root", 0o755),
)
#: The Maildir owner (virtual(8) refuses root).
MAIL_USER = "nobody"


def available() -> bool:
    return os.path.exists(os.path.join(DAEMONS, "master")) and os.geteuid() == 0


def _master_cf(port: int) -> str:
    """Debian's master.cf.dist, no chroot, smtpd on the loopback port only."""
    lines = []
    with open(MASTER_CF) as handle:
        for line in handle:
            fields = line.split()
            if line[:1] in "# \t\n" or len(fields) < 8:
                lines.append(line)
                continue
            if fields[0] == "smtp" and fields[1] == "inet":
                fields[0] = f"127.0.0.1:{port}"
            fields[4] = "n"
            lines.append("  ".join(fields) + "\n")
    return "".join(lines)


class PostfixInstance:
    """Postfix on 127.0.0.1:C{port} delivering bench@example.com into C{maildir}."""

    name = "postfix"

    def __init__(self, root: str, port: int, user: str = "bench", domain: str = "example.com") -> None:
        self.root = root
        self.port = port
        self.etc = os.path.join(root, "etc")
        self.mail = os.path.join(root, "mail")
        self.maildir = os.path.join(self.mail, domain, user)
        owner = pwd.getpwnam(MAIL_USER)
        os.makedirs(root, exist_ok=True)
        os.chmod(root, 0o755)  # mkdtemp's 0700 would shut out the postfix and nobody users
        os.makedirs(self.etc, exist_ok=True)
        os.makedirs(self.mail, exist_ok=True)
        os.chown(self.mail, owner.pw_uid, owner.pw_gid)
        with open(os.path.join(self.etc, "vmailbox"), "w") as handle:
            handle.write(f"{user}@{domain} {domain}/{user}/\n")
        with open(os.path.join(self.etc, "main.cf"), "w") as handle:
            handle.write(
                "compatibility_level = 3.6\n"
                f"queue_directory = {root}/spool\ndata_directory = {root}/data\n"
                "meta_directory = /etc/postfix\nshlib_directory = /usr/lib/postfix\n"
                f"daemon_directory = {DAEMONS}\ncommand_directory = /usr/sbin\n"
                "mail_owner = postfix\nsetgid_group = postdrop\n"
                "myhostname = peer.example.net\nmydestination =\n"
                "inet_interfaces = 127.0.0.1\ninet_protocols = ipv4\nmynetworks = 127.0.0.0/8\n"
                f"maillog_file = {root}/maillog\nmaillog_file_prefixes = {root}\n"
                "alias_maps =\nalias_database =\nbiff = no\nsmtputf8_enable = no\n"
                "smtpd_client_connection_count_limit = 0\nsmtpd_client_connection_rate_limit = 0\n"
                "message_size_limit = 0\nvirtual_mailbox_limit = 0\n"
                f"virtual_mailbox_domains = {domain}\nvirtual_mailbox_base = {self.mail}\n"
                f"virtual_mailbox_maps = texthash:{self.etc}/vmailbox\n"
                f"virtual_uid_maps = static:{owner.pw_uid}\nvirtual_gid_maps = static:{owner.pw_gid}\n"
                "virtual_minimum_uid = 1\n"
            )
        with open(os.path.join(self.etc, "master.cf"), "w") as handle:
            handle.write(_master_cf(port))
        postfix_uid = pwd.getpwnam("postfix").pw_uid
        postdrop_gid = grp.getgrnam("postdrop").gr_gid
        spool = os.path.join(root, "spool")
        os.makedirs(spool, exist_ok=True)
        for name, owner_name, mode in QUEUE_DIRS:
            path = os.path.join(spool, name)
            os.makedirs(path, exist_ok=True)
            os.chmod(path, mode)
            if owner_name == "postfix":
                os.chown(path, postfix_uid, postdrop_gid if mode & 0o070 else -1)
        data = os.path.join(root, "data")
        os.makedirs(data, exist_ok=True)
        os.chown(data, postfix_uid, -1)
        self.accounting = Accounting("postfix")
        self.process = self.accounting.spawn(
            [os.path.join(DAEMONS, "master"), "-d", "-c", self.etc], os.path.join(root, "master.out")
        )
        _wait_for_port(port, self.process, os.path.join(root, "maillog"))

    def stop(self) -> None:
        """TERM to master (its own pid): it stops its children and exits."""
        self.accounting.stop()

    def clear(self) -> None:
        """Empty the Maildir's new/ between runs."""
        new = os.path.join(self.maildir, "new")
        if os.path.isdir(new):
            shutil.rmtree(new)
            os.mkdir(new)


def _wait_for_port(port: int, process: subprocess.Popen, log: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    text = open(log).read()[-3000:] if os.path.exists(log) else "(no log)"
    raise RuntimeError(f"server on port {port} did not start:\n{text}")
