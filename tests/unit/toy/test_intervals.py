"""The demo's 95% intervals (toy/intervals.py): hand-checked bootstrap cases."""

from __future__ import annotations

import pytest

from pasodoble.toy.intervals import bootstrap_interval, demo_intervals, paired_gain_interval, per_problem


def test_per_problem_scores_are_shares_of_right_samples():
    rows = [{"problem_id": "p1", "correct": c} for c in (True, True, True, False)]
    rows += [{"problem_id": "p2", "correct": False}] * 4
    assert per_problem(rows) == {"p1": 0.75, "p2": 0.0}


def test_bootstrap_of_two_problems_spans_both():
    # resampling 2 problems gives a mean of 0, 0.5 or 1 with chances 1/4, 1/2, 1/4: the 2.5th and
    # 97.5th percentiles of the resampled means are 0 and 1
    assert bootstrap_interval([0.0, 1.0]) == (0.0, 1.0)
    assert bootstrap_interval([0.75] * 7) == (0.75, 0.75)  # no spread, no interval


def test_bootstrap_matches_the_normal_interval_on_many_problems():
    # 100 problems, half always right: mean 0.5, standard error sqrt(0.25 / 100) = 0.05, so the 95%
    # interval is about 0.5 +- 1.96 * 0.05 = (0.402, 0.598)
    lo, hi = bootstrap_interval([1.0] * 50 + [0.0] * 50)
    assert lo == pytest.approx(0.402, abs=0.011) and hi == pytest.approx(0.598, abs=0.011)
    # deterministic from the seed
    assert bootstrap_interval([1.0] * 50 + [0.0] * 50) == (lo, hi)


def test_the_gain_interval_is_paired():
    before = {"a": 0.0, "b": 0.25, "c": 0.5, "d": 0.5}
    after = {"a": 0.5, "b": 0.75, "c": 1.0, "d": 1.0}
    # every problem gained exactly 0.5: the paired interval is that point, although each accuracy
    # alone spans a wide interval (the problems differ in difficulty)
    assert paired_gain_interval(before, after) == (0.5, 0.5)
    # before alone: a resampled mean is 0 with chance 1/256, 0.0625 with 4/256 (together 2.0% < 2.5%)
    # and 0.125 with 14/256, so the 2.5th percentile is 0.125; it is 0.5 (the maximum) with chance
    # 1/16 = 6.25% > 2.5%, so the 97.5th percentile is 0.5
    assert bootstrap_interval(list(before.values())) == (0.125, 0.5)
    with pytest.raises(ValueError, match="both"):
        paired_gain_interval({"a": 0.0}, {"b": 1.0})


def test_demo_intervals_from_graded_samples():
    before = [{"problem_id": f"p{i}", "correct": i % 2 == 0} for i in range(10)]
    after = [{"problem_id": f"p{i}", "correct": True} for i in range(10)]
    result = demo_intervals(before, after)
    assert result["problems"] == 10 and result["wide"]  # 10 problems: the report says it is wide
    assert result["accuracy_after"] == [1.0, 1.0]
    lo, hi = result["accuracy_before"]
    assert lo < 0.5 < hi
    # the gain is 1 - before on every problem, so its interval is 100 * (1 - the before interval)
    assert result["gain_points"] == [pytest.approx(100 * (1 - hi)), pytest.approx(100 * (1 - lo))]
