"""The pipeline's nouns: what flows between the stages of one dual-play step.

knowledge snippet -> Proposer completion -> ``Question | ParseFailure`` -> ``Validity`` -> rewards.

Parsing untrusted model output never returns a bare ``None``: it returns a ``ParseFailure`` whose
``reason`` is one of a small fixed set, so the mix of failures can be logged as a metric.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

# ParseFailure reasons (parse.py) and validity reasons (rewards.py): the keys of the failure metrics.
NO_PROBLEM = "no_problem"
NO_ANSWER = "no_answer"
UNFINISHED_THINKING = "unfinished_thinking"
EMPTY_PROBLEM = "empty_problem"
BOXED_IN_PROBLEM = "boxed_in_problem"
PROBLEM_IN_ANSWER = "problem_in_answer"
ANSWER_LEAKED = "answer_leaked"

PARSE_FAILURE_REASONS = (UNFINISHED_THINKING, NO_PROBLEM, NO_ANSWER)
INVALID_REASONS = PARSE_FAILURE_REASONS + (EMPTY_PROBLEM, BOXED_IN_PROBLEM, PROBLEM_IN_ANSWER, ANSWER_LEAKED)


@dataclass(frozen=True)
class Snippet:
    """One knowledge-base passage, already capped by tokens when it comes from ``KnowledgeBase.sample``.

    ``id`` is stable across runs (``file:line``, ``file:row`` or ``dataset#epoch.position``); the
    no-knowledge mode uses ``Snippet("none", "")``.
    """

    id: str
    text: str


@dataclass(frozen=True)
class Question:
    """A parsed Proposer output: the problem statement and the Proposer's (ground-truth) answer."""

    problem: str
    answer: str


@dataclass(frozen=True)
class ParseFailure:
    """A Proposer output that could not be parsed; ``reason`` is one of ``PARSE_FAILURE_REASONS``."""

    reason: str


class Validity(NamedTuple):
    """The verdict of ``rewards.question_validity``: unpacks as ``valid, reason``.

    ``reason`` is None for a valid question, else one of ``INVALID_REASONS``.
    """

    valid: bool
    reason: str | None
