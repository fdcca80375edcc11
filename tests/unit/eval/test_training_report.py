"""`pasodoble report RUN_DIR`: plots and a summary of a training run's metrics.jsonl, no evaluation needed
(it used to fail without eval.every). The runs here are written by hand, so every number is checkable."""

from __future__ import annotations

import json
from pathlib import Path

from pasodoble.cli import main
from pasodoble.eval.report import write_training_report

STEPS = [
    {"step": 0, "step/updates": 1, "step/skips_total": 0, "proposer/reward_mean": 0.2, "solver/pass_rate": 0.5,
     "proposer/valid_rate": 1.0, "proposer/loss": 0.1, "solver/loss": -0.2},
    {"step": 1, "step/updates": 1, "step/skips_total": 1, "step/skip_reason": "no_valid_question",
     "proposer/valid_rate": 0.0},
    {"step": 2, "step/updates": 2, "step/skips_total": 1, "proposer/reward_mean": 0.4, "solver/pass_rate": 0.25,
     "proposer/valid_rate": 0.5, "proposer/loss": 0.3, "solver/loss": -0.1},
    {"step": 3, "step/updates": 3, "step/skips_total": 1, "proposer/reward_mean": 0.6, "solver/pass_rate": 0.75,
     "proposer/valid_rate": 0.5, "proposer/loss": 0.2, "solver/loss": 0.0},
]  # fmt: skip


def _run(path: Path, rows: list[dict], torn: bool = False) -> Path:
    path.mkdir(parents=True)
    text = "".join(json.dumps(r) + "\n" for r in rows)
    (path / "metrics.jsonl").write_text(
        text + ('{"step": 4, "propo' if torn else "")
    )  # a killed run's last line
    (path / "config.yaml").write_text("run: {}\n")
    return path


def test_a_run_without_evaluations_gets_plots_and_a_summary(tmp_path, capsys):
    run = _run(tmp_path / "A", STEPS, torn=True)
    assert main(["report", str(run)]) == 0
    assert "wrote" in capsys.readouterr().out
    out = run / "report"
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "report.md").read_text()
    assert (
        "| A | " + str(run) + " | 4 | 4 | 3 | 1 |" in md
    )  # 4 steps logged (the torn line skipped), 3 updates, 1 skip
    # reward at steps 1, 3, 4: 0.2, 0.4, 0.6 -> first 0.2, last 0.6, mean 0.4, last quarter (1 value) 0.6
    assert "| A | `proposer/reward_mean` | 3 | 0.2 | 0.6 | 0.4 | 0.6 |" in md
    # valid rate at every step: 1, 0, 0.5, 0.5 -> mean 0.5
    assert "| A | `proposer/valid_rate` | 4 | 1 | 0.5 | 0.5 | 0.5 |" in md
    summary = json.loads((out / "report.json").read_text())
    assert summary["runs"][0] | {"path": None} == {
        "label": "A", "path": None, "steps_logged": 4, "last_step": 4, "updates": 3, "skips": 1
    }  # fmt: skip
    assert list(summary["panels"]) == [
        "Proposer reward and diversity",
        "Pass and valid rates",
        "Losses",
        "Updates and skips (cumulative)",
    ]  # fmt: skip (no evaluation, buffer, gradient or length metrics were logged: no such panels)


def test_several_runs_are_drawn_together_and_evaluations_get_a_panel(tmp_path, capsys):
    a = _run(tmp_path / "A", STEPS)
    b = _run(tmp_path / "B", [*STEPS[:3], {**STEPS[3], "eval/gsm8k/pass@1": 0.3, "eval/average/pass@1": 0.3}])
    assert main(["report", str(a), str(b)]) != 0
    assert "give --out DIR" in capsys.readouterr().err
    summary = write_training_report([str(a), str(b)], tmp_path / "out", labels=["base", "fork"])
    assert [r["label"] for r in summary["runs"]] == ["base", "fork"]
    assert summary["panels"]["Held-out pass@1"] == ["eval/gsm8k/pass@1", "eval/average/pass@1"]
    md = (tmp_path / "out" / "report.md").read_text()
    assert "| fork | `eval/average/pass@1` | 1 | 0.3 | 0.3 | 0.3 | 0.3 |" in md


def test_runs_and_evaluation_results_are_not_mixed(tmp_path, capsys):
    run = _run(tmp_path / "A", STEPS)
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"benchmarks": {}, "average": {}}))
    assert main(["report", str(run), str(results), "--out", str(tmp_path / "o")]) != 0
    err = capsys.readouterr().err.strip()
    assert "not both" in err and err.count("\n") == 0
    empty = tmp_path / "E"
    empty.mkdir()
    (empty / "metrics.jsonl").write_text("")
    assert main(["report", str(empty)]) != 0
    assert "holds no logged step yet" in capsys.readouterr().err
