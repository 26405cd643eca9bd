"""The `coalmine` command line: one entry point for the operator and its tools.

Each subcommand lives in its own module and is imported only when chosen, so
`coalmine status` does not pay for kopf and `coalmine run` does not pay for matplotlib.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# subcommand -> module that provides `add_arguments(parser)` and `run(args) -> int`
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "run": ("coalmine.main", "run the operator"),
    "devstack": (
        "coalmine.devstack.cli",
        "start/stop the embedded local stack (apiserver, etcd, Prometheus)",
    ),
    "meshsim": ("coalmine.meshsim.cli", "simulate Istio mesh traffic and telemetry for tests and the demo"),
    "status": ("coalmine.view.cli", "show Rollouts as a cluster admin sees them"),
    "demo": ("coalmine.demo.cli", "run the end-to-end demo on the local stack"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="coalmine", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        subparser = sub.add_parser(name, help=help_text, description=help_text)
        subparser.set_defaults(_module=module_name)
        # Only the chosen subcommand's module is imported (see `main`); the others get a
        # lazily-filled parser so `coalmine --help` stays fast.
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    # Find the subcommand first (there are no top-level options), let its module declare its
    # arguments, then parse once; this way `coalmine SUBCOMMAND --help` lists them too.
    command = next((a for a in argv if a in SUBCOMMANDS), None)
    if command is not None:
        subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        importlib.import_module(SUBCOMMANDS[command][0]).add_arguments(subparsers.choices[command])
    args = parser.parse_args(argv)
    module = importlib.import_module(args._module)
    result: int = module.run(args)
    return result
