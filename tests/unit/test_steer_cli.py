"""The steering commands' argument handling and how they read the operator's answer (no cluster: the
commands against a real API server and operator are in tests/integration/test_steer.py)."""

from __future__ import annotations

import argparse
from typing import Any

import pytest
from builders import T0, rollout

from coalmine import cli, steer
from coalmine.core.models import HandledRequest, HistoryEntry, Request


def test_only_promote_takes_full_and_every_verb_takes_namespace_kubeconfig_reason_and_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[argparse.Namespace] = []
    monkeypatch.setattr(steer, "run", lambda args: seen.append(args) or 0)
    for verb in cli.STEER:
        argv = [verb, "order", "-n", "shop", "--kubeconfig", "k", "--reason", "why", "--timeout", "0"]
        assert cli.main([*argv, "--full"] if verb == "promote" else argv) == 0
    assert [(a.command, a.name, a.namespace, a.kubeconfig, a.reason, a.timeout) for a in seen] == [
        (verb, "order", "shop", "k", "why", 0.0) for verb in cli.STEER
    ]
    assert seen[0].full is True
    with pytest.raises(SystemExit) as exited:
        cli.main(["abort", "order", "--full"])
    assert exited.value.code == 2, "--full goes with promote only"


def test_the_kubectl_plugin_is_the_same_command_under_kubectl_s_name(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["pause", "--help"], prog="kubectl coalmine")
    assert capsys.readouterr().out.startswith("usage: kubectl coalmine pause")


def _with(status: dict[str, Any]) -> Any:
    return rollout(status=status)


def test_the_outcome_is_read_from_last_request_or_history() -> None:
    mine = Request(id="r1", verb="pause", by="alice")
    assert steer._outcome(_with({}), mine) is None
    handled = HandledRequest(
        **mine.model_dump(exclude={"problem"}), handled_at=T0, result="Refused", message="not Progressing"
    )
    assert steer._outcome(_with({"lastRequest": handled.to_wire()}), mine) == ("Refused", "not Progressing")
    entry = HistoryEntry(step_index=0, weight=10, started_at=T0, request=mine)
    later = HandledRequest(id="r2", verb="resume", handled_at=T0, result="Applied")
    status = {"history": [entry.to_wire()], "lastRequest": later.to_wire()}
    result, _ = steer._outcome(_with(status), mine) or ("", "")
    assert result == "Applied", "handled, and another request after it"
