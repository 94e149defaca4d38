#!/bin/sh
# The image's entry point (as root): on first start install the commented
# sample configuration into an empty /etc/mailserver (a fresh bind mount
# hides what the image had there), give the passwd-file and the data
# directory to the mailserver user, then run the command: twistd, which
# binds the ports and drops to that user (--uid/--gid).
set -eu

CONFIG="${MAILSERVER_CONFIG:-/etc/mailserver/mailserver.cf}"
CONFIG_DIR="$(dirname "$CONFIG")"
# The sample's data_directory and the image's user (other values: a
# configuration of your own, or tests/test_dockerfile.py).
DATA_DIR="${MAILSERVER_DATA:-/var/lib/mailserver}"
RUN_AS="${MAILSERVER_USER:-mailserver}"

if [ "$(id -u)" = 0 ]; then
    if [ ! -e "$CONFIG" ]; then
        mailserver init-config "$CONFIG_DIR"
    fi
    # The daemon re-reads the passwd-file as $RUN_AS; `mailserver user add`
    # (docker exec, as root) keeps the file's owner.
    if [ -e "$CONFIG_DIR/passwd" ]; then
        chown "$RUN_AS:" "$CONFIG_DIR/passwd"
        chmod 0600 "$CONFIG_DIR/passwd"
    fi
    mkdir -p "$DATA_DIR"
    find "$DATA_DIR" ! -user "$RUN_AS" -exec chown "$RUN_AS:" {} +
fi
exec "$@"
