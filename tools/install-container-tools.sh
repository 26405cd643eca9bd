#!/usr/bin/env bash
# Install what tools/build-image.sh needs from Debian's packages, only what is missing:
# podman, buildah, runc (crun, podman's default, fails on this machine kind: see
# tools/containers/containers.conf) and debootstrap (the local base image).
# Exit status 3, with the reason on stderr, when they are missing and cannot be installed here
# (not root, no apt-get, or apt-get fails): the image test skips with that reason.
set -euo pipefail
log() { printf '[install-container-tools] %s\n' "$*" >&2; }

export PATH=$PATH:/usr/sbin:/sbin
missing=()
for package in podman buildah runc debootstrap; do
  command -v "$package" >/dev/null 2>&1 || missing+=("$package")
done
if [ ${#missing[@]} -eq 0 ]; then
  log "found podman $(podman --version | awk '{print $3}'), buildah, runc, debootstrap"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  log "missing ${missing[*]}, and installing them needs root: sudo apt-get install ${missing[*]}"
  exit 3
fi
if ! command -v apt-get >/dev/null 2>&1; then
  log "missing ${missing[*]}, and there is no apt-get to install them with"
  exit 3
fi
log "installing ${missing[*]} from Debian's packages"
export DEBIAN_FRONTEND=noninteractive
if ! apt-get update -qq || ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; then
  log "apt-get could not install ${missing[*]}"
  exit 3
fi
log "installed podman $(podman --version | awk '{print $3}'), buildah, runc, debootstrap"
