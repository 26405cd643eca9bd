"""`coalmine meshsim` argument handling: config file + flags, listen address, honest --help."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from coalmine import cli as coalmine_cli
from coalmine_dev.meshsim import cli
from coalmine_dev.meshsim.config import ConfigError


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_help_says_it_is_a_simulator_not_a_proxy(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        coalmine_cli.main(["meshsim", "--help"])
    out = capsys.readouterr().out
    assert "NOT a proxy" in out
    assert "--listen" in out
    assert "--address-file" in out


@pytest.mark.parametrize("suffix", [pytest.param(".yaml", id="yaml"), pytest.param(".json", id="json")])
def test_config_file_and_flags_combine(tmp_path: Path, suffix: str) -> None:
    doc = {
        "services": [{"namespace": "a", "host": "web", "rps": 5}],
        "destinations": {"a/web/canary": {"errorRatio": 0.5}},
    }
    path = tmp_path / f"meshsim{suffix}"
    path.write_text(json.dumps(doc))  # JSON is also YAML
    args = parse("--config", str(path), "--service", "b/api=12.5", "--namespace", "a", "--tick", "0.2")
    config = cli.load_config(args)
    assert {k: s.rps for k, s in config.services.items()} == {"a/web": 5.0, "b/api": 12.5}
    assert config.behaviour("a/web/canary").error_ratio == 0.5
    assert (config.namespaces, config.tick_seconds) == (("a",), 0.2)


@pytest.mark.parametrize(
    "service",
    [pytest.param("b/api", id="no-rps"), pytest.param("api=3", id="no-namespace"), pytest.param("b/api=x", id="nan")],
)
def test_bad_service_flag(service: str) -> None:
    with pytest.raises(ConfigError, match="--service"):
        cli.load_config(parse("--service", service))


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        pytest.param("127.0.0.1:0", ("127.0.0.1", 0), id="free-port"),
        pytest.param("127.0.0.1:9100", ("127.0.0.1", 9100), id="fixed"),
    ],
)
def test_parse_listen(listen: str, expected: tuple[str, int]) -> None:
    assert cli.parse_listen(listen) == expected


def test_bad_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("destinations: {a/b/c: {errorRatio: 3}}\n")
    assert cli.run(parse("--config", str(path))) == 2
    assert "errorRatio must be between 0.0 and 1.0" in capsys.readouterr().err
