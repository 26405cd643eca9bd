#!/usr/bin/env bash
# Build (or reuse) the peers coalmine is measured against in bench/peers.py: Flagger and Argo Rollouts,
# from their Go modules, with their CRDs copied out of the same module versions. Not part of `make test`;
# `make peers` runs it. Recipes and timings: the wrapper modules under tools/peers/ (go.mod and go.sum only).
#
# Output: $COALMINE_CACHE/peers/flagger/<version>/{flagger,crd.yaml}
#         $COALMINE_CACHE/peers/argo-rollouts/<version>/{rollouts-controller,crds.yaml}
# A no-op when the cached binaries answer with the expected version.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
FLAGGER_VERSION=${FLAGGER_VERSION:-v1.41.0}          # newest the module proxy serves (v1.42.0 is refused)
ARGO_ROLLOUTS_VERSION=${ARGO_ROLLOUTS_VERSION:-v1.10.1}  # v1.10.2 declares go 1.26.10, newer than this machine's
CACHE=${COALMINE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/coalmine}
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=${GOFLAGS:--mod=mod}

log() { printf '[build-peers] %s\n' "$*" >&2; }

built_from() {  # built_from BINARY MODULE VERSION: the binary embeds MODULE at VERSION (go version -m)
  local bin=$1 out
  [ -x "$bin" ] && out=$(go version -m "$bin" 2>/dev/null) && grep -qE "^\s+(mod|dep)\s+$2\s+$3(\s|$)" <<<"$out"
}

module_dir() {  # module_dir WRAPPER MODULE@VERSION: where the module's source is in the module cache
  (cd "$1" && go mod download -json "$2" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
}

build() {  # build WRAPPER OUTPUT PACKAGE LDFLAGS
  local dir=$1 out=$2 pkg=$3 ld=$4 start=$SECONDS
  mkdir -p "$(dirname "$out")"
  log "building $pkg -> $out (a cold build takes a few minutes on 2 cores)"
  (cd "$dir" && go build -trimpath -ldflags "$ld" -o "$out.tmp" "$pkg")
  mv "$out.tmp" "$out"
  log "built $(basename "$out") in $((SECONDS - start)) s"
}

flagger_dir=$CACHE/peers/flagger/$FLAGGER_VERSION
if built_from "$flagger_dir/flagger" github.com/fluxcd/flagger "$FLAGGER_VERSION"; then
  log "flagger $FLAGGER_VERSION cached: $flagger_dir/flagger"
else
  build "$here/peers/flagger" "$flagger_dir/flagger" github.com/fluxcd/flagger/cmd/flagger \
    "-s -w -X github.com/fluxcd/flagger/pkg/version.VERSION=${FLAGGER_VERSION#v}"
fi
if [ ! -s "$flagger_dir/crd.yaml" ]; then
  src=$(module_dir "$here/peers/flagger" "github.com/fluxcd/flagger@$FLAGGER_VERSION")
  cp "$src/artifacts/flagger/crd.yaml" "$flagger_dir/crd.yaml.tmp" && chmod u+w "$flagger_dir/crd.yaml.tmp"
  mv "$flagger_dir/crd.yaml.tmp" "$flagger_dir/crd.yaml"
  log "Flagger CRDs copied: $flagger_dir/crd.yaml"
fi

argo_dir=$CACHE/peers/argo-rollouts/$ARGO_ROLLOUTS_VERSION
if built_from "$argo_dir/rollouts-controller" github.com/argoproj/argo-rollouts "$ARGO_ROLLOUTS_VERSION"; then
  log "rollouts-controller $ARGO_ROLLOUTS_VERSION cached: $argo_dir/rollouts-controller"
else
  build "$here/peers/argo-rollouts" "$argo_dir/rollouts-controller" \
    github.com/argoproj/argo-rollouts/cmd/rollouts-controller \
    "-s -w -X github.com/argoproj/argo-rollouts/utils/version.version=$ARGO_ROLLOUTS_VERSION"
fi
if [ ! -s "$argo_dir/crds.yaml" ]; then
  src=$(module_dir "$here/peers/argo-rollouts" "github.com/argoproj/argo-rollouts@$ARGO_ROLLOUTS_VERSION")
  for f in "$src"/manifests/crds/*-crd.yaml; do cat "$f"; printf -- '---\n'; done > "$argo_dir/crds.yaml.tmp"
  mv "$argo_dir/crds.yaml.tmp" "$argo_dir/crds.yaml"
  log "Argo Rollouts CRDs copied: $argo_dir/crds.yaml"
fi
