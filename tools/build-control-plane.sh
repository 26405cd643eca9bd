#!/usr/bin/env bash
# Build (or reuse) the local stack's programs from their Go modules, and fetch Istio's CRDs.
#
# Output: $COALMINE_CACHE/k8s/<k8s version>/{kube-apiserver,kubectl,kube-controller-manager,kube-scheduler}
#         $COALMINE_CACHE/etcd/<etcd version>/etcd
#         $COALMINE_CACHE/kwok/<kwok version>/{kwok,stages.yaml}
#         $COALMINE_CACHE/istio/<istio api version>/customresourcedefinitions.gen.yaml
#         $COALMINE_CACHE/gateway-api/<gateway api version>/standard-install.yaml
#         $COALMINE_CACHE/istio-validation/<istio version>-<source hash>/istio-validation
# A no-op when the cached binaries answer --version with the expected version.
# Binaries a user already has are accepted instead of building:
#   KUBEBUILDER_ASSETS=<dir with kube-apiserver, etcd, kubectl>   (as envtest uses; the other
#     Kubernetes binaries are used from there too when present)
#   TEST_ASSET_KUBE_APISERVER, TEST_ASSET_ETCD, TEST_ASSET_KUBECTL, TEST_ASSET_KUBE_CONTROLLER_MANAGER,
#   TEST_ASSET_KUBE_SCHEDULER, TEST_ASSET_KWOK (one binary each)
# `coalmine devstack` looks them up the same way (see operator/coalmine_dev/devstack/binaries.py).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
K8S_VERSION=${K8S_VERSION:-v1.35.4}
ETCD_VERSION=${ETCD_VERSION:-v3.6.16}
ISTIO_API_VERSION=${ISTIO_API_VERSION:-v1.32.0}
GATEWAY_API_VERSION=${GATEWAY_API_VERSION:-v1.7.0}
# These two are pinned by their wrapper modules' go.mod (tools/k8s-bin/kwok, tools/istio-validation);
# the names here only key the cache and the --version check.
KWOK_VERSION=v0.8.0
ISTIO_VERSION=v0.0.0-20260827124520-eed52ebb66ad
CACHE=${COALMINE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/coalmine}
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=${GOFLAGS:--mod=mod}

log() { printf '[build-control-plane] %s\n' "$*" >&2; }

# has_version BINARY EXPECTED ARGS... : true when BINARY ARGS prints EXPECTED.
has_version() {
  local bin=$1 want=$2 out; shift 2
  # Capture first: with pipefail, `bin | grep -q` fails when grep exits before bin finishes writing.
  [ -x "$bin" ] && out=$("$bin" "$@" 2>/dev/null) && grep -qF -- "$want" <<<"$out"
}

# User-provided binaries win: nothing to build for those.
user_bin() {  # user_bin NAME ENVVAR
  local name=$1 var=$2
  if [ -n "${!var:-}" ]; then echo "${!var}"; return; fi
  if [ -n "${KUBEBUILDER_ASSETS:-}" ] && [ -x "$KUBEBUILDER_ASSETS/$name" ]; then echo "$KUBEBUILDER_ASSETS/$name"; fi
}

