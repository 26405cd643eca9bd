"""The long form of the property-based fuzzing in tests/integration/test_fuzz.py: --examples cases per target
(2,000 by default) against the real API server, Istio's validation webhook and the operator as a process,
then the count of each outcome per target and how long it took.

The short form (25 derandomized cases per target) runs in `make test`. This runs the same tests with
COALMINE_FUZZ_EXAMPLES set (hypothesis then draws fresh random cases; a failure prints the case and how
to reproduce it). About half a second a case on this machine: 2,000 per target is roughly 40 minutes.

  .venv/bin/python bench/fuzz.py [--examples 2000] [-k rollout_specs]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=2000, help="cases per target (2000)")
    parser.add_argument("-k", default="", help="only the targets matching this pytest -k expression")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="coalmine-fuzz-") as tmp:
        report = Path(tmp) / "fuzz.jsonl"
        env = {**os.environ, "COALMINE_FUZZ_EXAMPLES": str(args.examples), "COALMINE_FUZZ_REPORT": str(report)}
        argv = [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "tests/integration/test_fuzz.py"]
        if args.k:
            argv += ["-k", args.k]
        started = time.monotonic()
        result = subprocess.run(argv, cwd=ROOT, env=env, check=False)
        took = time.monotonic() - started
        lines = report.read_text().splitlines() if report.exists() else []
    print(f"\nfuzzing, {args.examples} cases per target, {took / 60:.1f} min, pytest exit code {result.returncode}:")
    for line in lines:
        summary = json.loads(line)
        outcomes = ", ".join(f"{k} {v}" for k, v in summary["outcomes"].items())
        print(f"  {summary['target']}: {summary['examples']} cases: {outcomes}")
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
