#!/usr/bin/env bash
# Usage: stop.sh DIR
# Stops the Cyrus master started by start.sh DIR (SIGTERM to the PID in DIR/master.pid;
# the master kills its children itself) and waits up to ~10 s for it to exit.
set -euo pipefail

if [ $# -ne 1 ]; then
  echo "usage: $0 DIR" >&2
  exit 2
fi
DIR=$1
if [ ! -s "$DIR/master.pid" ]; then
  echo "no $DIR/master.pid: not running?" >&2
  exit 1
fi
pid=$(cat "$DIR/master.pid")
# Make sure the PID really is this instance's master before signalling it.
if ! kill -0 "$pid" 2>/dev/null; then
  echo "cyrus master $pid is not running" >&2
  rm -f "$DIR/master.pid"
  exit 0
fi
if ! tr '\0' ' ' < "/proc/$pid/cmdline" | grep -q -- "-M $(cd "$DIR" && pwd)/cyrus.conf"; then
  echo "pid $pid is not the cyrus master of $DIR; not killing it" >&2
  exit 1
fi
kill -TERM "$pid"
for _ in $(seq 1 100); do
  kill -0 "$pid" 2>/dev/null || { rm -f "$DIR/master.pid"; exit 0; }
  sleep 0.1
done
echo "cyrus master $pid did not exit after 10 s" >&2
exit 1
