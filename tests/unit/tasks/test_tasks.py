"""The Task interface: math behind it unchanged, the QA task's parsing, validity and grading (hand-checked),
and plug-ins named by import path in the config."""

from __future__ import annotations

import pytest

from pasodoble.config import ConfigError, load_config
from pasodoble.parse import parse_proposal
from pasodoble.prompts import build_prompt, user_message
from pasodoble.rewards import question_validity
from pasodoble.tasks import Task, get_task
from pasodoble.tasks.qa import QAGrader, extract_short_answer, gold_answers, normalize_answer, token_f1
from pasodoble.types import ParseFailure, Question

TINY = "configs/tiny.yaml"


def test_the_math_task_is_the_functions_training_used_before():
    math = get_task("math")
    assert isinstance(math, Task) and math.name == "math"
    text = "<think>hmm</think><problem>What is 2+3?</problem> so \\boxed{5}"
    assert math.parse_proposal(text) == parse_proposal(text) == Question("What is 2+3?", "5")
    q = Question("What is 2+3?", "5")
    assert math.question_validity(q) == question_validity(q)
    assert user_message("solver", problem="P", task=math) == user_message("solver", problem="P")
    assert user_message("proposer", snippet="S", task=math) == user_message("proposer", snippet="S")
    assert math.has_final_answer("so \\boxed{4}") and not math.has_final_answer("so 4")


def test_qa_parses_a_question_and_its_short_answer():
    qa = get_task("qa")
    text = "<think>the passage says 1889</think>\n<question> When was the tower finished? </question>\n<answer> 1889 </answer>"
    assert qa.parse_proposal(text) == Question("When was the tower finished?", "1889")
    assert qa.parse_proposal("<question>Q?</question>") == ParseFailure("no_answer")
    assert qa.parse_proposal("<answer>x</answer><question>Q?</question>") == ParseFailure("no_answer")
    assert qa.parse_proposal("no tags at all") == ParseFailure("no_problem")
    assert qa.parse_proposal("<think>never closed") == ParseFailure("unfinished_thinking")
    assert qa.parse_proposal("<question>Q?</question><answer> </answer>") == ParseFailure("no_answer")


def test_qa_validity_rules():
    qa = get_task("qa")
    assert qa.question_validity(Question("Who built it?", "Gustave Eiffel")) == (True, None)
    assert qa.question_validity(Question("  ", "x")) == (False, "empty_problem")
    assert qa.question_validity(Question("Who?", "the ...")) == (False, "no_answer")  # normalizes to nothing
    assert qa.question_validity(Question("Who built it?", "Who built it? Eiffel")) == (
        False,
        "problem_in_answer",
    )
    # the normalized answer is a whole-token run of the question: leaked; a sub-word match is not
    assert qa.question_validity(Question("Did Gustave Eiffel build it?", "gustave eiffel")) == (
        False,
        "answer_leaked",
    )
    assert qa.question_validity(Question("In what year, 18xx, was it built?", "18")) == (True, None)
    assert qa.question_validity(Question("Did Eiffel build it?", "Eiffel"), leak_check="off") == (True, None)


def test_normalized_exact_match_and_f1_by_hand():
    assert normalize_answer("The  Eiffel-Tower!") == "eiffeltower"
    assert normalize_answer("an Apple, a day") == "apple day"
    # pred "Gustave Eiffel" vs gold "Eiffel": common 1 token; precision 1/2, recall 1/1 -> F1 = 2/3
    assert token_f1("Gustave Eiffel", "Eiffel") == pytest.approx(2 / 3)
    assert token_f1("Paris", "London") == 0.0 and token_f1("", "") == 1.0 and token_f1("x", "") == 0.0
    assert gold_answers('["Babbage", "Charles Babbage"]') == ["Babbage", "Charles Babbage"]
    assert gold_answers("[not json") == ["[not json"] and gold_answers("Paris") == ["Paris"]


