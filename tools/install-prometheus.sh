#!/usr/bin/env bash
# Install Prometheus from Debian's package when it is missing (a no-op otherwise).
# Set PROMETHEUS_BIN to use a Prometheus you already have.
set -euo pipefail
log() { printf '[install-prometheus] %s\n' "$*" >&2; }

if [ -n "${PROMETHEUS_BIN:-}" ] && [ -x "$PROMETHEUS_BIN" ]; then
  log "using $PROMETHEUS_BIN"; exit 0
fi
if command -v prometheus >/dev/null 2>&1; then
  log "found $(command -v prometheus): $(prometheus --version 2>&1 | head -n1)"; exit 0
fi
if [ "$(id -u)" != 0 ]; then
  log "Prometheus is not installed. Install it with: sudo apt-get install prometheus"
  log "(or point PROMETHEUS_BIN at a prometheus binary)"
  exit 1
fi
log "installing Debian's prometheus package"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends prometheus >/dev/null
# The package may try to start a system service; the devstack runs its own instance.
if command -v service >/dev/null 2>&1; then service prometheus stop >/dev/null 2>&1 || true; fi
pkill -x prometheus >/dev/null 2>&1 || true
log "installed $(prometheus --version 2>&1 | head -n1)"
