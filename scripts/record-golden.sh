#!/usr/bin/env bash
# Usage: scripts/record-golden.sh [SCENARIO...]
# Re-records the golden transcripts in recordings/golden/ from scratch: for each scenario a
# fresh test Dovecot (tests/dovecot/start.sh) in a new temp dir, seeded with
# tests/fixtures/mail/01-plain.eml, 02-multipart.eml and 03-large.eml in that order, with
# `imapscope record` in front of it, and the scenario's client (tests/clients/golden.py, or
# tests/clients/golden_curl.sh for curl-fetch) talking through imapscope. The one transcript
# written is checked and copied to recordings/golden/SCENARIO.jsonl.
#
# Run as root from anywhere (it changes to the repo root). Default: every scenario.
# IMAPSCOPE_BIN: the imapscope binary to use; unset, `cargo build --quiet` builds
# target/debug/imapscope. Everything listens on 127.0.0.1 only, on free ports.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)

ALL=(login-select search-fetch store-copy-move-expunge append idle auth-plain errors compress curl-fetch)

die() {
  echo "record-golden: $*" >&2
  exit 1
}

if [ $# -gt 0 ]; then
  SCENARIOS=("$@")
else
  SCENARIOS=("${ALL[@]}")
fi
for s in "${SCENARIOS[@]}"; do
  case " ${ALL[*]} " in
    *" $s "*) ;;
    *) die "unknown scenario '$s' (known: ${ALL[*]})" ;;
  esac
done
[ "$(id -u)" -eq 0 ] || die "must run as root (the test Dovecot needs it)"
for tool in dovecot doveadm python3 curl openssl; do
  command -v "$tool" >/dev/null || die "$tool is not installed"
done

BIN=${IMAPSCOPE_BIN:-}
if [ -z "$BIN" ]; then
  echo "== cargo build --quiet"
  cargo build --quiet
  BIN=target/debug/imapscope
fi
[ -x "$BIN" ] || die "imapscope binary '$BIN' is not executable"
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")

free_port() {
  python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'
}

# State of the scenario being recorded, for cleanup on any exit.
TMP=
DOVECOT_PID=
IMAPSCOPE_PID=

stop_dovecot() {
  if [ -n "$DOVECOT_PID" ]; then
    kill "$DOVECOT_PID" 2>/dev/null || true
    # The master is not our child (it daemonizes): poll until it is gone (about 3 s).
    for _ in $(seq 1 300); do
      kill -0 "$DOVECOT_PID" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$DOVECOT_PID" 2>/dev/null; then
      echo "record-golden: dovecot (pid $DOVECOT_PID) did not exit within 30 s" >&2
      return 1
    fi
    DOVECOT_PID=
  fi
}

