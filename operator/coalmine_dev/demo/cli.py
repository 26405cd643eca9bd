"""`coalmine demo`: flags for the end-to-end demo; the work is in `runner`.

Why it exists: the CLI maps `coalmine demo` here; this module only turns flags into
`runner.Options` and decides between the live terminal view and plain output.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from coalmine.core.models import parse_duration
from coalmine_dev.demo import runner, scenario
from coalmine_dev.devstack import stack as devstack


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Start (or reuse) the local stack, meshsim and the operator; apply examples/; promote a healthy "
        "canary (v2), give the next one (v3) to beta users first (A/B step), then by weight, and roll it back when it "
        "fails; write a timeline PNG and a summary to --output."
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="devstack folder; a stack already running there is reused and left running "
        "(default: $COALMINE_STATE_DIR or .state/devstack)",
    )
    parser.add_argument("--output", type=Path, default=Path("demo-output"), help="folder for the PNG, summary and logs")
    parser.add_argument("--namespace", default="shop", help="namespace for the scenario (default shop; cleaned first)")
    parser.add_argument(
        "--hold",
        default="5s",
        help="how long each step is held (default 5s; e.g. 1m for production-like pacing, about 10 minutes)",
    )
    parser.add_argument(
        "--fast",
        action="store_true",
        help="non-interactive: no live view, plain text output (for tests and CI); exit 0 only when "
        "scenario 1 Succeeded, scenario 2 RolledBack and nothing else was touched",
    )
    parser.add_argument(
        "--examples", type=Path, default=None, help="the scenario's YAML (default: the repo's examples/)"
    )


def run(args: argparse.Namespace) -> int:
    try:
        hold = parse_duration(args.hold)
    except ValueError as error:
        print(f"coalmine demo: --hold: {error}", file=sys.stderr)
        return 2
    options = runner.Options(
        state_dir=(args.state_dir or devstack.default_state_dir()).resolve(),
        output=args.output.resolve(),
        namespace=args.namespace,
        hold=hold,
        interactive=not args.fast and sys.stdout.isatty(),
        examples_dir=(args.examples or scenario.default_examples_dir()).resolve(),
    )
    options.output.mkdir(parents=True, exist_ok=True)
    return runner.Demo(options).run()
