#!/usr/bin/env bash
# Usage: golden_curl.sh PORT
# Scenario curl-fetch of the golden transcripts: curl fetches UID 1 of nell's INBOX from
# 127.0.0.1:PORT (a fresh, seeded test Dovecot, imapscope in front of one, or a fake server
# replaying the golden transcript) and the output must equal tests/fixtures/mail/01-plain.eml
# byte for byte.
set -euo pipefail
if [ $# -ne 1 ]; then
  echo "usage: $0 PORT" >&2
  exit 2
fi
PORT=$1
HERE=$(cd "$(dirname "$0")" && pwd)
WANT="$HERE/../fixtures/mail/01-plain.eml"
out=$(mktemp)
trap 'rm -f "$out"' EXIT

if ! curl -sS --max-time 20 --user nell:ASecretPassword \
    "imap://127.0.0.1:$PORT/INBOX;UID=1" -o "$out"; then
  echo "golden_curl.sh: FAILED: curl exited with an error" >&2
  exit 1
fi
if ! cmp -s "$out" "$WANT"; then
  echo "golden_curl.sh: FAILED: output ($(wc -c <"$out") bytes) differs from 01-plain.eml ($(wc -c <"$WANT") bytes)" >&2
  cmp "$out" "$WANT" >&2 || true
  exit 1
fi
echo "curl-fetch: INBOX;UID=1 equals 01-plain.eml ($(wc -c <"$WANT") bytes)"
