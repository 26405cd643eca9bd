"""Find the control-plane executables and Istio's CRD file that `tools/build-control-plane.sh` caches.

The lookup mirrors the build script (environment variables first, then the version-keyed cache),
so a binary the script accepted is the one the stack starts. When something is missing, the
error says which file and the command that provides it.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

K8S_VERSION = "v1.35.4"
ETCD_VERSION = "v3.6.16"
ISTIO_API_VERSION = "v1.32.0"

BUILD_HINT = "run `make binaries` (or `tools/build-control-plane.sh`) to build and cache it"
PROMETHEUS_HINT = "run `tools/install-prometheus.sh` (or `apt-get install prometheus`), or set PROMETHEUS_BIN"


class MissingBinaryError(RuntimeError):
    """A required executable or data file is not where we looked; the message says how to get it."""


@dataclass(frozen=True)
class Binaries:
    kube_apiserver: Path
    etcd: Path
    kubectl: Path
    prometheus: Path
    istio_crds: Path


def cache_root() -> Path:
    if root := os.environ.get("COALMINE_CACHE"):
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "coalmine"


def _control_plane_binary(name: str, env_var: str, cached: Path) -> Path:
    if value := os.environ.get(env_var):
        candidates = [(Path(value), f"${env_var}")]
    elif assets := os.environ.get("KUBEBUILDER_ASSETS"):
        candidates = [(Path(assets) / name, "$KUBEBUILDER_ASSETS"), (cached, "the cache")]
    else:
        candidates = [(cached, "the cache")]
    for path, _ in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    looked = ", ".join(f"{path} (from {source})" for path, source in candidates)
    raise MissingBinaryError(f"{name} not found; looked at {looked}; {BUILD_HINT}")


def kube_apiserver() -> Path:
    cached = cache_root() / "k8s" / K8S_VERSION / "kube-apiserver"
    return _control_plane_binary("kube-apiserver", "TEST_ASSET_KUBE_APISERVER", cached)


def kubectl() -> Path:
    return _control_plane_binary("kubectl", "TEST_ASSET_KUBECTL", cache_root() / "k8s" / K8S_VERSION / "kubectl")


def etcd() -> Path:
    return _control_plane_binary("etcd", "TEST_ASSET_ETCD", cache_root() / "etcd" / ETCD_VERSION / "etcd")


def istio_crds() -> Path:
    path = cache_root() / "istio" / ISTIO_API_VERSION / "customresourcedefinitions.gen.yaml"
    if not path.is_file():
        raise MissingBinaryError(f"Istio CRD file not found at {path}; {BUILD_HINT}")
    return path


def prometheus() -> Path:
    if value := os.environ.get("PROMETHEUS_BIN"):
        path = Path(value)
        if path.is_file() and os.access(path, os.X_OK):
            return path
        raise MissingBinaryError(f"prometheus not found at {path} (from $PROMETHEUS_BIN); {PROMETHEUS_HINT}")
    if found := shutil.which("prometheus"):
        return Path(found)
    raise MissingBinaryError(f"prometheus not found on PATH; {PROMETHEUS_HINT}")


def find_all() -> Binaries:
    """Every executable and file the stack needs; raises listing all that are missing."""
    found: dict[str, Path] = {}
    missing: list[str] = []
    lookups = {
        "kube_apiserver": kube_apiserver,
        "etcd": etcd,
        "kubectl": kubectl,
        "prometheus": prometheus,
        "istio_crds": istio_crds,
    }
    for field, lookup in lookups.items():
        try:
            found[field] = lookup()
        except MissingBinaryError as error:
            missing.append(str(error))
    if missing:
        raise MissingBinaryError("\n".join(missing))
    return Binaries(**found)
