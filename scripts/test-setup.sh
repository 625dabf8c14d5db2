#!/usr/bin/env bash
# Run by `npm test` before anything else: makes sure the real tools the tests use are here.
#   valkey-server 8  (tests start private servers; never a mock)  -> scripts/install-valkey.sh
#   kubectl          (renders deploy/kubernetes with kustomize)   -> Debian's kubernetes-client
# Missing tools are installed when we are root or have passwordless sudo; otherwise this stops with
# the one command to run. It never skips: a test suite that silently drops its Valkey tests lies.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v valkey-server >/dev/null 2>&1 || missing+=(valkey)
command -v "${KUBECTL:-kubectl}" >/dev/null 2>&1 || missing+=(kubectl)
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if sudo -n true >/dev/null 2>&1; then
    SUDO="sudo"
  else
    echo "npm test needs: ${missing[*]}. Install them once with:" >&2
    echo "  sudo bash scripts/test-setup.sh" >&2
    exit 1
  fi
fi

echo "test set-up: installing ${missing[*]}" >&2
for m in "${missing[@]}"; do
  case "$m" in
    valkey) $SUDO bash scripts/install-valkey.sh >&2 ;;
    kubectl)
      export DEBIAN_FRONTEND=noninteractive
      $SUDO apt-get install -y -q kubernetes-client >&2 ||
        { $SUDO apt-get update -q >&2 && $SUDO apt-get install -y -q kubernetes-client >&2; }
      ;;
  esac
done
