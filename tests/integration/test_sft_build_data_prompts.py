"""`pasodoble sft build-data` with the prompts of a training config (issue 24, item 5).

The teacher is the shipped toy Proposer (``assets/toy/proposer_cold_start``, a local model trained on
configs/toy.yaml's prompts) and the checker the toy Solver. With the toy config's prompts its answers
are in the Proposer format and problems are kept; with the built-in prompts (which it was never trained
on) most answers are not, and the command exits non-zero with a one-line reason histogram.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pasodoble.cli import main
from pasodoble.errors import UserError
from pasodoble.parse import parse_proposal
from pasodoble.sft.build_data import BuildDataConfig, check_kept, resolve

ROOT = Path(__file__).resolve().parents[2]
# relative to the repository root (the tests chdir there): the model name is part of every request id,
# hence of the sampling seeds, so the samples are the same wherever the repository is checked out
TOY = "src/pasodoble/assets/toy"
TOY_CONFIG = "configs/toy.yaml"
FAST = ["--no-progress", "--grader-workers", "0"]


@pytest.fixture(autouse=True)
def _at_root(monkeypatch):
    monkeypatch.chdir(ROOT)


def _toy_build(out: Path, *extra: str) -> int:
    argv = ["sft", "build-data", "--teacher", f"{TOY}/proposer_cold_start", "--out", str(out)]
    argv += ["--checker", f"{TOY}/solver_cold_start", "--check-samples", "3", "--size", "4"]
    return main([*argv, *FAST, *extra])


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def test_toy_teacher_with_the_toy_config_prompts_keeps_examples(tmp_path, capsys):
    out = tmp_path / "toy"
    assert _toy_build(out, "--config", TOY_CONFIG) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out.strip().splitlines()[-1])
    card = json.loads((out / "data_card.json").read_text())
    # measured: 8 requests, 4 kept, 4 dropped (check_disagree: the toy Solver answers half the problems
    # directly, and those answers are almost never right)
    assert card["proposer"]["kept"] == summary["proposer"]["kept"] >= 2
    assert summary["dropped"]["proposer"] == card["proposer"]["rejected"]
    # the answers are in the Proposer format: nothing dropped for it, only by the checker or the leak rule
    assert set(card["proposer"]["rejected"]) <= {"check_disagree", "answer_leaked", "over_size"}
    assert f"pasodoble sft build-data: proposer: {card['proposer']['requests']} requests, " in captured.err
    # the prompts, sampling and knowledge are the config's
    assert card["prompts"]["proposer"]["from"] == f"--config {TOY_CONFIG}"
    assert card["settings"]["temperature"] == {"proposer": 0.5, "solver": 1.0}
    assert card["settings"]["max_tokens"] == {"proposer": 256, "solver": 128}
    assert card["knowledge"] == "toy" and card["settings"]["max_snippet_tokens"] == 160
    for rec in _lines(out / "proposer.jsonl"):
        user, assistant = rec["messages"]
        assert user["content"].startswith("Write a new problem based on this passage, then solve it.\n\n")
        assert parse_proposal(assistant["content"]).answer == rec["meta"]["answer"]
    for rec in _lines(out / "solver.jsonl"):  # the Solver prompt is the config's "{problem}"
        assert rec["messages"][0]["content"].startswith("What is ")


def test_toy_teacher_with_mismatched_prompts_exits_non_zero_and_says_why(tmp_path, capsys):
    out = tmp_path / "builtin"
    # the built-in prompts: the toy Proposer was never trained on them (measured: 16 requests, 0 kept:
    # no_problem 7, unfinished_thinking 6, check_disagree 2, no_answer 1)
    assert _toy_build(out, "--knowledge", "toy", "--max-tokens", "256") == 1
    err = capsys.readouterr().err.strip().splitlines()
    message = err[-1]
    assert message.startswith("pasodoble sft: error: kept ")
    assert "fewer than --min-kept 1" in message and "no_problem" in message
    assert "--config TRAIN.yaml" in message and "--proposer-prompt-file" in message
    assert any(line.startswith("pasodoble sft build-data: proposer: 16 requests, ") for line in err)
    card = json.loads((out / "data_card.json").read_text())  # written all the same, for inspection
    rejected = card["proposer"]["rejected"]
    formats = sum(rejected.get(k, 0) for k in ("no_problem", "no_answer", "unfinished_thinking"))
    assert formats * 2 >= card["proposer"]["requests"]
    assert card["prompts"]["proposer"] == {"from": "built-in", "template": None}


def test_prompt_files_override_the_config(tmp_path):
    proposer = tmp_path / "proposer.txt"
    proposer.write_text("Passage:\n{snippet}\nWrite a problem.", encoding="utf-8")
    solver = tmp_path / "solver.txt"
    solver.write_text("Q: {problem}", encoding="utf-8")
    cfg = BuildDataConfig(teacher="x", out="o", config=TOY_CONFIG, solver_prompt_file=str(solver))
    plan = resolve(cfg)
    assert plan.proposer_prompt.startswith("Write a new problem based on this passage")
    assert plan.solver_prompt == "Q: {problem}"
    assert plan.prompts_from["solver"] == f"--solver-prompt-file {solver}"
    assert plan.knowledge.source == "toy" and plan.tokenizer == "src/pasodoble/assets/toy/proposer_cold_start"
    # explicit options win over the config
    plan = resolve(
        BuildDataConfig(
            teacher="x",
            out="o",
            config=TOY_CONFIG,
            temperature=0.9,
            knowledge="tiny",
            proposer_prompt_file=str(proposer),
        )
    )
    assert plan.temperature == {"proposer": 0.9, "solver": 0.9} and plan.max_tokens["solver"] == 128
    assert plan.knowledge.source == "tiny" and plan.proposer_prompt.startswith("Passage:")
    # no config: the built-in prompts and the historical defaults
    plan = resolve(BuildDataConfig(teacher="x", out="o"))
    assert plan.proposer_prompt is None and plan.temperature == {"proposer": 0.6, "solver": 0.6}
    assert plan.max_tokens == {"proposer": 4096, "solver": 4096} and plan.knowledge.source == "tiny"


def test_a_run_directory_is_a_config(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text((ROOT / TOY_CONFIG).read_text(), encoding="utf-8")
    plan = resolve(BuildDataConfig(teacher="x", out="o", config=str(run)))
    assert plan.solver_prompt == "{problem}"


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"config": "no/such.yaml"}, "--config no/such.yaml not found"),
        ({"proposer_prompt_file": "no/such.txt"}, "--proposer-prompt-file no/such.txt not found"),
        ({"min_kept": -1}, "--min-kept must be >= 0"),
    ],
)
def test_bad_options_are_one_line_errors(kwargs, needle):
    with pytest.raises(UserError, match=needle):
        resolve(BuildDataConfig(teacher="x", out="o", **kwargs))


def test_a_template_without_its_placeholder_is_refused(tmp_path, capsys):
    bad = tmp_path / "solver.txt"
    bad.write_text("Solve it.", encoding="utf-8")
    with pytest.raises(UserError, match=r"--solver-prompt-file .* has no \{problem\} placeholder"):
        resolve(BuildDataConfig(teacher="x", out="o", solver_prompt_file=str(bad)))
    empty_dir = tmp_path / "run"
    empty_dir.mkdir()
    rc = main(
        ["sft", "build-data", "--teacher", "tiny", "--size", "1", "--out", str(tmp_path / "o")]
        + ["--config", str(empty_dir)]
    )
    err = capsys.readouterr().err.strip()
    assert rc == 1 and "\n" not in err and "without config.yaml" in err


def test_check_kept_names_the_main_reason():
    card = {
        "proposer": {"requests": 10, "kept": 0, "rejected": {"check_disagree": 9, "no_problem": 1}},
        "solver": {"responses": 0, "kept": 0, "rejected": {}},
    }
    with pytest.raises(UserError, match=r"check_disagree 9, no_problem 1\); the checker seldom"):
        check_kept(card, 1)
    check_kept(card, 0)  # --min-kept 0 accepts an empty build
