"""The statistics behind the judges, as pure functions of numbers: no Prometheus, no Rollout.

- `overwhelming_errors`: one-sided binomial tail. With n canary requests and k errors, how likely would a
  canary exactly at the success-rate bound (error probability p0 = 1 - min/100) show k or more errors?
  Below 1 - confidence, one check is overwhelming evidence (fail fast).
- `share_margin`: how far a canary's observed share of requests may stray from the routes' weight before
  it is "far off": the normal approximation of the binomial standard error at that request count
  (z for the check's confidence) plus a fixed tolerance for counter timing (requests in flight,
  scrapes at different moments).
- `mann_whitney`: is the canary's sample stochastically worse than the stable's (one-sided Mann-Whitney U,
  the Kayenta judge's test)? None when there are too few samples to tell.
- `burn_rates`: error budget burn rate of an error ratio, SRE workbook style.

scipy does the statistics (binomial tail, normal quantile, Mann-Whitney U); it is imported on first use,
so an operator whose Rollouts use no judge never loads it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal


def overwhelming_errors(requests: float, errors: float, bound_error_ratio: float, confidence: float) -> float | None:
    """The probability that a canary at the bound shows `errors` or more of `requests`; None when there is
    nothing to test (no requests, no errors). The caller fails fast when it is below 1 - confidence."""
    from scipy.stats import binom

    n, k = round(requests), round(errors)
    if n <= 0 or k <= 0:
        return None
    p0 = min(max(bound_error_ratio, 0.0), 1.0)
    return float(binom.sf(k - 1, n, p0))


def share_margin(expected: float, requests: float, tolerance: float, confidence: float) -> float:
    """Allowed |observed - expected| for a share (all as fractions 0..1) at this request count."""
    from scipy.stats import norm

    if requests <= 0:
        return math.inf
    z = float(norm.ppf(1 - (1 - confidence) / 2))
    return z * math.sqrt(expected * (1 - expected) / requests) + tolerance


Worse = Literal["less", "greater"]


@dataclass(frozen=True)
class Comparison:
    p_value: float  # the one-sided test's p-value (1.0 when the samples cannot differ: all tied)
    canary_median: float
    stable_median: float
    samples: tuple[int, int]  # canary, stable


def mann_whitney(
    canary: Sequence[float], stable: Sequence[float], *, worse: Worse, min_samples: int
) -> Comparison | None:
    """One-sided Mann-Whitney U: is the canary's distribution shifted toward worse ("less" for a success
    rate, "greater" for a latency)? None with fewer than `min_samples` finite values on either side."""
    from scipy.stats import mannwhitneyu

    c = [v for v in canary if math.isfinite(v)]
    s = [v for v in stable if math.isfinite(v)]
    if len(c) < min_samples or len(s) < min_samples:
        return None
    if len(set(c) | set(s)) == 1:
        p = 1.0  # identical samples: nothing to tell apart (Kayenta calls this a pass)
    else:
        p = float(mannwhitneyu(c, s, alternative=worse, method="auto").pvalue)
        p = 1.0 if math.isnan(p) else p
    return Comparison(p, _median(c), _median(s), (len(c), len(s)))


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def burn_rate(success_percent: float, objective_percent: float) -> float:
    """How many times faster than the SLO allows the errors burn the budget (1 = exactly on budget)."""
    budget = 1 - objective_percent / 100
    errors = 1 - success_percent / 100
    if budget <= 0:
        return math.inf if errors > 0 else 0.0
    return max(errors, 0.0) / budget
