"""Validity (every rejection reason), pass rates, Solver and Proposer rewards, skip rules."""

from __future__ import annotations

import numpy as np
import pytest

from pasodoble.config import RewardsConfig
from pasodoble.rewards import (
    answer_leaked,
    has_final_answer,
    pass_rate,
    proposer_reward,
    proposer_rewards,
    question_validity,
    skip_step,
    solver_rewards,
    solver_trainable,
    validated_pass_rate,
)
from pasodoble.types import ParseFailure, Question, Validity

CFG = RewardsConfig()  # tau_low 0.2, tau_high 1.0, d_min 0.3, w_div 0.2, c 1.1


# --------------------------------------------------------------------------------------------------
# Validity


def test_valid_question():
    assert question_validity(Question("What is 17 + 25?", "42")) == Validity(True, None)
    valid, reason = question_validity(Question("What is 17 + 25?", "42"))
    assert valid and reason is None


@pytest.mark.parametrize("reason", ["no_problem", "no_answer", "unfinished_thinking"])
def test_parse_failure_reason_propagates(reason):
    assert question_validity(ParseFailure(reason)) == Validity(False, reason)


@pytest.mark.parametrize(
    "question, reason",
    [
        (Question("", "3"), "empty_problem"),
        (Question(" \n\t", "3"), "empty_problem"),
        (Question("Compute \\boxed{2+2}.", "4"), "boxed_in_problem"),
        (Question("What is 6*7?", "What is 6*7? It is 42"), "problem_in_answer"),
        (Question("Show that 12 + 30 = 42.", "42"), "answer_leaked"),
        (Question("Find x if $x^2+3 = 7$.", "2"), "answer_leaked"),
    ],
)
def test_each_rejection_reason(question, reason):
    assert question_validity(question) == Validity(False, reason)


@pytest.mark.parametrize(
    "problem, answer, token, substring",
    [
        ("x^2+3", "2", True, True),  # '^' and '+' delimit the token 2
        ("12 apples", "2", False, True),  # part of the number 12
        ("a 2.5 kg bag", "2", False, True),  # decimal point continues the number
        ("a 0.2 kg bag", "2", False, True),
        ("2.5", "5", False, True),
        ("let x2 = 1", "2", False, True),  # part of the identifier x2
        ("it is 2.", "2", True, True),  # sentence-final period is a boundary
        ("solve $x = -2$", "-2", True, True),
        ("Compute x + 1 for x = 3", "$x+1$", True, True),  # spaces and $ ignored
        ("pick 2 3 times", "23", False, False),  # '2 3' stays two tokens
        ("What is 3.14 * 2?", "3.14", True, True),
        ("What is 13.14 * 2?", "3.14", False, True),
        ("anything", "  $ $ ", False, False),  # empty answer never leaks
    ],
)
def test_leak_modes(problem, answer, token, substring):
    assert answer_leaked(problem, answer, "token") is token
    assert answer_leaked(problem, answer, "substring") is substring
    assert answer_leaked(problem, answer, "off") is False


def test_leak_check_option_changes_validity():
    q = Question("A box holds 12 eggs; how many in 2 boxes... of 1 egg?", "2")
    assert question_validity(q, leak_check="token") == Validity(False, "answer_leaked")
    q = Question("A box holds 12 eggs. How many dozens?", "1")
    assert question_validity(q, leak_check="token") == Validity(True, None)
    assert question_validity(q, leak_check="substring") == Validity(False, "answer_leaked")
    assert question_validity(Question("What is 1+1? (hint: 2)", "2"), leak_check="off").valid


def test_unknown_leak_mode_raises():
    with pytest.raises(ValueError, match="leak_check"):
        answer_leaked("x", "x", "fuzzy")


# --------------------------------------------------------------------------------------------------
# Pass rates and Solver rewards


def test_pass_rate_and_validation():
    assert pass_rate([True, False, True, False, False, False]) == pytest.approx(2 / 6)
    assert pass_rate([False] * 6) == 0.0
    assert validated_pass_rate(0.5, True) == 0.5
    assert validated_pass_rate(0.5, False) == 0.0
    with pytest.raises(ValueError):
        pass_rate([])


def test_solver_rewards_verify_and_random():
    assert solver_rewards([True, False, True]) == [1.0, 0.0, 1.0]
    a = solver_rewards([True] * 64, mode="random", rng=np.random.default_rng(3))
    b = solver_rewards([False] * 64, mode="random", rng=np.random.default_rng(3))
    assert a == b  # the coin ignores correctness and is reproducible from the rng
    assert set(a) == {0.0, 1.0}
    with pytest.raises(ValueError, match="rng"):
        solver_rewards([True], mode="random")


