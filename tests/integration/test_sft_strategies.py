"""``pasodoble sft train`` at the scale of the RL: the same layouts and precision, from the same code
(``parallel.build_accelerator``, ``shard_model``, float32 masters).

Under ``torchrun --nproc_per_node 2`` with ``--strategy fsdp2`` on CPU (gloo) the model is sharded, the
run equals the one-process run within float32 summation-order noise, and a run resumed from its step-2
checkpoint ends bitwise equal to the uninterrupted one.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}

pytestmark = pytest.mark.slow


def _data(path: Path) -> Path:
    rows = []
    for i in range(48):
        a, b = i % 17, (i * 7) % 23
        answer = f"{a} + {b} = {a + b}. \\boxed{{{a + b}}}"
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": f"What is {a} + {b}?"},
                    {"role": "assistant", "content": answer},
                ]
            }
        )
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _sft(out: Path, data: Path, *extra: str, procs: int = 1) -> subprocess.CompletedProcess:
    args = [
        "-m", "pasodoble.cli", "sft", "train", "--role", "solver", "--data", str(data), "--model", "tiny",
        "--out", str(out), "--epochs", "1", "--lr", "1e-3", "--batch-size", "12", "--micro-batch-size", "4",
        "--eval-fraction", "0.1", "--checkpoint-every", "2", "--no-progress", *extra,
    ]  # fmt: skip
    if procs > 1:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        launcher = ["-m", "torch.distributed.run", "--nproc_per_node", str(procs)]
        args = [*launcher, "--master_addr", "127.0.0.1", "--master_port", str(port), *args]
    proc = subprocess.run(
        [sys.executable, *args], env=ENV, capture_output=True, text=True, timeout=400, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def test_sft_under_two_process_fsdp2_matches_one_process_and_resumes(tmp_path):
    data = _data(tmp_path / "data.jsonl")
    one, fsdp = tmp_path / "one", tmp_path / "fsdp"
    _sft(one, data)
    proc = _sft(fsdp, data, "--strategy", "fsdp2", procs=2)
    assert "strategy: fsdp2, 2 processes" in proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["steps"] == 4 and summary["eval_loss_after"] < summary["eval_loss_before"]
    ckpt = fsdp / "checkpoints" / "step_00000004"
    assert sorted(p.name for p in (ckpt / "sft.dcp").iterdir()) == [
        ".metadata",
        "__0_0.distcp",
        "__1_0.distcp",
    ]
    a, b = load_file(one / "model.safetensors"), load_file(fsdp / "model.safetensors")
    assert {t.dtype for t in b.values()} == {torch.float32}
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    print(f"SFT under 2-process FSDP2 vs one process: max weight difference {diff:.2e}")
    assert diff < 1e-4  # float32 summation order through Adam; a wiring error moves weights by ~lr = 1e-3

    # resume from the step-2 checkpoint, as if the run had been killed after it
    final = {k: v.clone() for k, v in b.items()}
    shutil.rmtree(fsdp / "checkpoints" / "step_00000004")
    (fsdp / "model.safetensors").unlink()
    _sft(fsdp, data, "--strategy", "fsdp2", "--resume", procs=2)
    resumed = load_file(fsdp / "model.safetensors")
    assert all(torch.equal(final[k], resumed[k]) for k in final)
