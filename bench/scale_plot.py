"""PNG plots of check lag and operator RSS against the number of Rollouts, from the JSON lines that
`bench/scale.py --record FILE` appends (one per run; one series per replica count).

  .venv/bin/python bench/scale_plot.py bench/scale_runs.jsonl --output bench/ [--only LABEL-PART ...]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def load(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot(runs: list[dict[str, Any]], output: Path, only: list[str] | None = None) -> list[Path]:
    """One series per label; with `only`, just the series whose label contains one of those strings."""
    series: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        label = run.get("label") or (
            f"{run.get('replicas', 1)} replica(s), {run.get('shards', 1)} shard(s), {run.get('at', '')[:10]}"
        )
        if only is None or any(part in label for part in only):
            series[label].append(run)
    runs = [run for points in series.values() for run in points]
    colours = plt.get_cmap("tab10")
    written = []
    panels = (
        (
            "scale_lag.png",
            "check lag after the grid point (s)",
            ("lag_p50_ms", "lag_p99_ms"),
            0.001,
            (1.0, "target p99 at 1,000"),
        ),
        ("scale_rss.png", "operator RSS, largest replica (MiB)", ("rss_max_mib",), 1.0, (300.0, "target at 1,000")),
    )
    for name, ylabel, keys, scale, (target, target_label) in panels:
        fig, ax = plt.subplots(figsize=(10.4, 4.4), dpi=110)
        for index, (label, points) in enumerate(sorted(series.items())):
            points.sort(key=lambda r: r["rollouts"])
            xs = [p["rollouts"] for p in points]
            for key in keys:
                style = "--" if key.endswith("p50_ms") else "-"
                suffix = {"lag_p50_ms": " p50", "lag_p99_ms": " p99"}.get(key, "")
                ys = [p[key] * scale for p in points]
                ax.plot(xs, ys, style, marker="o", color=colours(index % 10), label=label + suffix)
        ax.axhline(target, color="grey", linewidth=0.8, linestyle=":", label=target_label)
        ax.set_xlabel("Rollouts")
        ax.set_ylabel(ylabel)
        ax.set_xscale("log")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the axes, not over the points
        ax.set_title("bench/scale.py, one 2-core machine (load averages: bench/scale_runs.jsonl)", fontsize=8)
        fig.tight_layout()
        path = output / name
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, help="JSON lines from bench/scale.py --record")
    parser.add_argument("--output", type=Path, default=Path(__file__).parent)
    parser.add_argument("--only", action="append", help="draw only series whose label contains this (repeatable)")
    args = parser.parse_args()
    for path in plot(load(args.runs), args.output, args.only):
        print(path)


if __name__ == "__main__":
    main()
