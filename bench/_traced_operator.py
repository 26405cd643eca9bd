"""The operator under tracemalloc, for `bench/scale.py --trace-memory FILE`: `python bench/_traced_operator.py FILE
run ...` runs `coalmine run ...`, and on SIGUSR1 writes to FILE where its live memory was allocated: the total
traced, then the largest sites by file and by line. tracemalloc costs CPU and memory of its own, so a traced run
says where the memory goes, not how fast the operator is."""

from __future__ import annotations

import runpy
import signal
import sys
import tracemalloc
from pathlib import Path
from types import FrameType

TOP = 40


def _dump(out: Path) -> None:
    snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
    by_file = snapshot.statistics("filename")
    lines = [f"traced {sum(s.size for s in by_file) / 2**20:.1f} MiB in {sum(s.count for s in by_file)} blocks"]
    for key in ("filename", "lineno"):
        lines.append(f"-- by {key}")
        for stat in snapshot.statistics(key)[:TOP]:
            lines.append(f"{stat.size / 2**20:8.2f} MiB {stat.count:9d} blocks  {stat.traceback[0]}")
    out.write_text("\n".join(lines) + "\n")


def main() -> None:
    out = Path(sys.argv.pop(1))
    tracemalloc.start(1)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        _dump(out)

    signal.signal(signal.SIGUSR1, on_signal)
    sys.argv[0] = "coalmine"
    runpy.run_module("coalmine", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
