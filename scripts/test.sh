#!/usr/bin/env bash
# The whole test suite, on a fresh Debian machine as root: installs what the tests need
# (a real Dovecot and Cyrus, Python, curl, OpenSSL, Thunderbird, mbsync, offlineimap, fetchmail, getmail, mutt, tmux, Chromium) when missing, then checks formatting and lints
# and runs every test. The integration tests start their own Dovecot on loopback ports with
# their own config; the system's /etc/dovecot is never used or started.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
# dovecot-imapd is checked by its own binary: installing cyrus-imapd removes it (they
# conflict) while leaving dovecot-core in place.
[ -x /usr/lib/dovecot/imap-login ] || need+=(dovecot-imapd)
command -v doveadm >/dev/null || need+=(dovecot-core)
# A real Cyrus beside Dovecot: its packages here, its imapd unpacked by tests/cyrus/install.sh.
[ -x /usr/lib/cyrus/bin/master ] || need+=(cyrus-common)
command -v saslpasswd2 >/dev/null || need+=(sasl2-bin)
command -v python3 >/dev/null || need+=(python3)
command -v curl >/dev/null || need+=(curl)
command -v openssl >/dev/null || need+=(openssl)
# The real Thunderbird, headless, and certutil to trust a CA in its profile (tests/thunderbird.rs).
command -v thunderbird >/dev/null || need+=(thunderbird)
command -v certutil >/dev/null || need+=(libnss3-tools)
# Mail synchronizers that upload as well as download (tests/sync_clients.rs).
command -v mbsync >/dev/null || need+=(isync)
command -v offlineimap >/dev/null || need+=(offlineimap3)
# Mail fetchers that download and keep the mail on the server (tests/fetchers.rs).
command -v fetchmail >/dev/null || need+=(fetchmail)
command -v getmail >/dev/null || need+=(getmail6)
# mutt, a terminal client, driven through tmux (tests/mutt.rs).
command -v mutt >/dev/null || need+=(mutt)
command -v tmux >/dev/null || need+=(tmux)
# The web view is tested in a real headless Chromium over WebDriver (tests/web.rs).
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
if [ ${#need[@]} -gt 0 ]; then
  echo "== installing ${need[*]}"
  if [ "$(id -u)" -ne 0 ]; then
    echo "the tests need ${need[*]}: run this script as root, or: sudo apt-get install -y ${need[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # Installing must not start the system's Dovecot; the tests run their own.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d.imapscope
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    cp /usr/sbin/policy-rc.d.imapscope /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  rm -f /usr/sbin/policy-rc.d.imapscope
  apt-get install -y -qq "${need[@]}"
fi
./tests/cyrus/install.sh

echo "== cargo fmt --check"
cargo fmt --check
echo "== cargo clippy"
cargo clippy --all-targets --quiet -- -D warnings
echo "== cargo test"
cargo test
echo "== fuzz (every target, briefly; scripts/fuzz.sh for longer runs)"
./scripts/fuzz.sh
