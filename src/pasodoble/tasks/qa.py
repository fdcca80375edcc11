"""Short-answer question answering over any text corpus (the paper's conclusion names factual QA).

The Proposer reads a snippet and writes a question and its short answer::

    <question> Who designed the first analytical engine? </question>
    <answer> Charles Babbage </answer>

The Solver answers, ending with a line ``Answer: <short answer>``. Grading is the usual normalized exact
match (lower case, punctuation and the articles a/an/the removed, whitespace collapsed; SQuAD's rule),
against one gold answer or any of a list (a gold written as a JSON list, e.g. ``["Babbage", "Charles
Babbage"]``); F1 over normalized tokens is the verdict's ``score`` (the best over the golds), reported by
``pasodoble eval``. Every parse is ``str.find``/``str.rfind`` and one pass over the text: linear time.

Validity (the same rule for the Proposer reward, the Solver filter and the buffer): the parse failed;
``empty_problem`` (no question text); ``no_answer`` (an answer that normalizes to nothing);
``problem_in_answer`` (the question occurs inside the answer); ``answer_leaked`` (the normalized answer is
a whole-token run of the normalized question).
"""

from __future__ import annotations

import json
import string
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pasodoble.parse import after_thinking
from pasodoble.types import (
    ANSWER_LEAKED,
    EMPTY_PROBLEM,
    NO_ANSWER,
    NO_PROBLEM,
    PROBLEM_IN_ANSWER,
    ParseFailure,
    Question,
    Validity,
)

QUESTION_OPEN, QUESTION_CLOSE = "<question>", "</question>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
ANSWER_LINE = "answer:"
MAX_ANSWER_CHARS = 300  # a longer "short answer" is not one (graded too_long, never compared by prefix)

PROPOSER_TEMPLATE = """\
You write quiz questions. Here is a passage to draw on:

<snippet>
{snippet}
</snippet>

Write one question that the passage answers with a short fact (a name, a number, a date, a place or a \
few words). The question must be self-contained and must not contain its answer.

Reply in this format:
<question> the question </question>
<answer> the short answer </answer>"""

PROPOSER_TEMPLATE_NO_KNOWLEDGE = """\
You write quiz questions. Write one factual question that has a short answer (a name, a number, a date, \
a place or a few words). The question must be self-contained and must not contain its answer.

Reply in this format:
<question> the question </question>
<answer> the short answer </answer>"""

SOLVER_TEMPLATE = """\
Answer the following question. Think briefly, then give the short answer on the last line as \
"Answer: <answer>".

{problem}"""

_PUNCT = set(string.punctuation)
_ARTICLES = {"a", "an", "the"}


