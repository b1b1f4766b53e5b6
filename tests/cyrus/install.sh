#!/usr/bin/env bash
# Makes a real Cyrus IMAP available to the tests beside Dovecot, as root.
#
# Debian's cyrus-imapd package (imapd, idled, squatter) conflicts with dovecot-imapd: both
# provide imap-server, and installing one removes the other. So cyrus-common (master, lmtpd,
# deliver, ctl_cyrusdb) and sasl2-bin are installed as packages, and cyrus-imapd of the same
# version is only unpacked into $CYRUS_PRIVATE (default /opt/imapscope-cyrus), where
# tests/cyrus/start.sh finds its imapd. Nothing is started; /etc/imapd.conf is never used.
set -euo pipefail
DEST=${CYRUS_PRIVATE:-/opt/imapscope-cyrus}
if [ -x /usr/lib/cyrus/bin/imapd ] || [ -x "$DEST/usr/lib/cyrus/bin/imapd" ]; then
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
if [ ! -x /usr/lib/cyrus/bin/master ] || ! command -v saslpasswd2 >/dev/null; then
  apt-get install -y -qq cyrus-common sasl2-bin
fi
version=$(dpkg-query -W -f '${Version}' cyrus-common)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# apt-get download writes to the current directory; as root it warns that _apt cannot.
(cd "$tmp" && chmod 0777 . && apt-get download -qq "cyrus-imapd=$version")
mkdir -p "$DEST"
dpkg -x "$tmp"/cyrus-imapd_*.deb "$DEST"
echo "Cyrus imapd $version unpacked in $DEST"
