"""Evaluation metrics over k graded samples per problem: mean pass@1, maj@k and unbiased pass@k.

All metrics are fractions in [0, 1] (tables show percentages). For one problem with n samples of
which c are correct:

- pass@1 (the paper's metric) = c / n, the mean correctness of the n samples;
- pass@k, unbiased (Chen et al., 2021) = 1 - C(n - c, k) / C(n, k); with k = n it is 1 if c > 0;
- maj@k = 1 if the most frequent extracted answer among the n samples is correct.

Benchmark scores are the unweighted means over problems; the cross-benchmark average is the
unweighted mean over benchmarks.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimate of P(at least one of k samples is correct) from n samples with c correct.

    1 - C(n-c, k) / C(n, k), computed as a stable product: prod_{i=n-c+1}^{n} (1 - k / i).
    """
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n; got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


_SPACE_RE = re.compile(r"\s+")
_TEXT_RE = re.compile(r"\\(?:text|textbf|mathrm|mbox)\{([^{}]*)\}")


def normalize_answer(pred: str) -> str:
    """Light string normalization used to group wrong answers for majority voting.

    Removes whitespace, ``$`` signs, ``\\left``/``\\right``, ``\\!``/``\\,``/``\\;`` spacing, ``\\text{..}``
    wrappers (keeping their content), ``dfrac``/``tfrac`` spellings and a trailing period.
    """
    s = _TEXT_RE.sub(r"\1", pred)
    for old, new in (
        ("\\left", ""),
        ("\\right", ""),
        ("\\!", ""),
        ("\\,", ""),
        ("\\;", ""),
        ("\\ ", ""),
        ("\\dfrac", "\\frac"),
        ("\\tfrac", "\\frac"),
        ("$", ""),
    ):
        s = s.replace(old, new)
    s = _SPACE_RE.sub("", s).rstrip(".")
    return s


def majority_correct(preds: Sequence[str | None], correct: Sequence[bool]) -> bool:
    """maj@k for one problem: is the most frequent extracted answer correct?

    Grouping: every correct sample is equivalent to the gold, hence to each other, so all correct
    samples form one group (equivalence via the grader); wrong answers are grouped by
    ``normalize_answer``. Samples with no extracted answer do not vote. The largest group wins; a tie
    goes to the group whose first member comes first in sample order (deterministic). No votes -> wrong.
    """
    if len(preds) != len(correct):
        raise ValueError("preds and correct must have the same length")
    counts: dict[str, int] = {}
    first: dict[str, int] = {}
    for i, (pred, ok) in enumerate(zip(preds, correct, strict=True)):
        if ok:
            key = "\x00correct"  # cannot collide with a normalized answer
        elif pred is None or not pred.strip():
            continue
        else:
            key = normalize_answer(pred)
        counts[key] = counts.get(key, 0) + 1
        first.setdefault(key, i)
    if not counts:
        return False
    winner = min(counts, key=lambda key: (-counts[key], first[key]))
    return winner == "\x00correct"


@dataclass(frozen=True)
class ProblemScore:
    """Per-problem metrics from its n samples."""

    n: int
    correct: int
    pass1: float
    pass_k: float
    maj: bool


def score_problem(preds: Sequence[str | None], correct: Sequence[bool], k: int | None = None) -> ProblemScore:
    """Metrics of one problem; ``k`` for pass@k defaults to the number of samples."""
    n = len(correct)
    if n == 0:
        raise ValueError("a problem needs at least one sample")
    c = sum(bool(x) for x in correct)
    return ProblemScore(n, c, c / n, pass_at_k(n, c, k or n), majority_correct(preds, correct))


def benchmark_metrics(scores: Sequence[ProblemScore]) -> dict[str, float | int]:
    """Mean over problems: ``n`` (problems), ``k`` (samples each), ``pass@1``, ``maj@k``, ``pass@k``."""
    if not scores:
        return {"n": 0, "k": 0, "pass@1": 0.0, "maj@k": 0.0, "pass@k": 0.0}
    m = len(scores)
    return {
        "n": m,
        "k": min(s.n for s in scores),
        "pass@1": sum(s.pass1 for s in scores) / m,
        "maj@k": sum(s.maj for s in scores) / m,
        "pass@k": sum(s.pass_k for s in scores) / m,
    }


METRICS = ("pass@1", "maj@k", "pass@k")


def average_metrics(per_benchmark: dict[str, dict[str, float | int]]) -> dict[str, float]:
    """Unweighted mean over benchmarks of each metric (a 30-problem AIME weighs as much as GSM8K)."""
    if not per_benchmark:
        return {m: 0.0 for m in METRICS}
    return {m: sum(float(b[m]) for b in per_benchmark.values()) / len(per_benchmark) for m in METRICS}
