#!/usr/bin/env bash
# Build the operator image from the Dockerfile with podman, here, without an image registry.
#
#   tools/build-image.sh [--tag IMAGE] [--base-image IMAGE]
#
# The Dockerfile's base (python:3.11 slim) lives in a registry this machine cannot reach, so by default
# the base is made locally: debootstrap of Debian bookworm (minbase + python3, python3-venv,
# ca-certificates; bookworm's python3 is 3.11), imported into podman as
# localhost/coalmine-base:bookworm-<key>, and passed as the Dockerfile's BASE_IMAGE build argument.
# The root filesystem's tarball is cached under $COALMINE_CACHE/image-base/ and the image store under
# $COALMINE_CACHE/containers/ (tools/podman.sh), so a second build reuses both and podman's layers.
# --base-image IMAGE uses IMAGE instead (e.g. the Dockerfile's default where a registry is reachable).
#
# Installs podman, buildah, runc and debootstrap first when missing (tools/install-container-tools.sh;
# exit status 3 when they cannot be installed here). Prints the image's name on stdout; logs on stderr.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
CACHE=${COALMINE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/coalmine}
export PATH=$PATH:/usr/sbin:/sbin
log() { printf '[build-image] %s\n' "$*" >&2; }

version=$(python3 -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' "$repo/pyproject.toml")
tag=localhost/coalmine:$version
base=""
while [ $# -gt 0 ]; do
  case $1 in
    --tag) tag=$2; shift 2 ;;
    --base-image) base=$2; shift 2 ;;
    -h | --help) awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "$0"; exit 0 ;;
    *) log "unknown argument: $1"; exit 2 ;;
  esac
done

"$here/install-container-tools.sh"
podman() { "$here/podman.sh" "$@"; }

# --- the base image -------------------------------------------------------------------------------
SUITE=bookworm
PACKAGES=python3,python3-venv,ca-certificates
# The key changes when what goes into the base changes: the suite, the packages, this recipe.
recipe=$(sed -n '/^# --- the base image/,/^# --- end of the base image/p' "$0")
key=$(printf '%s\n%s\n%s\n' "$SUITE" "$PACKAGES" "$recipe" | sha256sum | cut -c1-12)
base_tarball=$CACHE/image-base/$SUITE-$key.tar

# The Debian mirror this machine's apt uses (debootstrap's own default when none is configured).
debian_mirror() {
  grep -h -o -E '^(URIs:[[:space:]]*|deb[[:space:]]+)[a-z]+://[^[:space:]]+/debian/?([[:space:]]|$)' \
    /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null | awk '{print $NF}' | head -n 1 || true
}

# Remove a root filesystem, first unmounting what debootstrap may have left mounted in it (an
# interrupted debootstrap leaves /proc and /sys mounted); never crosses into another file system.
remove_root() {
  local mounted
  mounted=$(awk -v root="$1/" 'index($2, root) == 1 {print $2}' /proc/mounts | sort -r)
  for mountpoint in $mounted; do umount -l "$mountpoint" || true; done
  rm -rf --one-file-system "$1" "$1.log"
}

make_base_tarball() {
  local root start=$SECONDS mirror
  mkdir -p "$(dirname "$base_tarball")"
  root=$(mktemp -d "$CACHE/image-base/rootfs.XXXXXX")
  mirror=$(debian_mirror)
  log "debootstrap $SUITE (minbase + $PACKAGES) into $root${mirror:+ from $mirror} (about a minute)"
  # shellcheck disable=SC2086  # $mirror is one word or nothing
  debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$root" $mirror >"$root.log" 2>&1 || {
    tail -n 20 "$root.log" >&2
    remove_root "$root"
    return 1
  }
  # What an image does not need: package caches and lists, documentation.
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* \
    "$root"/usr/share/man/* "$root"/usr/share/info/*
  tar --numeric-owner --one-file-system -C "$root" -cf "$base_tarball.tmp" .
  mv "$base_tarball.tmp" "$base_tarball"
  remove_root "$root"
  log "base root filesystem $base_tarball ($(du -m "$base_tarball" | cut -f1) MB) in $((SECONDS - start)) s"
}

if [ -z "$base" ]; then
  base=localhost/coalmine-base:$SUITE-$key
  if podman image exists "$base"; then
    log "base image $base cached"
  else
    [ -s "$base_tarball" ] || make_base_tarball
    start=$SECONDS
    podman import --quiet "$base_tarball" "$base" >/dev/null
    log "imported $base in $((SECONDS - start)) s"
  fi
fi
# --- end of the base image ------------------------------------------------------------------------

# RUN steps install from PyPI. Where the host reaches it through a TLS-intercepting proxy (its CA in
# the host's bundle, pip told with `cert`), the steps see the host's bundle and a pip.conf naming it:
# bind mounts of a build are not part of the image.
mounts=()
host_bundle=/etc/ssl/certs/ca-certificates.crt
if [ -s "$host_bundle" ] && { [ -n "${PIP_CERT:-}" ] || grep -qs '^cert' /etc/pip.conf; }; then
  pip_conf=$CACHE/image-base/pip.conf
  mkdir -p "$(dirname "$pip_conf")"
  printf '[global]\ncert = /run/coalmine-build/ca-certificates.crt\n' >"$pip_conf"
  mounts=(--volume "$host_bundle:/run/coalmine-build/ca-certificates.crt:ro" --volume "$pip_conf:/etc/pip.conf:ro")
fi

start=$SECONDS
log "building $tag from $base"
podman build --network host "${mounts[@]}" --build-arg "BASE_IMAGE=$base" --tag "$tag" --file "$repo/Dockerfile" "$repo" >&2
log "built $tag in $((SECONDS - start)) s ($(podman image inspect --format '{{.Size}}' "$tag" | awk '{printf "%d MB", $1 / 1e6}'))"
echo "$tag"
