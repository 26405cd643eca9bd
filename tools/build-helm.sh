#!/usr/bin/env bash
# Build (or reuse) helm from the helm.sh/helm/v3 Go module, as tools/build-control-plane.sh does for
# the control plane: the version is tools/helm-bin/go.mod's, the binary is cached by version.
#
# Output: $COALMINE_CACHE/helm/<version>/helm; its path is the one line printed on stdout (logs go to
# stderr), so tests and scripts find helm with `helm=$(tools/build-helm.sh)`.
# A no-op when the cached binary answers `helm version` with the expected version.
# A helm you already have is used instead when HELM_BIN points at it.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
CACHE=${COALMINE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/coalmine}
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=${GOFLAGS:--mod=mod}
module=$here/helm-bin

log() { printf '[build-helm] %s\n' "$*" >&2; }

if [ -n "${HELM_BIN:-}" ]; then
  log "using helm from the environment: $HELM_BIN"
  echo "$HELM_BIN"
  exit 0
fi

# The versions the wrapper module pins: helm itself and client-go (helm's Makefile derives the
# Kubernetes version `helm lint` and `helm template` assume from client-go's).
version=$(cd "$module" && go list -m -f '{{.Version}}' helm.sh/helm/v3)
client_go=$(cd "$module" && go list -m -f '{{.Version}}' k8s.io/client-go)
out=$CACHE/helm/$version/helm

# Capture first: with pipefail, `helm | grep -q` fails when grep exits before helm finishes writing.
if [ -x "$out" ] && got=$("$out" version --short 2>/dev/null) && [ "${got%%+*}" = "$version" ]; then
  log "helm $version cached: $out"
  echo "$out"
  exit 0
fi

minor=${client_go#v0.}; minor=${minor%%.*}
ld="-s -w -X helm.sh/helm/v3/internal/version.version=$version -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for p in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
  ld="$ld -X $p.k8sVersionMajor=1 -X $p.k8sVersionMinor=$minor"
done

start=$SECONDS
mkdir -p "$(dirname "$out")"
log "building helm $version -> $out (about 70 s cold on 2 cores)"
(
  cd "$module"
  go build -v -trimpath -ldflags "$ld" -o "$out.tmp" helm.sh/helm/v3/cmd/helm 2>&1 |
    awk '{n++} n % 100 == 0 {printf "[build-helm]   %d packages compiled, now %s\n", n, $0; fflush()}' >&2
)
mv "$out.tmp" "$out"
log "built helm $("$out" version --short) in $((SECONDS - start)) s"
echo "$out"
