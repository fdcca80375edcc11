"""FSDP2 on CPU (gloo, 2 processes): really sharded, equal to one process, resumable bit for bit.

The learner applies torch's ``fully_shard`` itself (``parallel.shard_model``), so these CPU runs exercise
the code that runs on GPUs. Three checks:

- ``workers/strategy_worker.py`` (learner level): the parameters are DTensors, activation checkpointing is
  applied once (the transformers flag, no FSDP checkpoint wrapper), the sharded checkpoint round-trips
  through ``Learner.save``/``load`` mid-run, and after 3 updates the parameters equal the plain
  one-process learner's within 5e-5 (summation-order noise; a wiring error moves them by ~lr = 1e-3).
- ``workers/run_scripted.py`` under torchrun (trainer level): a run killed after a checkpoint and resumed ends
  with bitwise the weights, rollouts and metrics of an uninterrupted run.
- ``pasodoble train`` under torchrun with the transformers backend: generation goes through one
  unsharded replica per process (decode loops of different lengths never run through sharded modules),
  and the run says which strategy it uses.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[2]
WORKERS = "tests.integration.workers"  # run with -m from ROOT
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}

pytestmark = pytest.mark.slow


def _torchrun(*args: str) -> list[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "--master_addr", "127.0.0.1", "--master_port", str(port), *args,
    ]  # fmt: skip


def _run(cmd: list[str], *, ok: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=400, cwd=ROOT)
    if ok:
        assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc


def test_fsdp2_learner_shards_matches_one_process_and_resumes(tmp_path):
    worker = f"{WORKERS}.strategy_worker"
    args = ["--updates", "3", "--batch-size", "24", "--loss-type", "dapo", "--lr", "1e-3"]
    _run([sys.executable, "-m", worker, str(tmp_path / "plain.pt"), "--micro-batch-size", "5", *args])
    _run(
        _torchrun(
            "-m", worker, str(tmp_path / "fsdp.pt"), "--strategy", "fsdp2", "--micro-batch-size", "4",
            "--resume-at", "2", "--gradient-checkpointing", *args,
        )
    )  # fmt: skip
    a, b = torch.load(tmp_path / "plain.pt"), torch.load(tmp_path / "fsdp.pt")
    facts = b["facts"]
    assert b["strategy"] == "fsdp2" and b["world"] == 2
    assert facts["dtensor_params"] == facts["params"] > 0  # every parameter is sharded
    assert facts["checkpoint_wrappers"] == 0 and facts["gradient_checkpointing"]  # checkpointing once
    assert facts["param_dtypes"] == ["torch.float32"]
    assert b["checkpoint_files"] == ["solver.dcp", "solver.pt"]
    assert a["step"] == b["step"] == 3
    max_diff = max((a["params"][k] - b["params"][k]).abs().max().item() for k in a["params"])
    moved = max((a["params"][k] - a["init"][k]).abs().max().item() for k in a["params"])
    print(
        f"FSDP2 (resumed at update 2) vs one process: max parameter difference {max_diff:.2e}, moved {moved:.1e}"
    )
    assert moved > 1e-3
    assert max_diff < 5e-5
    for ma, mb in zip(a["metrics"], b["metrics"], strict=True):
        assert ma["sequences"] == mb["sequences"] == 24 and ma["tokens"] == mb["tokens"]
        assert ma["grad_norm"] == pytest.approx(mb["grad_norm"], rel=1e-4)


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_fsdp2_training_killed_and_resumed_is_bitwise_identical(tmp_path):
    script = f"{WORKERS}.run_scripted"
    extra = ["distributed.strategy=fsdp2", "run.device=cpu"]
    full, killed = tmp_path / "full", tmp_path / "killed"
    _run(_torchrun("-m", script, str(full), "online", "4", "2", *extra))
    crashed = _run(
        _torchrun("-m", script, str(killed), "online", "4", "2", "--kill-at-step", "3", *extra), ok=False
    )
    assert crashed.returncode != 0
    ckpt = killed / "checkpoints" / "step_00000002"
    assert sorted(p.name for p in (ckpt / "solver.dcp").iterdir()) == [
        ".metadata",
        "__0_0.distcp",
        "__1_0.distcp",
    ]
    assert json.loads((ckpt / "state.json").read_text())["state"]["layout"] == {
        "strategy": "fsdp2",
        "processes": 2,
    }
    _run(_torchrun("-m", script, str(killed), "online", "4", "2", "--resume"))
    metrics = _lines(full / "metrics.jsonl")
    assert metrics[-1]["step/updates"] >= 2  # the run trained
    for role in ("proposer", "solver"):
        a = load_file(full / f"{role}_final" / "model.safetensors")
        b = load_file(killed / f"{role}_final" / "model.safetensors")
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), f"{role} weights differ after resume"
    strip = lambda ms: [{k: v for k, v in m.items() if not k.startswith("time/")} for m in ms]  # noqa: E731
    assert strip(metrics) == strip(_lines(killed / "metrics.jsonl"))
    assert (full / "rollouts.jsonl").read_text() == (killed / "rollouts.jsonl").read_text()


def test_fsdp2_cli_run_generates_through_a_replica_and_names_its_strategy(tmp_path):
    out = tmp_path / "run"
    proc = _run(
        _torchrun(
            "-m", "pasodoble.cli", "train", str(ROOT / "configs" / "tiny.yaml"), "distributed.strategy=fsdp2",
            "run.device=cpu", "model.dtype=bfloat16", "run.max_steps=2", f"run.out_dir={out}",
        )
    )  # fmt: skip
    assert "strategy: fsdp2, 2 processes, compute bfloat16" in proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["steps"] == 2
    rollouts = _lines(out / "rollouts.jsonl")
    assert len(rollouts) == 2 * 4  # both steps proposed (the untrained tiny model writes no valid problem)
    assert all(r["proposer_completion"] for r in rollouts)
