"""95% intervals for the demo's held-out pass@1 and its gain: a bootstrap over problems.

pass@1 is the mean over problems of each problem's share of right samples, so its uncertainty comes
from which problems were drawn (and from the few samples per problem, which the per-problem shares
already carry). The bootstrap resamples problems with replacement and takes the percentiles of the
resampled means. The gain's interval is *paired*: each resample draws the same problems before and
after and takes the mean of their differences, so the problems' shared difficulty cancels and the
gain's interval is narrower than the two accuracies' intervals suggest.

Deterministic: the resamples come from ``numpy.random.default_rng(seed)``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

LEVEL = 0.95
RESAMPLES = 10000
# below this many problems the report says that its interval is wide (the demo's --eval-limit)
FEW_PROBLEMS = 200


def per_problem(rows: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Each problem's share of right samples, from graded samples (``problem_id``, ``correct``)."""
    right: dict[str, int] = defaultdict(int)
    total: dict[str, int] = defaultdict(int)
    for r in rows:
        total[r["problem_id"]] += 1
        right[r["problem_id"]] += bool(r["correct"])
    return {p: right[p] / total[p] for p in total}


def _percentiles(means: np.ndarray, level: float) -> tuple[float, float]:
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return float(lo), float(hi)


def bootstrap_interval(
    scores: Sequence[float], *, level: float = LEVEL, resamples: int = RESAMPLES, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``scores`` (one score per problem)."""
    x = np.asarray(scores, dtype=float)
    if x.size == 0:
        raise ValueError("bootstrap_interval needs at least one problem")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(resamples, x.size))
    return _percentiles(x[idx].mean(axis=1), level)


def paired_gain_interval(
    before: Mapping[str, float],
    after: Mapping[str, float],
    *,
    level: float = LEVEL,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> tuple[float, float]:
    """Paired bootstrap interval of mean(after) - mean(before) over the problems evaluated in both."""
    common = sorted(set(before) & set(after))
    if not common:
        raise ValueError("paired_gain_interval needs problems evaluated both before and after")
    return bootstrap_interval(
        [after[p] - before[p] for p in common], level=level, resamples=resamples, seed=seed
    )


def demo_intervals(
    before_rows: Iterable[Mapping[str, Any]],
    after_rows: Iterable[Mapping[str, Any]],
    *,
    level: float = LEVEL,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> dict[str, Any]:
    """The demo's intervals: pass@1 before and after, and the paired gain (in points)."""
    b, a = per_problem(before_rows), per_problem(after_rows)
    lo_b, hi_b = bootstrap_interval(list(b.values()), level=level, resamples=resamples, seed=seed)
    lo_a, hi_a = bootstrap_interval(list(a.values()), level=level, resamples=resamples, seed=seed)
    lo_g, hi_g = paired_gain_interval(b, a, level=level, resamples=resamples, seed=seed)
    problems = len(set(b) & set(a))
    return {
        "method": f"percentile bootstrap over problems ({resamples} resamples, paired for the gain)",
        "level": level,
        "problems": problems,
        "accuracy_before": [round(lo_b, 4), round(hi_b, 4)],
        "accuracy_after": [round(lo_a, 4), round(hi_a, 4)],
        "gain_points": [round(100 * lo_g, 2), round(100 * hi_g, 2)],
        "wide": problems < FEW_PROBLEMS,
    }
