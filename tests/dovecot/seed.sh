#!/usr/bin/env bash
# Usage: seed.sh DIR USER FILE [MAILBOX]
# Appends the RFC822 message in FILE to USER's mailbox (default INBOX).
# If the test Dovecot in DIR is running, uses
#   doveadm -c DIR/dovecot.conf save -u USER -m MAILBOX < FILE
# (doveadm needs the running server's auth-userdb socket in DIR/run for the user lookup).
# If it is not running, drops the file straight into the Maildir "new/" directory
# instead (Dovecot picks it up on the next SELECT/STATUS; flags: none, recent).
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: $0 DIR USER FILE [MAILBOX]" >&2
  exit 2
fi
DIR=$1
USER_NAME=$2
FILE=$3
MBOX=${4:-INBOX}

pid=
[ -s "$DIR/run/master.pid" ] && pid=$(cat "$DIR/run/master.pid")
if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
  exec doveadm -c "$DIR/dovecot.conf" save -u "$USER_NAME" -m "$MBOX" < "$FILE"
fi

# Offline: write into the Maildir++ layout used by dovecot.conf.in.
owner=$(stat -c %u:%g "$DIR/mail")
md="$DIR/mail/$USER_NAME"
if [ "$MBOX" != INBOX ]; then
  md="$md/.${MBOX//\//.}"
fi
mkdir -p "$md/new" "$md/cur" "$md/tmp"
[ "$MBOX" != INBOX ] && touch "$md/maildirfolder"
name="$(date +%s).M$(date +%N | sed 's/^0*//;s/^$/0/')P$$.seed"
cp "$FILE" "$md/tmp/$name"
chown -R "$owner" "$DIR/mail/$USER_NAME"
mv "$md/tmp/$name" "$md/new/$name"
