"""The distribution as a user gets it: `python -m build` makes an sdist and a wheel, and the wheel, installed
into a fresh venv from PyPI with constraints.txt, runs `coalmine --help` and `coalmine run --help` with
the runtime dependencies alone: none of the status view's, the harness's or the tests' libraries, and no
coalmine_dev. The LICENSE it carries is the Apache-2.0 text that installed packages ship.

Needs PyPI (the build backend and the dependencies; about 30 s), not the local stack.
"""

from __future__ import annotations

import email
import json
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def run(*argv: str | Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, check=False, timeout=timeout)


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("dist")
    done = run(sys.executable, "-m", "build", "--outdir", out, REPO)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (sdist,) = out.glob("coalmine-*.tar.gz")
    (wheel,) = out.glob("coalmine-*-py3-none-any.whl")
    return {"sdist": sdist, "wheel": wheel}


@pytest.fixture(scope="module")
def venv(dist: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel installed as the README says, pinned by constraints.txt."""
    path = tmp_path_factory.mktemp("venv")
    assert run(sys.executable, "-m", "venv", path).returncode == 0
    done = run(path / "bin" / "pip", "install", "--constraint", REPO / "constraints.txt", dist["wheel"])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return path


def test_the_wheel_holds_the_product_and_its_license(dist: dict[str, Path]) -> None:
    with zipfile.ZipFile(dist["wheel"]) as wheel:
        names = wheel.namelist()
        (metadata_name,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        metadata = email.message_from_bytes(wheel.read(metadata_name))
        (license_name,) = [n for n in names if n.endswith(".dist-info/licenses/LICENSE")]
        assert wheel.read(license_name) == (REPO / "LICENSE").read_bytes()
    packages = {n.split("/")[0] for n in names if not n.startswith("coalmine-")}
    assert packages == {"coalmine"}, "only the product: coalmine_dev is tools/devkit's distribution"
    assert "coalmine/run.py" in names
    assert "coalmine/py.typed" in names
    assert metadata["License-Expression"] == "Apache-2.0"
    assert metadata.get_all("License-File") == ["LICENSE"]
    requires = {
        normalized(re.split(r"[ =<>;\[]", r)[0]) for r in metadata.get_all("Requires-Dist") or [] if "extra" not in r
    }
    assert requires == {"kopf", "kubernetes-asyncio", "pydantic", "prometheus-client", "httpx", "scipy"}
    with tarfile.open(dist["sdist"]) as sdist:
        members = sdist.getnames()
    root = members[0].split("/")[0]
    assert f"{root}/LICENSE" in members
    assert not [m for m in members if "coalmine_dev" in m or "/tests/" in m]


def test_the_license_is_the_apache_text_installed_packages_ship(venv: Path) -> None:
    ours = (REPO / "LICENSE").read_bytes()
    assert ours.lstrip().startswith(b"Apache License\n                           Version 2.0, January 2004")
    shipped = [
        path
        for path in venv.glob("lib/python*/site-packages/*.dist-info/**/*")
        if path.is_file() and "LICENSE" in path.name and not path.parent.name.startswith("coalmine")
    ]
    same = [path for path in shipped if path.read_bytes() == ours]
    assert same, f"no installed package ships these bytes; looked at {[str(p) for p in shipped]}"


def test_only_the_runtime_dependencies_are_installed(venv: Path) -> None:
    done = run(venv / "bin" / "pip", "list", "--format", "json")
    assert done.returncode == 0, done.stderr
    installed = {normalized(p["name"]): p["version"] for p in json.loads(done.stdout)}
    for absent in ("rich", "kubernetes", "matplotlib", "coalmine-dev", "pytest", "cryptography"):
        assert absent not in installed
    pins = dict(line.split("==", 1) for line in (REPO / "constraints.txt").read_text().splitlines() if "==" in line)
    for name, version in installed.items():
        if name in ("coalmine", "pip", "setuptools"):  # the wheel, and what a new venv comes with
            continue
        assert pins.get(name) == version, f"{name} {version} is installed but constraints.txt pins {pins.get(name)}"
    assert set(pins) <= set(installed), f"pinned but not installed: {set(pins) - set(installed)}"


def test_coalmine_help_and_run_help(venv: Path) -> None:
    coalmine = venv / "bin" / "coalmine"
    top = run(coalmine, "--help", timeout=60)
    assert top.returncode == 0, top.stderr
    assert "run the operator" in top.stdout
    for plugin in ("devstack", "meshsim", "demo"):  # the harness's subcommands come with coalmine-dev only
        assert plugin not in top.stdout
    helped = run(coalmine, "run", "--help", timeout=60)
    assert helped.returncode == 0, helped.stderr
    for flag in ("--prometheus-url", "--leader-election", "--namespace", "--log-format"):
        assert flag in helped.stdout
    # `coalmine status` needs the extra, and says so instead of a traceback.
    status = run(coalmine, "status", timeout=60)
    assert status.returncode == 2
    assert "pip install 'coalmine[status]'" in status.stderr
