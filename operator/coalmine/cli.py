"""The `coalmine` command line: run the operator, show and steer Rollouts, and what installed plugins add.

`run` is the operator, `status` the cluster admin's view, and `promote`, `abort`, `pause`, `resume`
and `retry` steer a rollout by hand (the same as the kubectl plugin `kubectl coalmine ...`, the
`kubectl-coalmine` script); other distributions plug subcommands in through the entry point group
`coalmine.commands` (the dev kit adds `devstack`, `meshsim` and `demo`).

Each subcommand lives in its own module and is imported only when chosen, so `coalmine status` does
not pay for kopf, and `coalmine run` does not pay for rich.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points

STEER = {
    "promote": "end the current step's hold now (--full: all the traffic to the canary at once)",
    "abort": "take all the traffic off the canary now",
    "pause": "no further increase; checks and rollback keep running",
    "resume": "go on after a pause, the hold where it stopped",
    "retry": "start a RolledBack rollout again from the first step",
}

# subcommand -> module that provides `add_arguments(parser)` and `run(args) -> int`
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "run": ("coalmine.run", "run the operator"),
    "status": ("coalmine.status.cli", "show Rollouts as a cluster admin sees them (needs coalmine[status])"),
    "replay": ("coalmine.replay", "run a Rollout's analysis over past Prometheus data (needs coalmine[status])"),
    **{verb: ("coalmine.steer", summary) for verb, summary in STEER.items()},
}
PLUGIN_GROUP = "coalmine.commands"


def subcommands() -> dict[str, tuple[str, str]]:
    """The built-in subcommands and the plugged-in ones (module path; first line of its docstring)."""
    found = dict(SUBCOMMANDS)
    for point in entry_points(group=PLUGIN_GROUP):
        found.setdefault(point.name, (point.value, f"{point.name} (from {point.dist.name if point.dist else '?'})"))
    return found


def build_parser(commands: dict[str, tuple[str, str]], prog: str = "coalmine") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=(__doc__ or "").splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in commands.items():
        subparser = sub.add_parser(name, help=help_text, description=help_text)
        subparser.set_defaults(_module=module_name)
    return parser


def main(argv: Sequence[str] | None = None, prog: str = "coalmine") -> int:
    commands = subcommands()
    parser = build_parser(commands, prog)
    argv = list(sys.argv[1:] if argv is None else argv)
    # Find the subcommand first (there are no top-level options), let its module declare its
    # arguments, then parse once; this way `coalmine SUBCOMMAND --help` lists them too.
    command = next((a for a in argv if a in commands), None)
    if command is not None:
        subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        try:
            module = importlib.import_module(commands[command][0])
        except ModuleNotFoundError as exc:
            extra = " (pip install 'coalmine[status]')" if command in ("status", "replay", *STEER) else ""
            print(f"coalmine {command}: {exc.name} is not installed{extra}", file=sys.stderr)
            return 2
        module.add_arguments(subparsers.choices[command])
    args = parser.parse_args(argv)
    module = importlib.import_module(args._module)
    result: int = module.run(args)
    return result


def plugin_main() -> int:
    """`kubectl coalmine ...`: kubectl runs `kubectl-coalmine` from PATH with the arguments after `coalmine`."""
    return main(prog="kubectl coalmine")
