#!/usr/bin/env bash
# Installs valkey-server 8 (and valkey-cli) from Debian bookworm-backports when missing.
# Reuses the machine's own Debian mirror: it copies the first stanza of
# /etc/apt/sources.list.d/debian.sources with the suite set to bookworm-backports.
set -euo pipefail
if command -v valkey-server >/dev/null 2>&1; then
  echo "valkey-server present: $(valkey-server --version | head -1)"
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
src=/etc/apt/sources.list.d/debian.sources
dst=/etc/apt/sources.list.d/tollgate-backports.sources
if [ ! -f "$dst" ]; then
  if [ ! -f "$src" ]; then
    echo "cannot find $src; install valkey-server 8 by hand (bookworm-backports)" >&2
    exit 1
  fi
  # first stanza = lines up to the first blank line
  awk 'BEGIN{RS="";ORS="\n"} NR==1{print; exit}' "$src" \
    | sed -E 's/^Suites:.*/Suites: bookworm-backports/' | $SUDO tee "$dst" >/dev/null
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q -t bookworm-backports valkey-server valkey-tools
# We start private servers ourselves; the packaged service is not needed.
$SUDO systemctl disable --now valkey-server >/dev/null 2>&1 || true
valkey-server --version
