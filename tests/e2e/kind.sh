#!/usr/bin/env bash
# make e2e-kind: coalmine on a kind cluster with real Istio, for machines with Docker.
#
#   tests/e2e/kind.sh [--dry-run] [--keep] [--hold DURATION]
#
# Creates a kind cluster, installs Istio (istioctl, minimal profile) and its Prometheus addon, builds
# and loads the sample app (tests/e2e/app: order v1/v2/v3 and a load generator, error ratio and latency
# from env vars) and the operator image, installs coalmine from charts/coalmine, and runs the demo's two
# scenarios with the demo's checks (tests/e2e/kind_demo.py): v1 -> v2 is promoted (Succeeded), v2 -> v3,
# failing once it has 30 %, is rolled back (RolledBack at 0 %), and nothing but the owned route's
# destinations changed. Exit status 0 only when all of that holds. The cluster is deleted at the end
# unless --keep.
#
# NOT run in this project's CI: CI's machines have no Docker engine. --dry-run prints every command
# without running any (tests/unit/test_e2e_kind.py checks it); shellcheck checks this file (make lint).
#
# Needs: docker with a running engine, curl, go (builds kind when it is not on PATH), and `make setup`
# (the .venv, kubectl and helm). Settings: CLUSTER (coalmine-e2e), ISTIO_VERSION (1.32.0, the version
# of the Istio CRDs the tests use), KIND_VERSION (v0.33.0). Downloads are cached under $COALMINE_CACHE.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
CACHE=${COALMINE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/coalmine}
CLUSTER=${CLUSTER:-coalmine-e2e}
ISTIO_VERSION=${ISTIO_VERSION:-1.32.0}
KIND_VERSION=${KIND_VERSION:-v0.33.0}
K8S_VERSION=${K8S_VERSION:-v1.35.4}  # kubectl from tools/build-control-plane.sh
state=$repo/.state/e2e-kind
kubeconfig=$state/kubeconfig
DRY_RUN=0
KEEP=0
HOLD=1m

while [ $# -gt 0 ]; do
  case $1 in
    --dry-run) DRY_RUN=1; shift ;;
    --keep) KEEP=1; shift ;;
    --hold) HOLD=$2; shift 2 ;;
    -h | --help) awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done

# Every command goes through run: printed, then run unless --dry-run.
run() {
  printf '+'
  printf ' %q' "$@"
  printf '\n'
  if [ "$DRY_RUN" = 0 ]; then "$@"; fi
}
# capture VAR PLACEHOLDER COMMAND...: run COMMAND and keep the last line it prints (a path) in VAR;
# in a dry run VAR is PLACEHOLDER.
capture() {
  local var=$1 placeholder=$2 out; shift 2
  out=$(run "$@")
  if [ "$DRY_RUN" = 1 ]; then
    printf '%s\n' "$out"
    printf -v "$var" '%s' "$placeholder"
  else
    printf -v "$var" '%s' "$(tail -n 1 <<<"$out")"
  fi
}
log() { printf '[e2e-kind] %s\n' "$*" >&2; }

# --- tools -----------------------------------------------------------------------------------------
if [ "$DRY_RUN" = 0 ]; then
  for tool in docker curl; do
    command -v "$tool" >/dev/null || { log "$tool is needed"; exit 1; }
  done
  docker info >/dev/null 2>&1 || { log "docker has no running engine"; exit 1; }
  [ -x "$repo/.venv/bin/python" ] || { log "run make setup first"; exit 1; }
fi
python=$repo/.venv/bin/python
kubectl=$(command -v kubectl || echo "$CACHE/k8s/$K8S_VERSION/kubectl")
helm=""
capture helm helm "$repo/tools/build-helm.sh"

kind=$(command -v kind || echo "$CACHE/kind/$KIND_VERSION/kind")
if [ ! -x "$kind" ]; then
  run env GOBIN="$CACHE/kind/$KIND_VERSION" go install "sigs.k8s.io/kind@$KIND_VERSION"
fi

# istioctl and the Prometheus addon come from the same Istio release (Istio's downloadIstio script).
istio_dir=$CACHE/istio-release/$ISTIO_VERSION/istio-$ISTIO_VERSION
if [ ! -x "$istio_dir/bin/istioctl" ]; then
  run mkdir -p "$(dirname "$istio_dir")"
  run curl -sSfL -o "$(dirname "$istio_dir")/downloadIstio.sh" https://istio.io/downloadIstio
  run sh -c 'cd "$1" && ISTIO_VERSION="$2" sh downloadIstio.sh' sh "$(dirname "$istio_dir")" "$ISTIO_VERSION"
fi
istioctl=$istio_dir/bin/istioctl

# --- the cluster -----------------------------------------------------------------------------------
# shellcheck disable=SC2329  # invoked by the EXIT trap
cleanup() {
  if [ "$KEEP" = 1 ]; then
    log "kept: kind cluster $CLUSTER (KUBECONFIG=$kubeconfig); delete it with: $kind delete cluster --name $CLUSTER"
  else
    run "$kind" delete cluster --name "$CLUSTER"
  fi
}
run mkdir -p "$state"
run "$kind" create cluster --name "$CLUSTER" --kubeconfig "$kubeconfig" --wait 5m
trap cleanup EXIT
export KUBECONFIG=$kubeconfig

run "$istioctl" install -y --set profile=minimal
run "$kubectl" -n istio-system rollout status deployment/istiod --timeout 5m
run "$kubectl" apply -f "$istio_dir/samples/addons/prometheus.yaml"
run "$kubectl" -n istio-system rollout status deployment/prometheus --timeout 5m

# --- images: the sample app and the operator, loaded into the cluster's nodes (never pushed) ---------
run docker build -t coalmine-e2e/order:dev "$here/app"
run docker build -t coalmine:e2e "$repo"
run "$kind" load docker-image --name "$CLUSTER" coalmine-e2e/order:dev coalmine:e2e

# --- the app: examples/'s namespace with sidecar injection, order v1/v2/v3 and the load generator ---
run "$kubectl" apply -f "$repo/examples/00-namespace.yaml"
run "$kubectl" label namespace shop istio-injection=enabled --overwrite
run "$kubectl" apply -f "$here/manifests/order.yaml"
for deployment in order-v1 order-v2 order-v3 loadgen; do
  run "$kubectl" -n shop rollout status "deployment/$deployment" --timeout 5m
done

# --- coalmine from the chart, as the README's Install section says ---------------------------------
run "$helm" install coalmine "$repo/charts/coalmine" --namespace coalmine-system --create-namespace \
  --set image.repository=coalmine --set image.tag=e2e --set image.pullPolicy=Never --wait --timeout 5m

# --- the two scenarios, with the local demo's checks -------------------------------------------------
status=0
run "$python" "$here/kind_demo.py" --kubeconfig "$kubeconfig" --hold "$HOLD" --output "$state/demo" || status=$?
run "$kubectl" -n coalmine-system logs deployment/coalmine --all-containers --tail=-1 || true
exit "$status"