def test_qa_grader_verdicts():
    grader = QAGrader()
    responses = [
        "Thinking... Answer: the Eiffel Tower.",
        "I think so.\nanswer: **Charles Babbage**\n",
        "Answer: Babbage, probably",
        "no final line",
        "<answer>Paris</answer>",
        "Answer: " + "x" * 400,
    ]
    golds = ["Eiffel Tower", '["Babbage", "Charles Babbage"]', "Babbage", "Paris", "paris", "x"]
    v = grader.grade_batch(responses, golds)
    assert [x.correct for x in v] == [True, True, False, False, True, False]
    assert [x.reason for x in v] == [None, None, "mismatch", "no_answer", None, "too_long"]
    assert v[0].pred == "the Eiffel Tower." and v[1].pred == "Charles Babbage"
    # "Babbage, probably" vs "Babbage": common 1; precision 1/2, recall 1 -> 2/3
    assert v[2].score == pytest.approx(2 / 3) and v[0].score == 1.0 and v[3].score == 0.0
    assert extract_short_answer("<think>Answer: no</think> Answer: yes") == "yes"


def test_qa_prompts_are_the_tasks_own():
    qa = get_task("qa")
    proposer = build_prompt("proposer", None, snippet="The tower was finished in 1889.", task=qa)
    assert "<question>" in proposer and "1889" in proposer and "\\boxed" not in proposer
    assert "Answer: <answer>" in build_prompt("solver", None, problem="When?", task=qa)
    assert "<question>" in user_message("proposer", snippet="", task=qa)  # no-knowledge template


def test_config_task_shorthand_and_plugins_fail_at_load_with_one_line():
    assert load_config(TINY, ["task=qa"]).task.name == "qa"
    with pytest.raises(ConfigError, match=r"task.name must be one of math, qa or a plug-in module:attr"):
        load_config(TINY, ["task=code"])
    with pytest.raises(ConfigError, match="cannot import module tests.no_such_module"):
        load_config(TINY, ["rewards.solver_reward=tests.no_such_module:fn"])
    with pytest.raises(ConfigError, match="tests.plugins has no attribute missing"):
        load_config(TINY, ["rewards.solver_reward=tests.plugins:missing"])
    with pytest.raises(ConfigError, match="not callable"):
        load_config(TINY, ["rewards.proposer_reward=tests.plugins:not_callable"])
    with pytest.raises(ConfigError, match=r"run.callbacks\[0\]"):
        load_config(TINY, ["run.callbacks=[tests.plugins:nope]"])
    with pytest.raises(ConfigError, match="calling it to build the task raised TypeError"):
        load_config(TINY, ["task.name=tests.plugins:my_reward"])
    with pytest.raises(ConfigError, match="does not give a Task"):
        load_config(TINY, ["task.name=tests.plugins:not_callable"])
    cfg = load_config(
        TINY, ["rewards.solver_reward=tests.plugins:my_reward", "run.callbacks=[tests.plugins:record_step]"]
    )
    assert cfg.rewards.solver_reward == "tests.plugins:my_reward"


def test_prompt_files_are_copied_into_the_config(tmp_path):
    f = tmp_path / "solver.txt"
    f.write_text("Solve it: {problem}\nBox the answer.", encoding="utf-8")
    cfg = load_config(TINY, [f"solver.prompt_file={f}"])
    assert cfg.solver.prompt == "Solve it: {problem}\nBox the answer." and cfg.solver.prompt_file is None
    with pytest.raises(ConfigError, match="solver.prompt_file=.*no such file"):
        load_config(TINY, [f"solver.prompt_file={tmp_path / 'missing.txt'}"])
    with pytest.raises(ConfigError, match="solver.prompt and solver.prompt_file are both set"):
        load_config(TINY, [f"solver.prompt_file={f}", "solver.prompt=X {problem}"])
    g = tmp_path / "bad.txt"
    g.write_text("no placeholder", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"\{problem\}"):
        load_config(TINY, [f"solver.prompt_file={g}"])