go_build() {  # go_build MODULE_DIR OUTPUT PACKAGE LDFLAGS
  local dir=$1 out=$2 pkg=$3 ld=$4 start=$SECONDS
  mkdir -p "$(dirname "$out")"
  log "building $pkg -> $out (a cold build takes several minutes on 2 cores)"
  (
    cd "$dir"
    # -v prints one package path per line: show every 100th as progress, count module downloads,
    # and print anything else (compiler errors, "# package" headers, go command messages) in full.
    go build -v -trimpath -tags selinux,notest,grpcnotrace -ldflags "$ld" -o "$out.tmp" "$pkg" 2>&1 |
      awk '/^go: downloading / {d++; next}
           /^[^ #:]+$/ {n++; if (n % 100 == 0) {printf "[build-control-plane]   %d packages compiled, now %s\n", n, $0; fflush()}; next}
           {print; fflush()}
           END {if (d) printf "[build-control-plane]   %d modules downloaded\n", d}' >&2
  )
  mv "$out.tmp" "$out"
  log "built $(basename "$out") in $((SECONDS - start)) s"
}

k8s_ldflags() {
  local v=$K8S_VERSION maj min date ld="-s -w"
  maj=${v#v}; maj=${maj%%.*}
  min=${v#v*.}; min=${min%%.*}
  date=$(date -u -d "@${SOURCE_DATE_EPOCH:-0}" +%Y-%m-%dT%H:%M:%SZ)
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld="$ld -X $p.gitVersion=$v -X $p.gitMajor=$maj -X $p.gitMinor=$min -X $p.gitTreeState=clean -X $p.buildDate=$date"
  done
  echo "$ld"
}

k8s_dir=$CACHE/k8s/$K8S_VERSION
etcd_dir=$CACHE/etcd/$ETCD_VERSION

apiserver=$(user_bin kube-apiserver TEST_ASSET_KUBE_APISERVER)
if [ -n "$apiserver" ]; then
  log "using kube-apiserver from the environment: $apiserver"
elif has_version "$k8s_dir/kube-apiserver" "$K8S_VERSION" --version; then
  log "kube-apiserver $K8S_VERSION cached: $k8s_dir/kube-apiserver"
else
  go_build "$here/k8s-bin/kubernetes" "$k8s_dir/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver "$(k8s_ldflags)"
fi

kubectl=$(user_bin kubectl TEST_ASSET_KUBECTL)
if [ -n "$kubectl" ]; then
  log "using kubectl from the environment: $kubectl"
elif has_version "$k8s_dir/kubectl" "$K8S_VERSION" version --client; then
  log "kubectl $K8S_VERSION cached: $k8s_dir/kubectl"
else
  go_build "$here/k8s-bin/kubernetes" "$k8s_dir/kubectl" k8s.io/kubernetes/cmd/kubectl "$(k8s_ldflags)"
fi

etcd=$(user_bin etcd TEST_ASSET_ETCD)
if [ -n "$etcd" ]; then
  log "using etcd from the environment: $etcd"
elif has_version "$etcd_dir/etcd" "${ETCD_VERSION#v}" --version; then
  log "etcd $ETCD_VERSION cached: $etcd_dir/etcd"
else
  go_build "$here/k8s-bin/etcd" "$etcd_dir/etcd" go.etcd.io/etcd/server/v3 \
    "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=$ETCD_VERSION"
fi

# kube-controller-manager and kube-scheduler: same module, tags and ldflags as kube-apiserver, so a
# build after kube-apiserver's reuses most of its compiled packages.
for name in kube-controller-manager kube-scheduler; do
  var=TEST_ASSET_$(tr 'a-z-' 'A-Z_' <<<"$name")
  bin=$(user_bin "$name" "$var")
  if [ -n "$bin" ]; then
    log "using $name from the environment: $bin"
  elif has_version "$k8s_dir/$name" "$K8S_VERSION" --version; then
    log "$name $K8S_VERSION cached: $k8s_dir/$name"
  else
    go_build "$here/k8s-bin/kubernetes" "$k8s_dir/$name" "k8s.io/kubernetes/cmd/$name" "$(k8s_ldflags)"
  fi
done

# kwok: simulated nodes and kubelets. It has a wrapper module of its own (it needs k8s.io/* v0.36).
kwok_dir=$CACHE/kwok/$KWOK_VERSION
kwok=$(user_bin kwok TEST_ASSET_KWOK)
if [ -n "$kwok" ]; then
  log "using kwok from the environment: $kwok"
elif has_version "$kwok_dir/kwok" "$KWOK_VERSION" --version; then
  log "kwok $KWOK_VERSION cached: $kwok_dir/kwok"
else
  go_build "$here/k8s-bin/kwok" "$kwok_dir/kwok" sigs.k8s.io/kwok/cmd/kwok "-s -w"
fi

# A standalone kwok does nothing without Stage objects (only kwokctl injects defaults). Join the
# stages kwokctl uses, kwok's kustomize/stage/fast (node initialize, node heartbeat with lease, pod
# ready/complete/delete), from the module's own source into one --config file.
kwok_stages=$kwok_dir/stages.yaml
if [ -s "$kwok_stages" ]; then
  log "kwok stages $KWOK_VERSION cached: $kwok_stages"
else
  mod_dir=$(cd "$here/k8s-bin/kwok" && go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  mkdir -p "$kwok_dir"
  resources() { sed -n 's/^- //p' "$1/kustomization.yaml"; }  # a kustomization's `resources:` list
  {
    echo "# kwok $KWOK_VERSION stages from kustomize/stage/fast; assembled by tools/build-control-plane.sh"
    for dir in $(resources "$mod_dir/kustomize/stage/fast"); do
      for file in $(resources "$mod_dir/kustomize/stage/fast/$dir"); do
        echo "---"
        cat "$mod_dir/kustomize/stage/fast/$dir/$file"
      done
    done
  } >"$kwok_stages.tmp"
  grep -q 'kind: Stage' "$kwok_stages.tmp"
  mv "$kwok_stages.tmp" "$kwok_stages"
  log "kwok stages $KWOK_VERSION assembled: $kwok_stages ($(grep -c '^kind: Stage' "$kwok_stages") stages)"
fi

# istio-validation: istiod's validating webhook handler as a program of our own (tools/istio-validation).
# Its cache key includes a hash of its source folder, so an edit to main.go rebuilds it.
iv_src=$here/istio-validation
iv_hash=$(cd "$iv_src" && find . -type f | LC_ALL=C sort | xargs cat | sha256sum | cut -c1-12)
iv_bin=$CACHE/istio-validation/$ISTIO_VERSION-$iv_hash/istio-validation
if has_version "$iv_bin" "istio.io/istio $ISTIO_VERSION" --version; then
  log "istio-validation ($ISTIO_VERSION) cached: $iv_bin"
else
  go_build "$iv_src" "$iv_bin" . "-s -w"
fi

# Istio's CRDs are a data file in the istio.io/api module; copy it out of the module cache.
istio_dir=$CACHE/istio/$ISTIO_API_VERSION
istio_crds=$istio_dir/customresourcedefinitions.gen.yaml
if [ -s "$istio_crds" ]; then
  log "Istio CRDs $ISTIO_API_VERSION cached: $istio_crds"
else
  mod_dir=$(cd "$here/k8s-bin/etcd" && go mod download -json "istio.io/api@$ISTIO_API_VERSION" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  mkdir -p "$istio_dir"
  cp "$mod_dir/kubernetes/customresourcedefinitions.gen.yaml" "$istio_crds.tmp"
  chmod u+w "$istio_crds.tmp" && mv "$istio_crds.tmp" "$istio_crds"
  log "Istio CRDs $ISTIO_API_VERSION copied: $istio_crds"
fi

# Gateway API's CRDs (standard channel: HTTPRoute, Gateway, GatewayClass, ReferenceGrant, ...) are data files
# in the sigs.k8s.io/gateway-api module. v1.7.0's go.mod asks for a newer Go than GOTOOLCHAIN=local may have:
# `go mod download` still fetches and verifies the zip (and reports the go version), so the files are taken
# from the extracted module, or from the verified zip when go did not extract it.
gw_dir=$CACHE/gateway-api/$GATEWAY_API_VERSION
gw_crds=$gw_dir/standard-install.yaml
if [ -s "$gw_crds" ]; then
  log "Gateway API CRDs $GATEWAY_API_VERSION cached: $gw_crds"
else
  info=$(cd "$here/k8s-bin/etcd" && go mod download -json "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION" || true)
  mkdir -p "$gw_dir"
  GW_INFO=$info python3 - "$gw_crds.tmp" "$GATEWAY_API_VERSION" <<'PY'
import json, os, sys, zipfile
out, version = sys.argv[1], sys.argv[2]
info = json.loads(os.environ["GW_INFO"])
prefix = f"sigs.k8s.io/gateway-api@{version}/"
names, texts = [], []
if info.get("Dir") and os.path.isdir(info["Dir"]):
    base = os.path.join(info["Dir"], "config", "crd", "standard")
    for name in sorted(os.listdir(base)):
        if name.startswith("gateway.networking.k8s.io_") and name.endswith(".yaml"):
            texts.append(open(os.path.join(base, name)).read())
elif info.get("Zip") and os.path.isfile(info["Zip"]):
    with zipfile.ZipFile(info["Zip"]) as z:
        for name in sorted(z.namelist()):
            rest = name[len(prefix):]
            if rest.startswith("config/crd/standard/gateway.networking.k8s.io_") and rest.endswith(".yaml"):
                texts.append(z.read(name).decode())
if not texts:
    sys.exit(f"no Gateway API CRDs found in the module download: {info}")
open(out, "w").write("\n---\n".join(texts))
PY
  mv "$gw_crds.tmp" "$gw_crds"
  log "Gateway API CRDs $GATEWAY_API_VERSION copied: $gw_crds"
fi
