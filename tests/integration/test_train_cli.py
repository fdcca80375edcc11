"""`pasodoble train` as a user meets it: errors are one line with a non-zero exit; signals stop cleanly;
data-parallel ranks take identical decisions."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs" / "tiny.yaml"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def _cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pasodoble.cli", "train", *args],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=timeout,
        cwd=ROOT,
    )


def _assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode != 0
    err = proc.stderr.strip()
    assert "Traceback" not in err, err[-3000:]
    last = err.splitlines()[-1]
    for needle in needles:
        assert needle in last, last


def test_tiny_config_runs_end_to_end_with_the_real_backend(tmp_path):
    out = tmp_path / "run"
    proc = _cli(str(TINY), "run.max_steps=2", f"run.out_dir={out}", "run.seed=0", "run.progress=false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["steps"] == 2
    assert (out / "config.yaml").is_file() and (out / "metrics.jsonl").is_file()
    again = _cli(str(TINY), "run.max_steps=2", f"run.out_dir={out}")
    _assert_one_line_error(again, "already holds a run", "--resume")
    fresh = _cli(str(TINY), "run.max_steps=1", f"run.out_dir={out}", "run.progress=false", "--overwrite")
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "notes.txt").write_text("keep me")
    refused = _cli(str(TINY), f"run.out_dir={tmp_path / 'precious'}", "--overwrite")
    _assert_one_line_error(refused, "refuses to delete")
    assert (tmp_path / "precious" / "notes.txt").exists()


def test_bad_inputs_give_one_line_errors(tmp_path, capsys):
    # In-process through the CLI entry point (same error handling as the console script, no import cost).
    from pasodoble.cli import main

    def check(args: list[str], *needles: str) -> None:
        code = main(["train", *args])
        err = capsys.readouterr().err.strip()
        assert code != 0 and "Traceback" not in err and err.count("\n") == 0, err
        for needle in needles:
            assert needle in err, err

    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("run: [unclosed\n")
    check([str(bad_yaml)], "not valid YAML")
    check([str(TINY), "solver.group_size=1"], "solver.group_size must be >= 2")
    check(
        [str(TINY), f"model.name_or_path={tmp_path / 'no_model'}", f"run.out_dir={tmp_path / 'r1'}"],
        "no_model",
        "does not exist",
    )
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    check([str(TINY), f"knowledge.source={empty}", f"run.out_dir={tmp_path / 'r2'}"], "empty.jsonl", "empty")
    check(["--resume", str(tmp_path / "nothing")], "not a run directory")


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    out = tmp_path / "run"
    proc = _cli(str(TINY), "run.max_steps=1", f"run.out_dir={out}", "run.progress=false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = sorted((out / "checkpoints").iterdir())[-1]
    (ckpt / "solver.pt").write_bytes(b"\x00not a checkpoint")
    _assert_one_line_error(_cli("--resume", str(out), "run.max_steps=2"), "solver.pt", "corrupt")


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_finishes_the_step_checkpoints_and_exits_0(tmp_path, signum):
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.workers.run_scripted", str(out), "online", "200", "0"],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and not (metrics.exists() and metrics.read_text().count("\n") >= 2):
        time.sleep(0.2)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err[-3000:]
    name = "Ctrl-C" if signum == signal.SIGINT else "SIGTERM"
    assert f"{name}: stopping after this step and writing a checkpoint; press Ctrl-C again to abort" in err
    steps = metrics.read_text().count("\n")
    assert 2 <= steps < 200
    assert [p.name for p in (out / "checkpoints").iterdir()] == [f"step_{steps:08d}"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_dual_play_ranks_agree(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(_free_port()),
        "-m",
        "tests.integration.workers.ddp_dual_play",
        str(tmp_path),
        "5",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    r0 = json.loads((tmp_path / "rank0.json").read_text())
    r1 = json.loads((tmp_path / "rank1.json").read_text())
    assert r0["world"] == r1["world"] == 2
    assert len(r0["records"]) == 5
    assert r0["records"] == r1["records"]
    assert any(rec["trained"] for rec in r0["records"])
    # the per-rank decision logs a user can compare, written by the trainer itself
    d0 = (tmp_path / "run" / "decisions.rank0.jsonl").read_text().splitlines()
    d1 = (tmp_path / "run" / "decisions.rank1.jsonl").read_text().splitlines()
    assert len(d0) == 5 and d0 == d1
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 5


def test_streamed_knowledge_resumes_at_the_same_snippet(tmp_path, monkeypatch):
    # A local knowledge file over knowledge.max_memory_mb is streamed (0 MB here: always); a run that
    # crashes after its checkpoint and resumes draws exactly the snippets of an uninterrupted run,
    # across an epoch boundary (4 snippets, 6 steps).
    from pasodoble.config import load_config
    from pasodoble.dual_play import DualPlay
    from pasodoble.train import resume_training, run_training

    knowledge = tmp_path / "k.jsonl"
    knowledge.write_text("".join(json.dumps({"text": f"{i} + {i} = {2 * i}"}) + "\n" for i in range(4)))

    def cfg(out):
        overrides = [f"run.out_dir={out}", "run.max_steps=6", "run.checkpoint_every=3", "run.progress=false"]
        knobs = [f"knowledge.source={knowledge}", "knowledge.max_memory_mb=0", "knowledge.shuffle_buffer=3"]
        return load_config(TINY, overrides + knobs)

    run_training(cfg(tmp_path / "full"))
    original = DualPlay.online_step

    def crash_at_5(self, step):
        if step == 5:
            raise RuntimeError("crash")
        return original(self, step)

    monkeypatch.setattr(DualPlay, "online_step", crash_at_5)
    with pytest.raises(RuntimeError, match="crash"):
        run_training(cfg(tmp_path / "crashed"))
    monkeypatch.setattr(DualPlay, "online_step", original)
    state = json.loads((tmp_path / "crashed" / "checkpoints" / "step_00000003" / "state.json").read_text())
    assert {k: state["state"]["knowledge"][k] for k in ("kind", "epoch", "position")} == {
        "kind": "local_stream",
        "epoch": 0,
        "position": 3,
    }
    resume_training(tmp_path / "crashed")

    def snippets(run):
        lines = [json.loads(x) for x in (tmp_path / run / "rollouts.jsonl").read_text().splitlines()]
        return [r["snippet_id"] for r in lines if r["index"] == 0]

    full = snippets("full")
    assert len(full) == 6 and sorted(full[:4]) == [f"k.jsonl:{i}" for i in range(1, 5)]
    assert snippets("crashed") == full
    rollouts = [(tmp_path / run / "rollouts.jsonl").read_text() for run in ("full", "crashed")]
    assert rollouts[0] == rollouts[1]  # the whole records, Proposer text included


def test_toy_config_trains_both_roles(tmp_path):
    """configs/toy.yaml: the shipped toy models write valid problems, so a step updates both roles
    (configs/tiny.yaml's untrained models skip every step)."""
    from pasodoble.config import load_config
    from pasodoble.train import run_training

    cfg = load_config(
        ROOT / "configs" / "toy.yaml",
        [f"run.out_dir={tmp_path / 'run'}", "run.max_steps=1", "run.progress=false", "run.threads=1"],
    )
    summary = run_training(cfg)
    assert summary["updates"] == 1
    metrics = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert metrics["proposer/grad_norm"] > 0 and metrics["solver/grad_norm"] > 0
