"""Rewards of both roles and the one question-validity test (method.md, Rewards; Online training).

- ``question_validity``: the single validity test used by the Proposer reward, the Solver filter
  and the offline buffer admission (the reference code applied it inconsistently).
- ``pass_rate`` / ``validated_pass_rate``: p_i and p̃_i.
- ``solver_rewards``: r_ij in {0, 1} from the grader's verdicts (or a coin flip for the ablations:
  ``random``, and ``partial-random``, a coin only for answers with a boxed final answer).
- ``proposer_reward``: r_i = 0 if p̃ <= tau_low; else 0 if d <= d_min; else c - p̃ + w_div * d.
- ``solver_trainable`` and ``skip_step``: which questions train the Solver and when a step is skipped.

All functions are pure; constants come from ``RewardsConfig``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pasodoble.config import RewardsConfig
from pasodoble.types import (
    ANSWER_LEAKED,
    BOXED_IN_PROBLEM,
    EMPTY_PROBLEM,
    PROBLEM_IN_ANSWER,
    ParseFailure,
    Question,
    Validity,
)

# skip_step reasons (the keys of the skip metrics)
NO_TRAINABLE_QUESTION = "no_trainable_question"
ZERO_PROPOSER_ADVANTAGE = "zero_proposer_advantage"


# --------------------------------------------------------------------------------------------------
# Validity


def _squeeze(text: str) -> str:
    """Canonical spacing for the leak test: drop ``$``, collapse whitespace runs, and drop the spaces
    next to a non-alphanumeric character, so ``"x + 1"`` and ``"x+1"`` compare equal while ``"2 3"``
    stays two tokens. One linear pass."""
    out: list[str] = []
    pending_space = False
    for ch in text:
        if ch == "$":
            continue
        if ch.isspace():
            pending_space = bool(out)
            continue
        if pending_space and ch.isalnum() and out[-1].isalnum():
            out.append(" ")
        pending_space = False
        out.append(ch)
    return "".join(out)


def _is_boundary(text: str, i: int, step: int, edge: str) -> bool:
    """Whether position ``i`` of ``text`` (a neighbour of a match) ends the matched token.

    Outside the text and any non-alphanumeric character are boundaries, except a decimal point that
    continues a number: when the answer's edge character ``edge`` is a digit, a ``.`` followed (in the
    direction ``step``) by a digit is part of the same number, so ``2`` is not a token of ``2.5``.
    """
    if i < 0 or i >= len(text):
        return True
    ch = text[i]
    if ch.isalnum():
        return False
    if ch == "." and edge.isdigit():
        j = i + step
        if 0 <= j < len(text) and text[j].isdigit():
            return False
    return True


def answer_leaked(problem: str, answer: str, mode: str = "token") -> bool:
    """Whether the answer is given away by the problem text.

    Both texts are compared with ``$`` removed and spacing canonicalized (``_squeeze``).

    - ``token`` (default): the answer occurs as a whole token: each end of the occurrence that is
      alphanumeric must meet a non-alphanumeric neighbour (or the text's end), and a decimal point
      inside a number does not split it. So answer ``2`` leaks in ``x^2+3`` and ``2 apples`` but not
      in ``12``, ``2.5``, ``0.2`` or ``x2``; answer ``-2`` leaks in ``x = -2``.
    - ``substring``: the reference behaviour, any occurrence (answer ``2`` leaks in ``12``).
    - ``off``: never leaked.
    An answer that is empty after normalization never leaks.
    """
    if mode == "off":
        return False
    needle = _squeeze(answer)
    if not needle:
        return False
    hay = _squeeze(problem)
    if mode == "substring":
        return needle in hay
    if mode != "token":
        raise ValueError(f"leak_check must be token, substring or off; got {mode!r}")
    first, last = needle[0], needle[-1]
    start = hay.find(needle)
    while start >= 0:
        end = start + len(needle)
        left_ok = not first.isalnum() or _is_boundary(hay, start - 1, -1, first)
        right_ok = not last.isalnum() or _is_boundary(hay, end, 1, last)
        if left_ok and right_ok:
            return True
        start = hay.find(needle, start + 1)
    return False


def question_validity(question: Question | ParseFailure, *, leak_check: str = "token") -> Validity:
    """The one validity test (method.md, Validity). Returns ``Validity(valid, reason)``.

    Checked in this order, the first failing rule giving the reason: the parse failed (its reason:
    ``unfinished_thinking``, ``no_problem``, ``no_answer``); ``empty_problem`` (only whitespace);
    ``boxed_in_problem`` (the problem contains ``\\boxed``); ``problem_in_answer`` (the stripped
    problem text occurs inside the answer); ``answer_leaked`` (``answer_leaked(problem, answer,
    leak_check)``).
    """
    if isinstance(question, ParseFailure):
        return Validity(False, question.reason)
    problem = question.problem.strip()
    if not problem:
        return Validity(False, EMPTY_PROBLEM)
    if "\\boxed" in problem:
        return Validity(False, BOXED_IN_PROBLEM)
    if problem in question.answer:
        return Validity(False, PROBLEM_IN_ANSWER)
    if answer_leaked(problem, question.answer, leak_check):
        return Validity(False, ANSWER_LEAKED)
    return Validity(True, None)


# --------------------------------------------------------------------------------------------------
# Pass rates and Solver rewards


def pass_rate(correct: Sequence[bool]) -> float:
    """p_i: the share of the Solver's attempts judged correct. Raises on an empty list (a bug upstream)."""
    if len(correct) == 0:
        raise ValueError("pass_rate needs at least one attempt")
    return sum(1 for c in correct if c) / len(correct)


def validated_pass_rate(p: float, valid: bool) -> float:
    """p̃_i: the pass rate of a valid question, 0 for an invalid one."""
    return float(p) if valid else 0.0


def has_final_answer(text: str) -> bool:
    """Whether a response is in the right format for ``partial-random``: it has a boxed final answer
    (a balanced ``\\boxed{...}``, ``extract.last_boxed``)."""
    from pasodoble.extract import last_boxed

    return last_boxed(text) is not None


def solver_rewards(
    correct: Sequence[bool],
    mode: str = "verify",
    rng: np.random.Generator | None = None,
    formatted: Sequence[bool] | None = None,
) -> list[float]:
    """r_ij for the M attempts at one question.

    ``verify``: 1.0 for an attempt whose answer matched the Proposer's, else 0.0 (no partial credit,
    no format bonus; a missing answer or a grading error arrives here as False).
    ``random``: the random-reward ablation, an independent fair coin per attempt drawn from ``rng``.
    ``partial-random``: the paper's second control, a fair coin for an attempt in the right format
    (``formatted``: it has a boxed final answer, ``has_final_answer``) and 0.0 for any other; the coins
    are the ones ``random`` would draw from the same ``rng``.
    """
    if mode == "verify":
        return [1.0 if c else 0.0 for c in correct]
    if mode in ("random", "partial-random"):
        if rng is None:
            raise ValueError(f"solver_rewards(mode={mode!r}) needs a numpy Generator rng")
        coins = [float(x) for x in rng.integers(0, 2, size=len(correct))]
        if mode == "random":
            return coins
        if formatted is None or len(formatted) != len(correct):
            raise ValueError("solver_rewards(mode='partial-random') needs one formatted flag per attempt")
        return [c if f else 0.0 for c, f in zip(coins, formatted, strict=True)]
    raise ValueError(f"solver reward mode must be verify, random or partial-random; got {mode!r}")


# --------------------------------------------------------------------------------------------------
# Proposer reward and step filters


def proposer_reward(p_tilde: float, d: float, cfg: RewardsConfig) -> float:
    """r_i = 0 if p̃ <= tau_low; else 0 if d <= d_min; else c - p̃ + w_div * d.

    With the defaults (tau_low 0.2, d_min 0.3, c 1.1, w_div 0.2): p̃ = 2/6, d = 1 gives
    1.1 - 0.3333 + 0.2 = 0.9667; p̃ = 1, d = 1 gives 0.3; an invalid question (p̃ = 0) gives 0.
    """
    if p_tilde <= cfg.tau_low:
        return 0.0
    if d <= cfg.diversity_min:
        return 0.0
    return cfg.difficulty_offset - p_tilde + cfg.diversity_weight * d


def proposer_rewards(
    p_tildes: Sequence[float], diversities: Sequence[float], cfg: RewardsConfig
) -> list[float]:
    """``proposer_reward`` for the N questions of one step."""
    if len(p_tildes) != len(diversities):
        raise ValueError(f"{len(p_tildes)} pass rates but {len(diversities)} diversity scores")
    return [proposer_reward(p, d, cfg) for p, d in zip(p_tildes, diversities, strict=True)]


def solver_trainable(p_tilde: float, cfg: RewardsConfig) -> bool:
    """Whether the Solver trains on this question: tau_low < p̃ < tau_high (neither hopeless nor solved)."""
    return cfg.tau_low < p_tilde < cfg.tau_high


def skip_step(
    p_tildes: Sequence[float],
    proposer_advantages: Sequence[float],
    cfg: RewardsConfig,
    *,
    atol: float = 1e-8,
) -> str | None:
    """Why the step must be skipped (neither model trains), or None to train.

    ``no_trainable_question``: no question has tau_low < p̃ < tau_high (the Solver has nothing to
    learn). ``zero_proposer_advantage``: every Proposer advantage is 0 (|A| <= ``atol``, which absorbs
    the rounding of a group mean of equal rewards), so the Proposer gradient would be zero.
    """
    if not any(solver_trainable(p, cfg) for p in p_tildes):
        return NO_TRAINABLE_QUESTION
    if all(abs(a) <= atol for a in proposer_advantages):
        return ZERO_PROPOSER_ADVANTAGE
    return None
