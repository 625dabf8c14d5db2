#!/usr/bin/env bash
# Run by `npm test` before anything else: makes sure the real tools the tests use are here.
#   valkey-server 8, valkey-cli (tests start private servers and clusters; never a mock) -> scripts/install-valkey.sh
#   kubectl          (renders deploy/kubernetes with kustomize)   -> Debian's kubernetes-client
#   lua5.1, luajit   (run the shipped Envoy Lua filter; Envoy's own engine is LuaJIT)
#   promtool         (checks and unit-tests deploy/'s alert rules) -> Debian's prometheus
#   prometheus       (test/grafana.test.ts runs the dashboard's queries on a real one) -> the same package
# Missing tools are installed when we are root or have passwordless sudo; otherwise this stops with
# the one command to run. It never skips: a test suite that silently drops its Valkey tests lies.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
{ command -v valkey-server >/dev/null 2>&1 && command -v valkey-cli >/dev/null 2>&1; } || missing+=(valkey)
command -v "${KUBECTL:-kubectl}" >/dev/null 2>&1 || missing+=(kubectl)
command -v lua5.1 >/dev/null 2>&1 || missing+=(lua5.1)
command -v luajit >/dev/null 2>&1 || missing+=(luajit)
{ command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; } || missing+=(prometheus)
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
    *)
      pkg="$m"
      if [ "$m" = kubectl ]; then pkg=kubernetes-client; fi
      export DEBIAN_FRONTEND=noninteractive
      $SUDO apt-get install -y -q --no-install-recommends "$pkg" >&2 ||
        { $SUDO apt-get update -q >&2 && $SUDO apt-get install -y -q --no-install-recommends "$pkg" >&2; }
      # Debian's prometheus package starts a server; tests start their own (promtool, test/grafana.test.ts)
      if [ "$m" = prometheus ]; then $SUDO systemctl disable --now prometheus >/dev/null 2>&1 || true; fi
      ;;
  esac
done
exit 0
