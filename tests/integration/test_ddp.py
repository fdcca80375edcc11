"""Data parallelism on CPU: ``torchrun --nproc_per_node 2`` == one process over the same global batch.

Both runs execute ``workers/ddp_worker.py`` (3 GRPO steps of the tiny task, dapo loss, so the token
normalizer must be the global one). The single process accumulates 24 sequences in micro-batches of
5; each of the two ranks takes 12 in micro-batches of 4. Parameters, loss and gradient norm must agree.
With two optimizer steps per batch, the second step is importance-weighted against old log-probs
computed before the first, and ``Learner.shard`` gives each rank half of each mini-batch.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
WORKER = "tests.integration.workers.ddp_worker"  # run with -m from ROOT


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd: list[str]) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


@pytest.mark.slow
@pytest.mark.parametrize("steps_per_batch", [1, 2])
def test_two_process_ddp_matches_single_process(tmp_path, steps_per_batch):
    single, dp = tmp_path / "single.pt", tmp_path / "dp.pt"
    args = ["--steps", "3", "--loss-type", "dapo", "--steps-per-batch", str(steps_per_batch)]
    _run([sys.executable, "-m", WORKER, str(single), "--micro-batch-size", "5", *args])
    _run(
        [
            sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
            "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
            "-m", WORKER, str(dp), "--micro-batch-size", "4", *args,
        ]
    )  # fmt: skip
    a, b = torch.load(single), torch.load(dp)
    max_diff = max((a["params"][k] - b["params"][k]).abs().max().item() for k in a["params"])
    print(f"DP vs single-process max parameter difference: {max_diff:.3e}")
    assert max_diff < 1e-5
    for ma, mb in zip(a["metrics"], b["metrics"], strict=True):
        assert ma["sequences"] == mb["sequences"] == 24
        assert ma["tokens"] == mb["tokens"]
        assert ma["grad_norm"] == pytest.approx(mb["grad_norm"], rel=1e-9)
        assert ma["grad_norm"] > 0
        # The loss is ~0 (ratio 1, advantages sum to zero per group) and reduced in float32.
        assert ma["loss"] == pytest.approx(mb["loss"], abs=1e-7)
