#!/usr/bin/env bash
# Usage: seed.sh DIR USER FILE [MAILBOX]
# Appends the RFC822 message in FILE to USER's mailbox (default INBOX) via doveadm,
# using the test instance's config. Works whether or not the server is running.
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: $0 DIR USER FILE [MAILBOX]" >&2
  exit 2
fi
DIR=$1
USER_NAME=$2
FILE=$3
MBOX=${4:-INBOX}
exec doveadm -c "$DIR/dovecot.conf" save -u "$USER_NAME" -m "$MBOX" < "$FILE"