def test_solver_rewards_partial_random_flips_a_coin_only_for_boxed_answers():
    # np.random.default_rng(3).integers(0, 2, size=6) draws the coins 1, 0, 0, 0, 0, 1
    texts = [
        "12 + 5 = 17\nThe answer is \\boxed{17}.",  # boxed: its coin, 1
        "The answer is \\boxed{4}.",  # boxed: its coin, 0
        "The answer is 17.",  # no box: 0 (its coin 0 is drawn and dropped)
        "\\bo<ed{17}",  # a corrupted box is no box: 0
        "The answer is \\boxed{17}.",  # boxed: its coin, 0
        "12 + 5 = 17",  # no final answer: 0 although its coin is 1
    ]
    formatted = [has_final_answer(t) for t in texts]
    assert formatted == [True, True, False, False, True, False]
    rewards = solver_rewards(
        [True, False, True, True, False, True],
        mode="partial-random",
        rng=np.random.default_rng(3),
        formatted=formatted,
    )
    assert rewards == [1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    # the coins are those of the plain coin flip, and correctness is ignored
    assert solver_rewards([False] * 6, mode="random", rng=np.random.default_rng(3)) == [
        1.0,
        0.0,
        0.0,
        0.0,
        0.0,
        1.0,
    ]
    assert solver_rewards(
        [False] * 6, mode="partial-random", rng=np.random.default_rng(3), formatted=[True] * 6
    ) == [1.0, 0.0, 0.0, 0.0, 0.0, 1.0]
    with pytest.raises(ValueError, match="formatted"):
        solver_rewards([True, True], mode="partial-random", rng=np.random.default_rng(3))
    with pytest.raises(ValueError, match="rng"):
        solver_rewards([True], mode="partial-random", formatted=[True])


# --------------------------------------------------------------------------------------------------
# Proposer reward


def test_proposer_reward_hand_values():
    # p = 2/6, d = 1: 1.1 - 0.33333 + 0.2 * 1 = 0.96667
    assert proposer_reward(2 / 6, 1.0, CFG) == pytest.approx(0.966667, abs=1e-6)
    # always solved, d = 1: 1.1 - 1 + 0.2 = 0.3
    assert proposer_reward(1.0, 1.0, CFG) == pytest.approx(0.3)
    # p = 0.5, d = 0.5: 1.1 - 0.5 + 0.1 = 0.7
    assert proposer_reward(0.5, 0.5, CFG) == pytest.approx(0.7)
    # invalid (p~ = 0), and p~ exactly tau_low = 0.2 (<= is zero)
    assert proposer_reward(0.0, 1.0, CFG) == 0.0
    assert proposer_reward(0.2, 1.0, CFG) == 0.0
    # diversity gate: d = 0.3 <= d_min gives 0; just above does not
    assert proposer_reward(0.5, 0.3, CFG) == 0.0
    assert proposer_reward(0.5, 0.31, CFG) == pytest.approx(1.1 - 0.5 + 0.2 * 0.31)


def test_proposer_reward_uses_config():
    cfg = RewardsConfig(tau_low=0.0, diversity_min=0.0, difficulty_offset=2.0, diversity_weight=1.0)
    # 2.0 - 0.1 + 1.0 * 0.5 = 2.4
    assert proposer_reward(0.1, 0.5, cfg) == pytest.approx(2.4)
    assert proposer_rewards([0.1, 0.0], [0.5, 1.0], cfg) == pytest.approx([2.4, 0.0])
    with pytest.raises(ValueError):
        proposer_rewards([0.1], [0.5, 1.0], cfg)


# --------------------------------------------------------------------------------------------------
# Solver filter and skip rules


def test_solver_trainable_band():
    assert not solver_trainable(0.2, CFG)  # tau_low excluded
    assert solver_trainable(2 / 6, CFG)
    assert solver_trainable(5 / 6, CFG)
    assert not solver_trainable(1.0, CFG)  # tau_high excluded


def test_skip_no_trainable_question():
    # all solved or unsolvable/invalid: nothing for the Solver, even with nonzero Proposer advantages
    assert skip_step([1.0, 0.0, 1 / 6], [1.0, -0.5, -0.5], CFG) == "no_trainable_question"


def test_skip_zero_proposer_advantage():
    assert skip_step([0.5, 0.5], [0.0, 0.0], CFG) == "zero_proposer_advantage"
    assert skip_step([0.5, 0.5], [1e-12, -1e-12], CFG) == "zero_proposer_advantage"


def test_train_step():
    assert skip_step([0.5, 0.0], [0.9, -0.9], CFG) is None
