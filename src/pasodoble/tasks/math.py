"""The paper's task: math problems with a boxed final answer, graded by math-verify (``verify.Grader``).

Every piece is the function the project used before tasks existed (``parse.parse_proposal``,
``rewards.question_validity``, ``rewards.has_final_answer``, ``prompts``' templates, ``verify.Grader``),
so ``task.name: math`` trains bitwise as before.
"""

from __future__ import annotations

from typing import Any

from pasodoble import prompts
from pasodoble.parse import parse_proposal
from pasodoble.rewards import has_final_answer, question_validity
from pasodoble.types import ParseFailure, Question, Validity


class MathTask:
    name = "math"
    proposer_template = prompts.PROPOSER_TEMPLATE
    proposer_template_no_knowledge = prompts.PROPOSER_TEMPLATE_NO_KNOWLEDGE
    solver_template = prompts.SOLVER_TEMPLATE

    def parse_proposal(self, text: str, *, thinking_opened: bool = False) -> Question | ParseFailure:
        return parse_proposal(text, thinking_opened=thinking_opened)

    def question_validity(self, question: Question | ParseFailure, *, leak_check: str = "token") -> Validity:
        return question_validity(question, leak_check=leak_check)

    def has_final_answer(self, text: str) -> bool:
        return has_final_answer(text)

    def make_grader(self, cfg: Any):
        from pasodoble.verify import Grader

        return Grader(cfg)
