"""Proposer output -> ``Question | ParseFailure`` (method.md, Validity: the parsing rules).

A Proposer completion looks like::

    <think> ... private reasoning ... </think>
    <problem> a self-contained problem </problem>
    worked solution ... \\boxed{answer}

Rules:

- The thinking part ends at the last ``</think>``. If the text has ``<think>`` but no ``</think>``,
  the model never finished thinking: ``ParseFailure('unfinished_thinking')``; so too when the prompt
  itself opened the thinking section (``thinking_opened=True``, e.g. ``rollout.open_thinking`` or a
  chat template ending in ``<think>``: the completion then holds only the closing tag). With no think
  tags at all (and a prompt that did not open thinking) the whole text is searched.
- The problem is the content of the first ``<problem>...</problem>`` after the thinking part
  (stripped); none there: ``ParseFailure('no_problem')``.
- The answer is the last non-empty boxed expression after the thinking part and outside the problem:
  after ``</problem>`` first, else before ``<problem>``; none: ``ParseFailure('no_answer')``.

Everything is ``str.find``/``str.rfind`` plus the linear ``extract.last_boxed``: linear time on any
input, no backtracking regex, safe on untrusted model output.
"""

from __future__ import annotations

from pasodoble.extract import last_boxed
from pasodoble.types import NO_ANSWER, NO_PROBLEM, UNFINISHED_THINKING, ParseFailure, Question

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
PROBLEM_OPEN = "<problem>"
PROBLEM_CLOSE = "</problem>"


def after_thinking(text: str, *, thinking_opened: bool = False) -> str | ParseFailure:
    """The part of ``text`` after the thinking section (all of it when there are no think tags).

    ``thinking_opened``: the prompt ended inside an open ``<think>``, so a completion without
    ``</think>`` is unfinished thinking.
    """
    close = text.rfind(THINK_CLOSE)
    if close >= 0:
        return text[close + len(THINK_CLOSE) :]
    if thinking_opened or THINK_OPEN in text:
        return ParseFailure(UNFINISHED_THINKING)
    return text


def _answer(text: str) -> str | None:
    answer = last_boxed(text)
    return answer if answer else None  # an empty \boxed{} is no answer


def parse_proposal(text: str, *, thinking_opened: bool = False) -> Question | ParseFailure:
    """Parse one Proposer completion into its problem and boxed answer, or say why it cannot be.

    ``thinking_opened``: the prompt opened the thinking section (``prompts.opens_thinking(prompt)``).

    >>> parse_proposal("<think>hmm</think><problem>What is 2+3?</problem> 2+3=\\\\boxed{5}")
    Question(problem='What is 2+3?', answer='5')
    """
    body = after_thinking(text, thinking_opened=thinking_opened)
    if isinstance(body, ParseFailure):
        return body
    start = body.find(PROBLEM_OPEN)
    if start < 0:
        return ParseFailure(NO_PROBLEM)
    content_start = start + len(PROBLEM_OPEN)
    end = body.find(PROBLEM_CLOSE, content_start)
    if end < 0:
        return ParseFailure(NO_PROBLEM)
    problem = body[content_start:end].strip()
    answer = _answer(body[end + len(PROBLEM_CLOSE) :])
    if answer is None:
        answer = _answer(body[:start])
    if answer is None:
        return ParseFailure(NO_ANSWER)
    return Question(problem=problem, answer=answer)
