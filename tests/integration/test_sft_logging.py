"""`pasodoble sft train` logs live: metrics.jsonl grows a line per step while it trains, trackers get
every step, and a crashed run resumed from its checkpoint leaves the logs of an uninterrupted one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pasodoble.sft.train import SFTConfig, train_sft


def _data(path: Path, n: int = 24) -> Path:
    lines = []
    for i in range(n):
        a, b = i % 7 + 1, i % 5 + 2
        messages = [
            {"role": "user", "content": f"What is {a} + {b}?"},
            {"role": "assistant", "content": f"{a} + {b} = {a + b}. \\boxed{{{a + b}}}"},
        ]
        lines.append(json.dumps({"messages": messages}) + "\n")
    path.write_text("".join(lines))
    return path


def _steps(path: Path) -> list[int]:
    return [json.loads(x)["step"] for x in path.read_text().splitlines()] if path.exists() else []


def _cfg(data: Path, out: Path, **kw) -> SFTConfig:
    base = dict(
        data=str(data),
        model="tiny",
        out=str(out),
        epochs=1,
        batch_size=4,
        micro_batch_size=4,
        eval_every=2,
        checkpoint_every=2,
        eval_fraction=0.1,
        max_length=128,
        progress=False,
    )
    return SFTConfig(**{**base, **kw})


def test_sft_writes_metrics_while_it_trains(tmp_path, one_thread):
    data, out = _data(tmp_path / "d.jsonl"), tmp_path / "out"
    seen = {}

    def on_eval(model, tokenizer, step):
        seen[step] = _steps(out / "metrics.jsonl")  # what a user reading the file would see now
        return {"probe": float(step)}

    summary = train_sft(_cfg(data, out), on_eval=on_eval)
    assert summary["steps"] == 6  # 22 training examples, 4 a step
    # on_eval(s) runs before step s's line is written: the file holds every earlier step
    assert seen == {0: [], 2: [0, 1], 4: [0, 1, 2, 3], 6: [0, 1, 2, 3, 4, 5, 6]}
    assert _steps(out / "metrics.jsonl") == list(range(7))


def test_sft_trackers_and_logs_survive_a_crash_and_resume(tmp_path, one_thread):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    data = _data(tmp_path / "d.jsonl")
    full, part = tmp_path / "full", tmp_path / "part"
    train_sft(_cfg(data, full, log_with=["tensorboard"]), on_eval=lambda m, t, s: {"probe": float(s)})

    def crash_at_4(model, tokenizer, step):
        if step == 4:  # after the checkpoint at step 2 and the lines of steps 1-3
            raise RuntimeError("crash")
        return {"probe": float(step)}

    with pytest.raises(RuntimeError, match="crash"):
        train_sft(_cfg(data, part, log_with=["tensorboard"]), on_eval=crash_at_4)
    assert _steps(part / "metrics.jsonl") == [0, 1, 2, 3]
    train_sft(
        _cfg(data, part, log_with=["tensorboard"], resume=True), on_eval=lambda m, t, s: {"probe": float(s)}
    )

    # the resumed run's metrics.jsonl is the uninterrupted run's, line for line
    assert (part / "metrics.jsonl").read_text() == (full / "metrics.jsonl").read_text()
    events = sorted((part / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 2
    starts = [e.step for e in EventFileLoader(str(events[1])).Load() if e.HasField("session_log")]
    assert starts == [3]  # purged from the first step after the checkpoint
    acc = EventAccumulator(str(part / "tensorboard"))
    acc.Reload()
    full_lines = [json.loads(x) for x in (full / "metrics.jsonl").read_text().splitlines()]
    losses = acc.Scalars("loss")
    assert [s.step for s in losses] == [r["step"] for r in full_lines if "loss" in r] == list(range(1, 7))
    assert [s.value for s in losses] == pytest.approx([r["loss"] for r in full_lines if "loss" in r])
    assert [s.step for s in acc.Scalars("eval_loss")] == [0, 2, 4, 6]


def test_sft_unknown_tracker_is_a_one_line_error(tmp_path, capsys):
    from pasodoble.cli import main

    data = _data(tmp_path / "d.jsonl")
    argv = [
        "sft",
        "train",
        "--role",
        "solver",
        "--data",
        str(data),
        "--model",
        "tiny",
        "--out",
        str(tmp_path / "o"),
    ]
    assert main([*argv, "--log-with", "tensorboard,nope", "--no-progress"]) != 0
    err = capsys.readouterr().err.strip()
    assert err.splitlines()[-1] == (
        "pasodoble sft: error: --log-with: unknown tracker 'nope'; use any of tensorboard, wandb, mlflow, "
        "trackio, comet_ml, aim, clearml, dvclive, swanlab"
    )
