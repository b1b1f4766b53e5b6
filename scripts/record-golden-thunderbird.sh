#!/usr/bin/env bash
# Usage: scripts/record-golden-thunderbird.sh
# Re-records recordings/golden/thunderbird/ from scratch: a first sync by the real Thunderbird
# (Debian's `thunderbird`, headless, a fresh profile; tests/clients/thunderbird.py drives it)
# through `imapscope record`, STARTTLS and COMPRESS on both legs, against a fresh test Dovecot
# (tests/dovecot/start.sh) seeded with tests/fixtures/mail/01-plain.eml, 02-multipart.eml and
# 03-large.eml in INBOX and 04-pushed.eml in Archive, as tests/thunderbird.rs seeds its own.
# The account is the test user nell; the password is redacted in the transcripts. The CA that
# signed imapscope's certificates is thrown away: `serve` mints from any CA the client trusts.
#
# Run as root from anywhere. IMAPSCOPE_BIN: the imapscope binary (default: cargo build).
# Everything listens on 127.0.0.1 only, on free ports.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
OUT=recordings/golden/thunderbird

die() {
  echo "record-golden-thunderbird: $*" >&2
  exit 1
}

[ "$(id -u)" -eq 0 ] || die "must run as root (the test Dovecot needs it)"
for tool in dovecot doveadm python3 thunderbird certutil; do
  command -v "$tool" >/dev/null || die "$tool is not installed (scripts/test.sh installs it)"
done
BIN=${IMAPSCOPE_BIN:-}
if [ -z "$BIN" ]; then
  cargo build --quiet
  BIN=$REPO/target/debug/imapscope
fi

free_port() {
  python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'
}

TMP=$(mktemp -d)
# The unprivileged Dovecot user must be able to reach its directory inside.
chmod 0755 "$TMP"
DOVECOT_PID=
IMAPSCOPE_PID=
cleanup() {
  [ -n "$IMAPSCOPE_PID" ] && { kill "$IMAPSCOPE_PID" 2>/dev/null || true; wait "$IMAPSCOPE_PID" 2>/dev/null || true; }
  if [ -n "$DOVECOT_PID" ]; then
    kill "$DOVECOT_PID" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$DOVECOT_PID" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT

IMAP_PORT=$(free_port)
IMAPS_PORT=$(free_port)
PROXY_PORT=$(free_port)
DOVECOT_PID=$(bash tests/dovecot/start.sh "$TMP/dovecot" "$IMAP_PORT" "$IMAPS_PORT")
for m in 01-plain 02-multipart 03-large; do
  bash tests/dovecot/seed.sh "$TMP/dovecot" nell "tests/fixtures/mail/$m.eml"
done
bash tests/dovecot/seed.sh "$TMP/dovecot" nell tests/fixtures/mail/04-pushed.eml Archive

"$BIN" record --upstream "127.0.0.1:$IMAP_PORT" --listen "127.0.0.1:$PROXY_PORT" \
  --client-tls starttls --upstream-tls starttls --upstream-ca "$TMP/dovecot/server.pem" \
  --certs "$TMP/certs" --out "$TMP/capture" >"$TMP/imapscope.log" 2>&1 &
IMAPSCOPE_PID=$!
for _ in $(seq 1 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$PROXY_PORT") 2>/dev/null && break
  sleep 0.1
done

python3 tests/clients/thunderbird.py --host 127.0.0.1 --port "$PROXY_PORT" --security starttls \
  --user nell --password ASecretPassword --profile "$TMP/profile" --ca "$TMP/certs/ca.pem" \
  --compress --expect-messages 4 >"$TMP/sync.json" || die "the Thunderbird sync failed"
cat "$TMP/sync.json"
kill "$IMAPSCOPE_PID"
wait "$IMAPSCOPE_PID" || true
IMAPSCOPE_PID=

# The probe above (a connect and close before the first command) left a transcript with no
# greeting exchange of its own: it is not part of Thunderbird's capture.
rm -rf "$OUT"
mkdir -p "$OUT"
for f in "$TMP"/capture/*.jsonl; do
  if grep -q '"kind":"command"' "$f"; then
    cp "$f" "$OUT/"
  fi
done
chmod 0644 "$OUT"/*.jsonl
# What Thunderbird synced, for tests/thunderbird.rs to compare a served sync with.
cp "$TMP/sync.json" "$OUT/sync.json"
grep -q ASecretPassword "$OUT"/*.jsonl && die "the password reached a transcript"
echo "record-golden-thunderbird: $(ls "$OUT"/*.jsonl | wc -l) connections in $OUT"
