#!/bin/sh
# Install Debian's postfix, dovecot-imapd and dovecot-pop3d for bench/compare.py,
# without configuring or starting the system-wide services.
#
# postfix is preseeded to "No configuration"; a temporary policy-rc.d refuses
# every service start during the install (invoke-rc.d exit 101), and the
# system-wide services are stopped afterwards in case an init system started
# them anyway.  The private instances (bench/peers/postfix.py, dovecot.py)
# use their own config directories under a temp dir and loopback high ports.
set -eu
if [ "$(id -u)" != 0 ]; then
    echo "run as root (apt-get)" >&2
    exit 1
fi
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
policy=/usr/sbin/policy-rc.d
created_policy=
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"
    chmod 755 "$policy"
    created_policy=1
fi
cleanup() {
    if [ -n "$created_policy" ]; then rm -f "$policy"; fi
}
trap cleanup EXIT
export DEBIAN_FRONTEND=noninteractive
if ! command -v postfix >/dev/null 2>&1 || ! command -v dovecot >/dev/null 2>&1; then
    apt-get update -q
    apt-get install -y -q --no-install-recommends postfix dovecot-imapd dovecot-pop3d
fi
# Make sure nothing system-wide listens on the standard ports.
for svc in postfix dovecot; do
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        systemctl disable --now "$svc" >/dev/null 2>&1 || true
    fi
done
if [ -f /var/spool/postfix/pid/master.pid ]; then
    postfix stop >/dev/null 2>&1 || true
fi
if [ -f /run/dovecot/master.pid ]; then
    kill "$(cat /run/dovecot/master.pid)" 2>/dev/null || true
fi
postconf mail_version 2>/dev/null || true
dovecot --version
