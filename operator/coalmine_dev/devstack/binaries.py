"""Find the executables and data files that `tools/build-control-plane.sh` builds and caches.

The lookup mirrors the build script (environment variables first, then the version-keyed cache),
so a binary the script accepted is the one the stack starts. When something is missing, the
error says which file and the command that provides it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

K8S_VERSION = "v1.35.4"
ETCD_VERSION = "v3.6.16"
ISTIO_API_VERSION = "v1.32.0"
# Pinned by the wrapper modules' go.mod files (a unit test checks they agree with these).
KWOK_VERSION = "v0.8.0"
ISTIO_VERSION = "v0.0.0-20260827124520-eed52ebb66ad"  # istio.io/istio: the proxy serves only pseudo-versions

TOOLS_DIR = Path(__file__).resolve().parents[3] / "tools"

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
    gateway_crds: Path


@dataclass(frozen=True)
class WorkloadBinaries:
    """What turns the bare API server into a small cluster: controllers, scheduler, simulated nodes."""

    kube_controller_manager: Path
    kube_scheduler: Path
    kwok: Path
    kwok_stages: Path


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


def kube_controller_manager() -> Path:
    cached = cache_root() / "k8s" / K8S_VERSION / "kube-controller-manager"
    return _control_plane_binary("kube-controller-manager", "TEST_ASSET_KUBE_CONTROLLER_MANAGER", cached)


def kube_scheduler() -> Path:
    cached = cache_root() / "k8s" / K8S_VERSION / "kube-scheduler"
    return _control_plane_binary("kube-scheduler", "TEST_ASSET_KUBE_SCHEDULER", cached)


def kwok() -> Path:
    return _control_plane_binary("kwok", "TEST_ASSET_KWOK", cache_root() / "kwok" / KWOK_VERSION / "kwok")


def kwok_stages() -> Path:
    """kwok's Stage objects (node and pod life cycles) that a standalone kwok needs as --config."""
    path = cache_root() / "kwok" / KWOK_VERSION / "stages.yaml"
    if not path.is_file():
        raise MissingBinaryError(f"kwok's stage file not found at {path}; {BUILD_HINT}")
    return path


def istio_validation_source_hash(source: Path | None = None) -> str:
    """The build script's cache key for tools/istio-validation: sha256 of its files, in name order."""
    folder = source or TOOLS_DIR / "istio-validation"
    files = sorted((p for p in folder.rglob("*") if p.is_file()), key=lambda p: "./" + str(p.relative_to(folder)))
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def istio_validation() -> Path:
    """The Istio validation webhook built from tools/istio-validation (rebuilt when its source changes)."""
    path = cache_root() / "istio-validation" / f"{ISTIO_VERSION}-{istio_validation_source_hash()}" / "istio-validation"
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise MissingBinaryError(f"istio-validation not found at {path} (or its source changed); {BUILD_HINT}")
    return path


def istio_crds() -> Path:
    path = cache_root() / "istio" / ISTIO_API_VERSION / "customresourcedefinitions.gen.yaml"
    if not path.is_file():
        raise MissingBinaryError(f"Istio CRD file not found at {path}; {BUILD_HINT}")
    return path


GATEWAY_API_VERSION = "v1.7.0"


def gateway_crds() -> Path:
    """Gateway API's standard-channel CRDs, from the sigs.k8s.io/gateway-api module (tools/build-control-plane.sh)."""
    path = cache_root() / "gateway-api" / GATEWAY_API_VERSION / "standard-install.yaml"
    if not path.is_file():
        raise MissingBinaryError(f"Gateway API CRD file not found at {path}; {BUILD_HINT}")
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


T = TypeVar("T")


def _find(kind: Callable[..., T], lookups: dict[str, Callable[[], Path]], missing: list[str]) -> T | None:
    found: dict[str, Path] = {}
    for field, lookup in lookups.items():
        try:
            found[field] = lookup()
        except MissingBinaryError as error:
            missing.append(str(error))
    return None if len(found) < len(lookups) else kind(**found)


def find_all() -> Binaries:
    """Every executable and file the bare stack needs; raises listing all that are missing."""
    missing: list[str] = []
    found = _find(
        Binaries,
        {
            "kube_apiserver": kube_apiserver,
            "etcd": etcd,
            "kubectl": kubectl,
            "prometheus": prometheus,
            "istio_crds": istio_crds,
            "gateway_crds": gateway_crds,
        },
        missing,
    )
    if found is None:
        raise MissingBinaryError("\n".join(missing))
    return found


def find_workloads() -> WorkloadBinaries:
    """kube-controller-manager, kube-scheduler, kwok and kwok's stages; raises listing all that are missing."""
    missing: list[str] = []
    found = _find(
        WorkloadBinaries,
        {
            "kube_controller_manager": kube_controller_manager,
            "kube_scheduler": kube_scheduler,
            "kwok": kwok,
            "kwok_stages": kwok_stages,
        },
        missing,
    )
    if found is None:
        raise MissingBinaryError("\n".join(missing))
    return found
