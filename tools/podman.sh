#!/usr/bin/env bash
# podman as tools/build-image.sh runs it: this project's containers.conf (runc, ulimits) and its own
# image store under $COALMINE_CACHE/containers, so images built there are found here, and nothing
# goes to the system's store. Example: tools/podman.sh run --rm localhost/coalmine:0.1.0 --help
#
# The store is given as --root/--runroot flags: a storage.conf selected with CONTAINERS_STORAGE_CONF
# made every run wait 20 s for conmon on this machine kind.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
CACHE=${COALMINE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/coalmine}
export CONTAINERS_CONF=${CONTAINERS_CONF:-$here/containers/containers.conf}
exec podman --root "$CACHE/containers/storage" --runroot "${COALMINE_PODMAN_RUNROOT:-${TMPDIR:-/tmp}/coalmine-podman-$(id -u)}" "$@"
