"""parse_proposal: problem after the thinking part, last boxed answer outside the problem."""

from __future__ import annotations

import time

import pytest

from pasodoble.parse import parse_proposal
from pasodoble.types import ParseFailure, Question


def test_full_proposal():
    text = (
        "<think>Let me use the snippet about sums. <problem>draft</problem> \\boxed{0}</think>\n"
        "<problem> What is 17 + 25? </problem>\nWe add: 17 + 25 = 42, so \\boxed{41} no wait \\boxed{42}."
    )
    assert parse_proposal(text) == Question(problem="What is 17 + 25?", answer="42")


def test_no_think_tags_searches_whole_text():
    assert parse_proposal("<problem>Find 3*4.</problem> It is \\boxed{12}") == Question("Find 3*4.", "12")


def test_unfinished_thinking():
    assert parse_proposal("<think>I will write <problem>x</problem> \\boxed{1}") == ParseFailure(
        "unfinished_thinking"
    )


def test_thinking_opened_by_the_prompt():
    # the prompt ended with "<think>\n": the completion holds only the closing tag
    text = "plan...</think><problem>What is 2*5?</problem> \\boxed{10}"
    assert parse_proposal(text, thinking_opened=True) == Question("What is 2*5?", "10")
    unfinished = "plan... <problem>What is 2*5?</problem> \\boxed{10}"
    assert parse_proposal(unfinished, thinking_opened=True) == ParseFailure("unfinished_thinking")
    assert parse_proposal(unfinished) == Question("What is 2*5?", "10")


def test_problem_only_inside_thinking_is_missing():
    assert parse_proposal("<think><problem>What is 1+1?</problem></think> \\boxed{2}") == ParseFailure(
        "no_problem"
    )


def test_unclosed_problem():
    assert parse_proposal("<problem>What is 1+1? \\boxed{2}") == ParseFailure("no_problem")


@pytest.mark.parametrize(
    "text",
    [
        "<problem>What is 1+1?</problem> the answer is 2",
        "<problem>What is 1+1?</problem> \\boxed{}",
        "<think>\\boxed{2}</think><problem>What is 1+1?</problem>",
    ],
)
def test_no_answer(text):
    assert parse_proposal(text) == ParseFailure("no_answer")


def test_box_inside_problem_is_not_the_answer():
    # the only box is inside the problem: no answer outside it
    assert parse_proposal("<problem>Compute \\boxed{2}</problem>") == ParseFailure("no_answer")
    # with an answer after it, the problem keeps its box (question_validity rejects it later)
    q = parse_proposal("<problem>Compute \\boxed{2}</problem> \\boxed{3}")
    assert q == Question("Compute \\boxed{2}", "3")


def test_answer_before_problem_used_when_none_after():
    assert parse_proposal("\\boxed{7}\n<problem>What is 3+4?</problem>") == Question("What is 3+4?", "7")


def test_empty_problem_is_parsed_and_left_to_validity():
    assert parse_proposal("<problem>  </problem> \\boxed{1}") == Question("", "1")


def test_linear_time_on_adversarial_input():
    n = 200_000
    texts = [
        "<think>" * n,
        "<problem>" * n + "\\boxed{" * n,
        "</think>" * n + "<problem>" + "{" * n + "</problem>" + "\\boxed{" * n,
        "\\boxed{" + "{" * n + "}" * (n - 1),
    ]
    start = time.perf_counter()
    for text in texts:
        assert isinstance(parse_proposal(text), (Question, ParseFailure))
    assert time.perf_counter() - start < 2.0
