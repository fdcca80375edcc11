"""Evaluation metrics with hand-computed values."""

from __future__ import annotations

import math

import pytest

from pasodoble.eval.metrics import (
    average_metrics,
    benchmark_metrics,
    majority_correct,
    normalize_answer,
    pass_at_k,
    score_problem,
)


def test_pass_at_k_hand_values():
    # n=6, c=2, k=1: 1 - C(4,1)/C(6,1) = 1 - 4/6 = 1/3 (= c/n: pass@1 is the mean)
    assert pass_at_k(6, 2, 1) == pytest.approx(1 / 3)
    # n=6, c=2, k=2: 1 - C(4,2)/C(6,2) = 1 - 6/15 = 0.6
    assert pass_at_k(6, 2, 2) == pytest.approx(0.6)
    # n=6, c=2, k=3: 1 - C(4,3)/C(6,3) = 1 - 4/20 = 0.8
    assert pass_at_k(6, 2, 3) == pytest.approx(0.8)
    # n=6, c=2, k=5: n - c = 4 < 5, some correct sample is always drawn
    assert pass_at_k(6, 2, 5) == 1.0
    # n=5, c=1, k=2: 1 - C(4,2)/C(5,2) = 1 - 6/10 = 0.4
    assert pass_at_k(5, 1, 2) == pytest.approx(0.4)
    # k = n: 1 if any sample is correct
    assert pass_at_k(4, 1, 4) == 1.0
    assert pass_at_k(4, 0, 4) == 0.0
    assert pass_at_k(4, 0, 1) == 0.0
    assert pass_at_k(4, 4, 1) == 1.0


def test_pass_at_k_matches_binomials():
    for n in range(1, 12):
        for c in range(n + 1):
            for k in range(1, n + 1):
                exact = 1.0 - math.comb(n - c, k) / math.comb(n, k)
                assert pass_at_k(n, c, k) == pytest.approx(exact, abs=1e-12)


def test_pass_at_k_rejects_bad_arguments():
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 1)
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 4)
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 0)


def test_majority_vote():
    # correct samples form one group (all equal to the gold): 2 correct vs "5" twice -> tie; the
    # correct group appears first (sample 0) and wins
    assert majority_correct(["4", "5", "4.0", "5"], [True, False, True, False]) is True
    # same counts, wrong group first -> wrong
    assert majority_correct(["5", "4", "5", "4.0"], [False, True, False, True]) is False
    # three differently spelled wrong answers that normalize equal beat two correct ones
    assert (
        majority_correct(["\\frac12", "\\frac{1}{2}", "$3$", "3 ", "3."], [True, True, False, False, False])
        is False
    )
    # missing answers do not vote: one correct vs nothing
    assert majority_correct([None, None, "7"], [False, False, True]) is True
    assert majority_correct([None, None], [False, False]) is False
    # all wrong and distinct -> wrong
    assert majority_correct(["1", "2", "3"], [False, False, False]) is False


def test_normalize_answer():
    assert normalize_answer("\\left( 3, \\frac{\\pi}{2} \\right)") == "(3,\\frac{\\pi}{2})"
    assert normalize_answer("$\\dfrac{1}{2}$.") == "\\frac{1}{2}"
    assert normalize_answer("10\\text{ cm}") == "10cm"


def test_problem_and_benchmark_scores():
    # problem A: 2 of 4 correct; problem B: 0 of 4; problem C: 4 of 4
    a = score_problem(["1", "1", "2", "3"], [True, True, False, False])
    b = score_problem(["9", "9", None, "8"], [False, False, False, False])
    c = score_problem(["x", "x", "x", "x"], [True, True, True, True])
    assert (a.pass1, a.pass_k, a.maj) == (0.5, 1.0, True)
    assert (b.pass1, b.pass_k, b.maj) == (0.0, 0.0, False)
    assert (c.pass1, c.pass_k, c.maj) == (1.0, 1.0, True)
    m = benchmark_metrics([a, b, c])
    assert m["n"] == 3 and m["k"] == 4
    assert m["pass@1"] == pytest.approx((0.5 + 0 + 1) / 3)  # 0.5
    assert m["maj@k"] == pytest.approx(2 / 3)
    assert m["pass@k"] == pytest.approx(2 / 3)
    # pass@2 of problem A: 1 - C(2,2)/C(4,2) = 1 - 1/6
    assert score_problem(["1"] * 4, [True, True, False, False], k=2).pass_k == pytest.approx(5 / 6)


def test_average_is_unweighted():
    per = {
        "aime24": {"n": 30, "k": 6, "pass@1": 0.1, "maj@k": 0.2, "pass@k": 0.3},
        "gsm8k": {"n": 1319, "k": 6, "pass@1": 0.7, "maj@k": 0.8, "pass@k": 0.9},
    }
    avg = average_metrics(per)
    assert avg["pass@1"] == pytest.approx(0.4)
    assert avg["maj@k"] == pytest.approx(0.5)
    assert avg["pass@k"] == pytest.approx(0.6)