cleanup() {
  local rc=$?
  if [ -n "$IMAPSCOPE_PID" ]; then
    kill "$IMAPSCOPE_PID" 2>/dev/null || true
    wait "$IMAPSCOPE_PID" 2>/dev/null || true
  fi
  stop_dovecot || true
  if [ -n "$TMP" ]; then
    if [ $rc -ne 0 ]; then
      for log in "$TMP/imapscope.log" "$TMP/d/dovecot.log"; do
        if [ -s "$log" ]; then
          echo "---- last lines of $log" >&2
          tail -n 30 "$log" >&2
        fi
      done
    fi
    rm -rf "$TMP"
  fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Checks one transcript: parseable, ends with an end line, every command answered by a
# completion that points at it, no credentials.
check_transcript() {
  python3 - "$1" <<'PY'
import base64, json, sys
path = sys.argv[1]
raw = open(path, "rb").read()
problems = []
for secret in (b"ASecretPassword", base64.b64encode(b"\0nell\0ASecretPassword")):
    if secret in raw:
        problems.append("contains the secret %r" % secret.decode())
lines = raw.split(b"\n")
if lines[-1] != b"":
    problems.append("last line is not terminated")
recs = [json.loads(l) for l in lines if l]
if not recs or recs[0].get("type") != "session":
    problems.append("first line is not a session line")
if not recs or recs[-1].get("type") != "end":
    problems.append('last line is not "type":"end"')
elif recs[-1].get("unanswered"):
    problems.append("end line lists unanswered commands %r" % recs[-1]["unanswered"])
msgs = [r for r in recs if r.get("type") == "message"]
commands = {m["seq"]: m for m in msgs if m.get("kind") == "command"}
answered = {}
for m in msgs:
    if m.get("kind") == "completion":
        to = m.get("reply_to")
        if to not in commands:
            problems.append("completion seq %s has reply_to %r, not a command" % (m["seq"], to))
        elif to in answered:
            problems.append("command seq %s completed twice" % to)
        else:
            answered[to] = m
            if commands[to].get("tag") != m.get("tag"):
                problems.append("completion seq %s tag %r answers command tag %r"
                                % (m["seq"], m.get("tag"), commands[to].get("tag")))
for seq, c in commands.items():
    if seq not in answered:
        problems.append("command seq %s (%s %s) has no completion" % (seq, c.get("tag"), c.get("name")))
if problems:
    sys.exit("%s:\n  %s" % (path, "\n  ".join(problems)))
print("  transcript: %d messages, %d commands, all answered" % (len(msgs), len(commands)))
PY
}

record() {
  local sc=$1
  echo "== $sc"
  TMP=$(mktemp -d /tmp/igXXXX)
  chmod 0755 "$TMP" # Dovecot's unprivileged processes must traverse it
  local d=$TMP/d out=$TMP/o
  local p_imap p_imaps p_proxy
  p_imap=$(free_port)
  p_imaps=$(free_port)
  p_proxy=$(free_port)
  while [ "$p_imaps" = "$p_imap" ]; do p_imaps=$(free_port); done
  while [ "$p_proxy" = "$p_imap" ] || [ "$p_proxy" = "$p_imaps" ]; do p_proxy=$(free_port); done

  DOVECOT_PID=$(tests/dovecot/start.sh "$d" "$p_imap" "$p_imaps") || die "$sc: dovecot did not start"
  [[ $DOVECOT_PID =~ ^[0-9]+$ ]] || die "$sc: start.sh printed '$DOVECOT_PID', not a pid"
  for f in 01-plain 02-multipart 03-large; do
    tests/dovecot/seed.sh "$d" nell "tests/fixtures/mail/$f.eml" || die "$sc: seeding $f.eml failed"
  done

  "$BIN" record --upstream "127.0.0.1:$p_imap" --listen "127.0.0.1:$p_proxy" --out "$out" \
    >"$TMP/imapscope.stdout" 2>"$TMP/imapscope.log" &
  IMAPSCOPE_PID=$!
  local up=
  for _ in $(seq 1 100); do
    if grep -q "listening on" "$TMP/imapscope.log"; then up=1; break; fi
    kill -0 "$IMAPSCOPE_PID" 2>/dev/null || break
    sleep 0.1
  done
  [ -n "$up" ] || die "$sc: imapscope did not log 'listening on'"

  if [ "$sc" = curl-fetch ]; then
    tests/clients/golden_curl.sh "$p_proxy" | sed 's/^/  /' || die "$sc: client failed"
  else
    python3 tests/clients/golden.py "$sc" "$p_proxy" "$d" | sed 's/^/  /' || die "$sc: client failed"
  fi

  sleep 0.3
  kill -TERM "$IMAPSCOPE_PID"
  local rc=0
  wait "$IMAPSCOPE_PID" || rc=$?
  IMAPSCOPE_PID=
  [ $rc -eq 0 ] || die "$sc: imapscope exited with $rc after SIGTERM"

  local files=()
  shopt -s nullglob
  files=("$out"/*.jsonl)
  shopt -u nullglob
  [ ${#files[@]} -eq 1 ] || die "$sc: expected exactly one transcript in $out, found ${#files[@]}"
  check_transcript "${files[0]}" || die "$sc: bad transcript"
  install -m 0644 "${files[0]}" "recordings/golden/$sc.jsonl.tmp"
  mv "recordings/golden/$sc.jsonl.tmp" "recordings/golden/$sc.jsonl"
  echo "  wrote recordings/golden/$sc.jsonl ($(wc -c <"recordings/golden/$sc.jsonl") bytes)"

  stop_dovecot || die "$sc: dovecot did not stop"
  rm -rf "$TMP"
  TMP=
}

mkdir -p recordings/golden
start=$(date +%s)
for sc in "${SCENARIOS[@]}"; do
  record "$sc"
done
echo "== recorded ${#SCENARIOS[@]} golden transcript(s) in $(( $(date +%s) - start )) s"
