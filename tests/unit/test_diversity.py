"""Diversity history: hand-computed Jaccard scores, earlier-steps-only history, eviction, resume."""

from __future__ import annotations

import json

import pytest

from pasodoble.config import RewardsConfig
from pasodoble.diversity import DiversityHistory, jaccard


def test_jaccard_values():
    # {1,2,3} vs {2,3,4}: intersection 2, union 4 -> 0.5
    assert jaccard(frozenset({1, 2, 3}), frozenset({2, 3, 4})) == 0.5
    assert jaccard(frozenset({1}), frozenset({1})) == 1.0
    assert jaccard(frozenset({1}), frozenset()) == 0.0
    assert jaccard(frozenset(), frozenset()) == 0.0  # defined as 0


def test_empty_history_scores_one():
    hist = DiversityHistory(max_size=100, threshold=0.8)
    assert hist.scores([[1, 2, 3], [1, 2, 3]]) == [1.0, 1.0]


def test_scores_hand_computed():
    hist = DiversityHistory(max_size=100, threshold=0.8)
    A = list(range(10))  # {0..9}
    B = list(range(1, 11))  # {1..10}: J(A,B) = 9/11 = 0.818 > 0.8
    C = list(range(100, 110))  # disjoint from A: J = 0
    D = list(range(2, 12))  # J(A,D) = 8/12 = 0.667 <= 0.8
    hist.add([A, C, D, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]])  # history: A, C, D, A
    # question B: near-duplicates of B among (A, C, D, A): A (0.818), D (J(B,D) = 9/11 = 0.818), A
    # -> 3 of 4 -> d = 1 - 3/4 = 0.25
    # question C: only C itself (1.0) -> d = 1 - 1/4 = 0.75
    # question {500}: none -> d = 1
    assert hist.scores([B, C, [500]]) == pytest.approx([0.25, 0.75, 1.0])


def test_threshold_is_strict():
    hist = DiversityHistory(max_size=10, threshold=0.5)
    hist.add([[1, 2, 3]])
    # {1,2,3} vs {2,3,4}: J = 0.5, not > 0.5 -> not a near-duplicate -> d = 1
    assert hist.scores([[2, 3, 4]]) == [1.0]


def test_scoring_does_not_add_and_add_evicts_oldest():
    hist = DiversityHistory(max_size=2, threshold=0.8)
    hist.scores([[1], [2]])
    assert len(hist) == 0
    hist.add([[1], [2], [3]])  # capacity 2: [1] is evicted
    assert len(hist) == 2
    # history {2}, {3}: question {1} -> 0 near -> 1.0; question {3} -> 1 of 2 -> 0.5
    assert hist.scores([[1], [3]]) == [1.0, 0.5]


def test_state_dict_round_trip_is_json():
    hist = DiversityHistory.from_config(RewardsConfig(diversity_history=3))
    hist.add([[3, 1, 2], [7], [8], [9]])
    state = json.loads(json.dumps(hist.state_dict()))
    assert state["history"] == [[7], [8], [9]]
    fresh = DiversityHistory.from_config(RewardsConfig(diversity_history=3))
    fresh.load_state_dict(state)
    probes = [[7], [8, 9], [1, 2, 3]]
    assert fresh.scores(probes) == hist.scores(probes)
    smaller = DiversityHistory(max_size=2)
    smaller.load_state_dict(state)  # keeps the most recent two
    assert smaller.state_dict()["history"] == [[8], [9]]


def test_invalid_construction():
    with pytest.raises(ValueError):
        DiversityHistory(max_size=0)
    with pytest.raises(ValueError):
        DiversityHistory(threshold=1.5)
