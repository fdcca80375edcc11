"""What a run leaves to read: the raw text of every completion in rollouts.jsonl, and trackers
(TensorBoard, wandb offline) that continue across a kill and --resume without duplicated steps."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pasodoble.config import load_config
from pasodoble.testing.scripted import scripted_factory
from pasodoble.train import run_training

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs" / "tiny.yaml"


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def boxed(answer: str) -> str:
    return "\\boxed{" + answer + "}"


def _scripted_run(tmp_path: Path, name: str, *overrides: str) -> list[dict]:
    out = tmp_path / name
    cfg = load_config(
        TINY, [f"run.out_dir={out}", "run.progress=false", "run.seed=1", "run.checkpoint_every=0", *overrides]
    )
    run_training(cfg, backend_factory=scripted_factory)
    return _lines(out / "rollouts.jsonl")


def test_rollouts_keep_the_raw_proposer_and_solver_text(tmp_path):
    records = _scripted_run(tmp_path, "online", "run.max_steps=3", "run.completion_chars=0")
    assert len(records) == 12
    reasons = {r["invalid_reason"] for r in records}
    assert "no_problem" in reasons and None in reasons  # both kinds are covered
    for r in records:
        text = r["proposer_completion"]
        if r["invalid_reason"] == "no_problem":
            assert r["problem"] is None and text == "I could not think of a problem."
        else:
            assert text.startswith(f"<problem>{r['problem']}</problem>") and text.endswith(boxed(r["answer"]))
        assert r["proposer_truncated"] is False
        for attempt in r["solver_answers"]:
            assert attempt["response"].endswith(boxed(attempt["pred"]))

    offline = _scripted_run(tmp_path, "offline", "run.mode=offline", "run.max_steps=1")
    solver_records = [r for r in offline if r["phase"] == "offline_solver"]
    assert solver_records and all(
        a["response"].endswith(boxed(a["pred"])) for r in solver_records for a in r["solver_answers"]
    )
    assert all("proposer_completion" in r for r in offline if r["phase"] == "offline_proposer")

    quiet = _scripted_run(tmp_path, "quiet", "run.max_steps=2", "run.log_completions=false")
    assert all("proposer_completion" not in r for r in quiet)
    assert all("response" not in a for r in quiet for a in r["solver_answers"])


def test_cli_flag_between_overrides_and_raw_text_of_a_real_tiny_run(tmp_path, capsys):
    from pasodoble.cli import main

    out = tmp_path / "run"
    out.mkdir()  # `--overwrite` among the overrides: accepted (it used to be a usage error)
    argv = ["train", str(TINY), "--overwrite", f"run.out_dir={out}", "run.max_steps=2", "run.progress=false"]
    assert main([*argv, "run.completion_chars=16"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["steps"] == 2
    records = _lines(out / "rollouts.jsonl")
    assert len(records) == 8  # tiny.yaml: N = 4 proposals a step
    # an untrained tiny model writes noise: mostly `no_problem` records, each with the text that failed
    assert any(r["invalid_reason"] == "no_problem" for r in records)
    cut = re.compile(r"^.{8}\[\.\.\. \d+ characters cut \.\.\.\].{8}$", re.DOTALL)
    for r in records:
        text = r["proposer_completion"]
        assert text and (len(text) <= 16 or cut.match(text)), text


def test_trackers_continue_across_a_crash_and_resume(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    from pasodoble.dual_play import DualPlay
    from pasodoble.train import resume_training

    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb_home"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "run"
    original = DualPlay.online_step

    def crash_at_5(self, step):
        if step == 5:
            raise RuntimeError("crash")
        return original(self, step)

    monkeypatch.setattr(DualPlay, "online_step", crash_at_5)
    cfg = load_config(
        TINY,
        [f"run.out_dir={out}", "run.progress=false", "run.max_steps=6", "run.checkpoint_every=3"]
        + ["run.log_with=[wandb,tensorboard]", "run.wandb_project=pd"],
    )
    with pytest.raises(RuntimeError, match="crash"):  # steps 3 and 4 were logged past the checkpoint at 3
        run_training(cfg, backend_factory=scripted_factory)
    monkeypatch.setattr(DualPlay, "online_step", original)
    assert resume_training(out, backend_factory=scripted_factory)["steps"] == 6

    run_id = json.loads((out / "trackers.json").read_text())["wandb"]
    wandb_runs = sorted(p.name for p in (out / "wandb").glob("offline-run-*"))
    assert len(wandb_runs) == 2 and all(name.endswith(f"-{run_id}") for name in wandb_runs)

    events = sorted((out / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 2
    starts = [e.step for e in EventFileLoader(str(events[1])).Load() if e.HasField("session_log")]
    assert starts == [3]  # the resumed writer purges from the checkpoint's step
    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    metrics = _lines(out / "metrics.jsonl")
    scalars = acc.Scalars("proposer/valid_rate")
    assert [s.step for s in scalars] == [m["step"] for m in metrics] == list(range(6))
    assert [s.value for s in scalars] == pytest.approx([m["proposer/valid_rate"] for m in metrics])
