#!/usr/bin/env bash
# Usage: start.sh DIR IMAP_PORT IMAPS_PORT
# Creates a self-contained Dovecot instance in DIR (loopback only), starts it
# and prints the master PID on stdout. Must run as root. Never touches /etc/dovecot.
# Env overrides: DOVECOT_USER (default nobody), DOVECOT_GROUP (default: primary group of user),
# DOVECOT_AUTH_MECHANISMS (default "plain login"; the passwords are stored in plain text, so
# cram-md5, scram-sha-1 and scram-sha-256 work too).
set -euo pipefail

if [ $# -ne 3 ]; then
  echo "usage: $0 DIR IMAP_PORT IMAPS_PORT" >&2
  exit 2
fi
DIR=$1
IMAP_PORT=$2
IMAPS_PORT=$3
HERE=$(cd "$(dirname "$0")" && pwd)
RUN_USER=${DOVECOT_USER:-nobody}
RUN_GROUP=${DOVECOT_GROUP:-$(id -gn "$RUN_USER")}

mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
# mktemp -d creates 0700 dirs; the unprivileged user must be able to traverse it.
chmod 0755 "$DIR"

# Self-signed leaf certificate for localhost / 127.0.0.1. CA:FALSE on purpose:
# rustls/webpki rejects a CA:TRUE cert used as the server (end-entity) cert
# (CaUsedAsEndEntity); OpenSSL/Python/curl accept it as its own trust anchor.
if [ ! -s "$DIR/server.pem" ]; then
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 \
    -keyout "$DIR/server-key.pem" -out "$DIR/server.pem" \
    -subj "/CN=localhost" \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -addext "basicConstraints=critical,CA:FALSE" \
    -addext "keyUsage=critical,digitalSignature,keyEncipherment" \
    -addext "extendedKeyUsage=serverAuth" \
    >/dev/null 2>&1
  chmod 0600 "$DIR/server-key.pem"
  chmod 0644 "$DIR/server.pem"
fi

# passwd-file: user:password:uid:gid:gecos:home:shell:extra
cat > "$DIR/users" <<'USERS'
nell:{PLAIN}ASecretPassword::::::
alice:{PLAIN}alicepw::::::
quote:{PLAIN}pa ss"word::::::
USERS
chmod 0644 "$DIR/users"

# Refuse to clobber a live instance; otherwise clear stale sockets from a previous run
# (a stale run/anvil-auth-penalty socket makes auth log a harmless "Connection refused" Error).
if [ -s "$DIR/run/master.pid" ] && kill -0 "$(cat "$DIR/run/master.pid")" 2>/dev/null; then
  echo "dovecot already running in $DIR (pid $(cat "$DIR/run/master.pid"))" >&2
  exit 1
fi
rm -rf "$DIR/run"
mkdir -p "$DIR/mail" "$DIR/run" "$DIR/state"
for u in $(cut -d: -f1 "$DIR/users"); do
  mkdir -p "$DIR/rawlog/$u"
done
chown -R "$RUN_USER:$RUN_GROUP" "$DIR/mail" "$DIR/rawlog"

sed -e "s|@DIR@|$DIR|g" \
    -e "s|@IMAP_PORT@|$IMAP_PORT|g" \
    -e "s|@IMAPS_PORT@|$IMAPS_PORT|g" \
    -e "s|@USER@|$RUN_USER|g" \
    -e "s|@GROUP@|$RUN_GROUP|g" \
    -e "s|@AUTH_MECHANISMS@|${DOVECOT_AUTH_MECHANISMS:-plain login}|g" \
    "$HERE/dovecot.conf.in" > "$DIR/dovecot.conf"

# Daemon forks into the background; its stderr/stdout go to a file.
if ! dovecot -c "$DIR/dovecot.conf" >>"$DIR/dovecot.stdout" 2>&1; then
  echo "dovecot failed to start:" >&2
  cat "$DIR/dovecot.stdout" >&2
  tail -n 20 "$DIR/dovecot.log" >&2 2>/dev/null || true
  exit 1
fi

# Wait (up to ~10 s) for the plain port to accept connections.
ok=
for _ in $(seq 1 100); do
  # The greeting is only sent once the auth process is ready.
  if { exec 3<>"/dev/tcp/127.0.0.1/$IMAP_PORT"; } 2>/dev/null; then
    greeting=
    IFS= read -r -t 2 greeting <&3 || true
    printf 'a LOGOUT\r\n' >&3 2>/dev/null || true
    exec 3<&- 3>&-
    case $greeting in
      "* OK"*) ok=1; break ;;
    esac
  fi
  sleep 0.1
done
if [ -z "$ok" ]; then
  echo "dovecot did not start listening on 127.0.0.1:$IMAP_PORT" >&2
  cat "$DIR/dovecot.stdout" "$DIR/dovecot.log" >&2 2>/dev/null || true
  exit 1
fi
cat "$DIR/run/master.pid"
