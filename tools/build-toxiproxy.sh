#!/usr/bin/env bash
# Build (or reuse) toxiproxy-server, the TCP fault proxy bench/chaos.py puts between the operator and the
# API server and Prometheus (latency, resets, blackholes), from its Go module. `make binaries` runs it.
# The wrapper module tools/toxiproxy/ (go.mod and go.sum only) pins the version.
#
# Output: $COALMINE_CACHE/toxiproxy/<version>/toxiproxy-server
# A no-op when the cached binary answers -version with the expected version. TOXIPROXY_SERVER names a
# binary you already have instead (bench/chaos.py looks it up the same way).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
TOXIPROXY_VERSION=v2.5.0  # pinned by tools/toxiproxy/go.mod; this keys the cache and the -version check
CACHE=${COALMINE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/coalmine}
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=${GOFLAGS:--mod=mod}

log() { printf '[build-toxiproxy] %s\n' "$*" >&2; }

if [ -n "${TOXIPROXY_SERVER:-}" ]; then
  log "using toxiproxy-server from the environment: $TOXIPROXY_SERVER"
  exit 0
fi
out=$CACHE/toxiproxy/$TOXIPROXY_VERSION/toxiproxy-server
if [ -x "$out" ] && version=$("$out" -version 2>/dev/null) && grep -qF "version ${TOXIPROXY_VERSION#v}" <<<"$version"; then
  log "toxiproxy-server $TOXIPROXY_VERSION cached: $out"
  exit 0
fi
start=$SECONDS
mkdir -p "$(dirname "$out")"
log "building github.com/Shopify/toxiproxy/v2/cmd/server $TOXIPROXY_VERSION -> $out"
# toxiproxy prints Version ("git" unless set) for -version: stamp the module version in.
(cd "$here/toxiproxy" && go build -trimpath \
  -ldflags "-s -w -X github.com/Shopify/toxiproxy/v2.Version=${TOXIPROXY_VERSION#v}" \
  -o "$out.tmp" github.com/Shopify/toxiproxy/v2/cmd/server)
mv "$out.tmp" "$out"
log "built toxiproxy-server in $((SECONDS - start)) s"