def normalize_answer(text: str) -> str:
    """SQuAD's normalization: lower case, punctuation and articles removed, whitespace collapsed."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    return " ".join(w for w in text.split() if w not in _ARTICLES)


def token_f1(pred: str, gold: str) -> float:
    """F1 over normalized tokens (SQuAD's): 1.0 for two empty answers, 0.0 when only one is empty."""
    p, g = normalize_answer(pred).split(), normalize_answer(gold).split()
    if not p or not g:
        return float(p == g)
    common = sum((Counter(p) & Counter(g)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(g)
    return 2 * precision * recall / (precision + recall)


def gold_answers(gold: str) -> list[str]:
    """A gold answer, or the answers of a JSON list of strings (any of them counts)."""
    text = gold.strip()
    if text.startswith("["):
        try:
            value = json.loads(text)
        except ValueError:
            return [gold]
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            return value
    return [gold]


def _between(text: str, open_tag: str, close_tag: str, start: int = 0) -> tuple[str, int] | None:
    """The stripped content of the first ``open_tag ... close_tag`` at or after ``start``, and its end."""
    i = text.find(open_tag, start)
    if i < 0:
        return None
    j = text.find(close_tag, i + len(open_tag))
    if j < 0:
        return None
    return text[i + len(open_tag) : j].strip(), j + len(close_tag)


def extract_short_answer(response: str) -> str | None:
    """The text after the last ``Answer:`` (any case) on its line, after any thinking part; else the
    content of the last ``<answer>...</answer>``; None when there is neither or it is empty."""
    body = after_thinking(response)
    if isinstance(body, ParseFailure):
        return None
    low = body.lower()
    i = low.rfind(ANSWER_LINE)
    if i >= 0:
        end = body.find("\n", i)
        answer = body[i + len(ANSWER_LINE) : end if end >= 0 else len(body)].strip().strip("*").strip()
        return answer or None
    j = body.rfind(ANSWER_OPEN)
    if j >= 0:
        found = _between(body, ANSWER_OPEN, ANSWER_CLOSE, j)
        if found is not None and found[0]:
            return found[0]
    return None


def _leaked(question: str, answer: str) -> bool:
    """Whether the normalized answer is a whole-token run of the normalized question."""
    q, a = normalize_answer(question).split(), normalize_answer(answer).split()
    if not a or len(a) > len(q):
        return False
    return any(q[i : i + len(a)] == a for i in range(len(q) - len(a) + 1))


@dataclass
class QAVerdict:
    pred: str | None
    correct: bool
    reason: str | None
    score: float = 0.0  # token F1 against the best gold


class QAGrader:
    """Normalized exact match with F1 (no worker processes needed: every check is linear-time)."""

    def __init__(self, cfg: Any = None) -> None:
        self.cfg = cfg

    def grade_batch(
        self,
        responses: Sequence[str],
        golds: Sequence[str],
        *,
        extracted: bool = False,
        progress: bool = False,
        extract: str = "strict",
    ) -> list[QAVerdict]:
        if len(responses) != len(golds):
            raise ValueError(f"grade_batch: {len(responses)} responses but {len(golds)} gold answers")
        out = []
        for response, gold in zip(responses, golds, strict=True):
            pred = (str(response).strip() or None) if extracted else extract_short_answer(str(response))
            if pred is None:
                out.append(QAVerdict(None, False, "no_answer"))
                continue
            if len(pred) > MAX_ANSWER_CHARS:
                out.append(QAVerdict(pred[:MAX_ANSWER_CHARS], False, "too_long"))
                continue
            golds_i = gold_answers(str(gold))
            norm = normalize_answer(pred)
            correct = any(norm == normalize_answer(g) for g in golds_i)
            f1 = max(token_f1(pred, g) for g in golds_i)
            out.append(QAVerdict(pred, correct, None if correct else "mismatch", 1.0 if correct else f1))
        return out

    def grade(self, response: str, gold: str, **kwargs: Any) -> QAVerdict:
        return self.grade_batch([response], [gold], **kwargs)[0]

    def close(self) -> None:
        pass

    def __enter__(self) -> QAGrader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class QATask:
    name = "qa"
    proposer_template = PROPOSER_TEMPLATE
    proposer_template_no_knowledge = PROPOSER_TEMPLATE_NO_KNOWLEDGE
    solver_template = SOLVER_TEMPLATE

    def parse_proposal(self, text: str, *, thinking_opened: bool = False) -> Question | ParseFailure:
        body = after_thinking(text, thinking_opened=thinking_opened)
        if isinstance(body, ParseFailure):
            return body
        question = _between(body, QUESTION_OPEN, QUESTION_CLOSE)
        if question is None:
            return ParseFailure(NO_PROBLEM)
        answer = _between(body, ANSWER_OPEN, ANSWER_CLOSE, question[1])
        if answer is None or not answer[0]:
            return ParseFailure(NO_ANSWER)
        return Question(problem=question[0], answer=answer[0])

    def question_validity(self, question: Question | ParseFailure, *, leak_check: str = "token") -> Validity:
        if isinstance(question, ParseFailure):
            return Validity(False, question.reason)
        problem = question.problem.strip()
        if not problem:
            return Validity(False, EMPTY_PROBLEM)
        if not normalize_answer(question.answer) or len(question.answer) > MAX_ANSWER_CHARS:
            return Validity(False, NO_ANSWER)
        if problem in question.answer:
            return Validity(False, PROBLEM_IN_ANSWER)
        if leak_check != "off" and _leaked(problem, question.answer):
            return Validity(False, ANSWER_LEAKED)
        return Validity(True, None)

    def has_final_answer(self, text: str) -> bool:
        return extract_short_answer(text) is not None

    def make_grader(self, cfg: Any) -> QAGrader:
        return QAGrader(cfg)
