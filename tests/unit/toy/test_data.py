"""The toy world's deterministic data: the corpus / knowledge base and the cold-start SFT examples."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter

import pytest

from pasodoble.extract import last_boxed
from pasodoble.parse import parse_proposal
from pasodoble.prompts import PROPOSER, SOLVER, user_message
from pasodoble.rewards import question_validity
from pasodoble.sft.train import read_chat_jsonl
from pasodoble.toy.accuracy import answer_style, style_summary
from pasodoble.toy.cold_start import direct_answer, proposer_examples, solver_examples
from pasodoble.toy.corpus import KINDS, build_corpus, expression_of, worked_solution, write_jsonl
from pasodoble.toy.family import evaluate, parse_canonical, sample_problems

HELD_OUT = {r["problem"] for r in sample_problems(300, seed=11)}
N_CORPUS = 3000
N_EXAMPLES = 600


@pytest.fixture(scope="module")
def corpus():
    return build_corpus(N_CORPUS, seed=3, exclude=HELD_OUT)


@pytest.fixture(scope="module")
def proposer(corpus):
    return proposer_examples(corpus, N_EXAMPLES, seed=3, exclude=HELD_OUT)


@pytest.fixture(scope="module")
def solver():
    return solver_examples(N_EXAMPLES, seed=3, exclude=HELD_OUT)


_STEP = re.compile(r"^(.+) = (-?\d+)(?:, leaving (.+))?$")


def _step_values(text: str) -> list[tuple[str, int]]:
    """(left side, value) of every working line ``a op b = c[, leaving ...]`` of a text."""
    return [(m.group(1), int(m.group(2))) for line in text.split("\n") if (m := _STEP.match(line))]


def _mentioned_expressions(text: str) -> set[str]:
    """Every expression a text states a value for (its problems, step left sides and remainders)."""
    found = set(re.findall(r"What is (.+?)\?", text))
    for line in text.split("\n"):
        m = _STEP.match(line)
        if m:
            found.add(m.group(1))
            if m.group(3):
                found.add(m.group(3))
    return found


def _held_out_expressions() -> set[str]:
    return {parse_canonical(p).text() for p in HELD_OUT}


# --------------------------------------------------------------------------------------------------
# Working format


@pytest.mark.parametrize(
    "problem, lines",
    [
        (
            "What is (34 + 8) * 3 - 17?",
            ["34 + 8 = 42, leaving 42 * 3 - 17", "42 * 3 = 126, leaving 126 - 17", "126 - 17 = 109"],
        ),
        ("What is 12 - 5 * 7?", ["5 * 7 = 35, leaving 12 - 35", "12 - 35 = -23"]),
        ("What is 5 - (10 - 40)?", ["10 - 40 = -30, leaving 5 - (-30)", "5 - (-30) = 35"]),
        (
            "What is 7 - (20 - 50) * 3?",
            ["20 - 50 = -30, leaving 7 - (-30) * 3", "-30 * 3 = -90, leaving 7 - (-90)", "7 - (-90) = 97"],
        ),
        (
            "What is 99 * 9 * 2 - 0?",
            ["99 * 9 = 891, leaving 891 * 2 - 0", "891 * 2 = 1782, leaving 1782 - 0", "1782 - 0 = 1782"],
        ),
    ],
)
def test_worked_solution_format(problem, lines):
    expr = parse_canonical(problem)
    text = worked_solution(expr)
    value = evaluate(expr)
    assert text.split("\n") == [expr.text(), *lines, f"The answer is {value}."]
    assert worked_solution(expr, boxed=True).endswith(f"The answer is \\boxed{{{value}}}.")


def test_every_step_of_every_working_is_right(corpus):
    ops = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}
    for r in corpus:
        for left, value in _step_values(r["text"]):
            m = re.fullmatch(r"\(?(-?\d+)\)? ([-+*]) \(?(-?\d+)\)?", left)
            assert m, left
            assert ops[m.group(2)](int(m.group(1)), int(m.group(3))) == value, r["text"]


# --------------------------------------------------------------------------------------------------
# Corpus


def test_corpus_is_deterministic_and_seed_dependent(corpus):
    again = build_corpus(N_CORPUS, seed=3, exclude=HELD_OUT)
    assert again == corpus
    other = build_corpus(N_CORPUS, seed=4, exclude=HELD_OUT)
    assert [r["text"] for r in other] != [r["text"] for r in corpus]


def test_corpus_records(corpus):
    assert len(corpus) == N_CORPUS
    assert len({r["id"] for r in corpus}) == N_CORPUS
    assert len({r["text"] for r in corpus}) == N_CORPUS
    kinds = Counter(r["kind"] for r in corpus)
    assert set(kinds) == set(KINDS)
    assert all(count >= N_CORPUS // 20 for count in kinds.values()), kinds
    assert all(set(r) == {"id", "text", "kind"} and r["text"] == r["text"].strip() for r in corpus)


def test_worked_records_end_with_the_true_value(corpus):
    worked = [r for r in corpus if r["kind"] == "worked"]
    assert worked
    for r in worked:
        expr = expression_of(r["text"])
        assert expr is not None, r["text"]
        last = r["text"].rsplit("\n", 1)[-1]
        assert last == f"The answer is {evaluate(expr)}."
        assert _step_values(r["text"])[-1][1] == evaluate(expr)


def test_held_out_problems_never_appear_in_the_corpus(corpus):
    held = _held_out_expressions()
    for r in corpus:
        assert r["text"] not in HELD_OUT
        assert not _mentioned_expressions(r["text"]) & held, r["text"]
        assert not any(p in r["text"] for p in HELD_OUT)


def test_exclusion_removes_exactly_what_would_have_appeared():
    free = build_corpus(1500, seed=5, exclude=set())
    worked = [r["text"].split("\n", 1)[0] for r in free if r["kind"] == "worked"][:40]
    facts = [
        r["text"] for r in free if r["kind"] == "fact" and re.fullmatch(r"\d+ [-+*] \d+ = -?\d+\.", r["text"])
    ]
    fact_problems = [f"What is {t.split(' = ')[0]}?" for t in facts[:20]]
    fact_problems = [p for p in fact_problems if parse_canonical(p)]  # 0-99 operands only
    exclude = set(worked) | set(fact_problems)
    assert worked and fact_problems
    guarded = build_corpus(1500, seed=5, exclude=exclude)
    assert len(guarded) == 1500
    exprs = {parse_canonical(p).text() for p in exclude}
    for r in guarded:
        assert not _mentioned_expressions(r["text"]) & exprs, r["text"]
        assert not any(re.search(rf"(?<![\d-]){re.escape(e)} = ", r["text"]) for e in exprs), r["text"]


def test_knowledge_base_reads_the_corpus(tmp_path, corpus):
    from pasodoble.knowledge import read_local

    path = write_jsonl(corpus[:50], tmp_path / "kb" / "corpus.jsonl")
    snippets = read_local(path, "text")
    assert [s.text for s in snippets] == [r["text"] for r in corpus[:50]]


# --------------------------------------------------------------------------------------------------
# Cold start


def test_cold_start_is_deterministic(corpus, proposer, solver):
    assert proposer_examples(corpus, N_EXAMPLES, seed=3, exclude=HELD_OUT) == proposer
    assert solver_examples(N_EXAMPLES, seed=3, exclude=HELD_OUT) == solver
    assert solver_examples(N_EXAMPLES, seed=4, exclude=HELD_OUT) != solver


def test_proposer_examples_parse_valid_canonical_and_true(corpus, proposer):
    snippets = {r["text"] for r in corpus if r["kind"] == "worked"}
    problems = set()
    for ex in proposer:
        user, assistant = (m["content"] for m in ex["messages"])
        assert [m["role"] for m in ex["messages"]] == ["user", "assistant"]
        snippet = user.split("<snippet>\n", 1)[1].split("\n</snippet>", 1)[0]
        assert snippet in snippets
        assert user == user_message(PROPOSER, snippet=snippet)
        assert assistant.startswith("<think>\n")
        question = parse_proposal(assistant)
        assert question_validity(question).valid, assistant
        expr = parse_canonical(question.problem)
        assert expr is not None, question.problem
        assert question.answer == str(evaluate(expr))
        assert expr != expression_of(snippet)  # a new problem, not the snippet's
        assert question.problem not in HELD_OUT
        problems.add(question.problem)
    assert len(problems) == len(proposer) == N_EXAMPLES


def test_proposer_changes_are_varied(proposer):
    notes = Counter()
    for ex in proposer:
        thinking = ex["messages"][1]["content"].split("</think>")[0]
        notes[
            "number"
            if "number from" in thinking
            else "operation"
            if "operation from" in thinking
            else "add"
            if "add one more" in thinking
            else "?"
        ] += 1
    assert set(notes) == {"number", "operation", "add"}, notes


def test_solver_examples_box_the_true_value(solver):
    problems = set()
    for ex in solver:
        user, assistant = (m["content"] for m in ex["messages"])
        problem = user.rsplit("\n", 1)[-1]
        assert user == user_message(SOLVER, problem=problem)
        expr = parse_canonical(problem)
        assert expr is not None
        assert last_boxed(assistant) == str(evaluate(expr))
        assert assistant == worked_solution(expr, boxed=True)
        problems.add(problem)
    assert len(problems) == N_EXAMPLES


def test_solver_mix_answers_a_share_directly_on_the_same_problems(solver):
    mixed = solver_examples(N_EXAMPLES, seed=3, exclude=HELD_OUT, direct_share=0.5)
    assert mixed == solver_examples(N_EXAMPLES, seed=3, exclude=HELD_OUT, direct_share=0.5)
    # the problems are those of the all-worked data; only some answers change
    assert [ex["messages"][0] for ex in mixed] == [ex["messages"][0] for ex in solver]
    direct = 0
    for ex, worked in zip(mixed, solver, strict=True):
        answer = ex["messages"][1]["content"]
        if answer == worked["messages"][1]["content"]:
            continue
        expr = parse_canonical(ex["messages"][0]["content"].rsplit("\n", 1)[-1])
        assert answer == direct_answer(expr) == f"The answer is \\boxed{{{evaluate(expr)}}}."
        direct += 1
    # the style generator (its own string seed) draws 290 values below 0.5 in 600 (binomial sd 12)
    assert direct == 290
    assert mixed[0]["messages"][1]["content"] == "The answer is \\boxed{285}."
    everything = solver_examples(50, seed=3, exclude=HELD_OUT, direct_share=1.0)
    assert all(ex["messages"][1]["content"].startswith("The answer is \\boxed{") for ex in everything)
    with pytest.raises(ValueError, match="direct_share must be in"):
        solver_examples(5, seed=3, exclude=HELD_OUT, direct_share=1.5)


def test_solver_mix_can_keep_direct_answers_to_large_problems(solver):
    mixed = solver_examples(N_EXAMPLES, seed=3, exclude=HELD_OUT, direct_share=0.5)
    large = solver_examples(N_EXAMPLES, seed=3, exclude=HELD_OUT, direct_share=0.5, direct_min_operands=3)
    # same problems; the direct answers are those of the plain mix on 3-4 operands, none on 2
    assert [ex["messages"][0] for ex in large] == [ex["messages"][0] for ex in solver]
    counts = {2: [0, 0], 3: [0, 0], 4: [0, 0]}  # operands -> [direct in the plain mix, direct here]
    for ex, plain in zip(large, mixed, strict=True):
        expr = parse_canonical(ex["messages"][0]["content"].rsplit("\n", 1)[-1])
        direct = ex["messages"][1]["content"] == direct_answer(expr)
        plain_direct = plain["messages"][1]["content"] == direct_answer(expr)
        assert direct == (plain_direct and len(expr.operands) >= 3)
        counts[len(expr.operands)][0] += plain_direct
        counts[len(expr.operands)][1] += direct
    # 218 / 198 / 184 problems with 2 / 3 / 4 operands; the plain mix answers 108 / 109 / 73 directly
    assert counts == {2: [108, 0], 3: [109, 109], 4: [73, 73]}
    with pytest.raises(ValueError, match="direct_min_operands"):
        solver_examples(5, seed=3, exclude=HELD_OUT, direct_share=0.5, direct_min_operands=1)


def test_answer_styles_and_their_summary():
    expr = parse_canonical("What is 7 - (20 - 50) * 3?")
    worked, direct = worked_solution(expr, boxed=True), direct_answer(expr)
    assert direct == "The answer is \\boxed{97}."
    assert answer_style(worked) == "worked" and answer_style(direct) == "direct"
    wrong_working = worked.replace("= -90", "= -80").replace("{97}", "{87}")
    assert answer_style(wrong_working) == "worked"  # a style, right or wrong
    assert answer_style("\\boxed{97}") == "other" and answer_style("") == "other"
    assert answer_style("7 - (20 - 50) * 3\nThe answer is \\boxed{97}.") == "direct"  # no working line
    # 3 worked (2 right), 2 direct (0 right), 1 other (right): 3/6 right, half the answers worked
    summary = style_summary(
        [(worked, True), (worked, True), (wrong_working, False), (direct, False), (direct, False)]
        + [("\\boxed{97}", True)]
    )
    assert summary["accuracy"] == 0.5 and summary["worked_share"] == 0.5
    assert summary["worked_accuracy"] == pytest.approx(2 / 3) and summary["direct_accuracy"] == 0.0
    assert (summary["worked_count"], summary["direct_count"], summary["other_count"]) == (3, 2, 1)
    assert style_summary([(worked, True)])["direct_accuracy"] is None
    with pytest.raises(ValueError, match="at least one sample"):
        style_summary([])


def test_report_story_names_what_rewarded_the_solver():
    """The report's paragraph: dual-play credits the Proposer's answers, the true-answer diagnosis says
    it used true labels (it once read "nobody gave it a right answer"), the coin flip says it drifts."""
    from pasodoble.toy.report import report_markdown, story

    base = {
        "accuracy_before": 0.33,
        "accuracy_after": 0.72,
        "gain_points": 39.0,
        "worked_share_before": 0.45,
        "worked_share_after": 0.955,
        "worked_accuracy_before": 0.727,
        "direct_accuracy_before": 0.004,
        "steps": 20,
        "ablation": None,
    }
    dual = story(base)
    assert "nobody gave it a right answer" in dual and "agree with those" in dual
    assert "works out 95.5% of its answers" in dual and "from 33.0% to 72.0% (+39.0 points)" in dual
    truth = story({**base, "true_answers": True})
    assert "nobody gave it" not in truth and "true answer" in truth and "Worked answers are right" in truth
    coin = story({**base, "ablation": "random-reward", "worked_share_after": 0.31, "gain_points": -10.6})
    assert "coin flip" in coin and "drifted at random" in coin and "(-10.6 points)" in coin
    point = {"step": 0, "evaluated_on": "all", "problems": 500, "samples_per_problem": 4, "accuracy": 0.33}
    point.update(worked_share=0.45, worked_accuracy=0.727, direct_accuracy=0.004)
    rest = {"worked_accuracy_after": 0.75, "direct_accuracy_after": 0.0, "valid_question_rate": 0.97}
    rest.update(mean_pass_rate=0.56, steps_trained=20, wall_time_s=292.0, train_time_s=170.0, seed=0)
    title = report_markdown({**base, **rest, "true_answers": True, "curve": [point]}).splitlines()[0]
    assert title == "# PasoDoble demo: true-answer labels (diagnosis), seed 0"


def test_held_out_problems_never_appear_in_cold_start(proposer, solver):
    held = _held_out_expressions()
    for ex in [*proposer, *solver]:
        for m in ex["messages"]:
            assert not _mentioned_expressions(m["content"]) & held, m["content"]


def test_cold_start_files_read_as_sft_data(tmp_path, proposer, solver):
    for name, examples in (("proposer", proposer), ("solver", solver)):
        path = write_jsonl(examples, tmp_path / f"{name}.jsonl")
        assert read_chat_jsonl(path) == [ex["messages"] for ex in examples]
        assert json.loads(path.read_text().split("\n", 1)[0]) == examples[0]


def test_proposer_examples_need_worked_snippets():
    with pytest.raises(ValueError, match="worked snippets"):
        proposer_examples(["7 times 8 is 56."], 3, seed=0, exclude=set())


# --------------------------------------------------------------------------------------------------
# No generator answer reaches the RL stage


def test_dual_play_code_path_does_not_import_the_toy_generator():
    code = (
        "import sys, json\n"
        "import pasodoble.dual_play, pasodoble.train\n"
        "print(json.dumps(sorted(m for m in sys.modules if m == 'pasodoble.toy' or m.startswith('pasodoble.toy.'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
