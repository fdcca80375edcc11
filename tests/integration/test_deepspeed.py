"""DeepSpeed ZeRO-2 on CPU: ``torchrun --nproc_per_node 2`` learner updates == the plain single-process Learner.

Both runs execute ``workers/strategy_worker.py``: three GRPO updates of the tiny float32 model on fixed
batches of 24 ``TrainSample``s (dapo loss, so the token normalizer must be global; clipping at 1.0 is
active, the gradient norms are 1.2-2.6). The plain run accumulates micro-batches of 5 in one process;
under DeepSpeed each rank takes 12 samples in micro-batches of 4 and the ZeRO-2 engine, built by
accelerate by ``parallel.build_accelerator`` (DeepSpeed's CPU accelerator, gloo), partitions
gradients and AdamW state over the two ranks.

Tolerance: parameters within 5e-5. Float32 gradients of GRPO nearly cancel (advantages sum to zero per
group), and Adam divides by their RMS, so summation-order noise alone moves single parameters by
~lr * 1e-2 = 1e-5: the plain learner against itself with micro-batches of 4 instead of 5 differs by
6e-6, DDP against one process by 9e-6 (docs/learner.md); this check measured 5.6e-6. A wiring error
moves parameters by ~lr = 1e-3 (DeepSpeed without the role's clipping: 1.3e-3; stepping after every
micro-batch, what ``accelerator.backward`` does under DeepSpeed, makes three steps instead of one).
The pre-clipping gradient norm must match to 1e-4 relative: DeepSpeed sums squared norms in float64,
torch's float32 ``clip_grad_norm_`` is off by ~1e-5 relative here.

Skipped where deepspeed is not installed (an optional extra that CI's fresh venv lacks). The first
run on a machine compiles DeepSpeed's CPU communication op (~90 s, cached under
~/.cache/torch_extensions); afterwards the whole test takes ~30-60 s on two cores.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

# find_spec, not importorskip: importing deepspeed here would detect an accelerator inside the test
# process for nothing; the workers import it.
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="deepspeed is not installed"),
]

ROOT = Path(__file__).resolve().parents[2]
WORKER = "tests.integration.workers.strategy_worker"  # run with -m from ROOT


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd: list[str]) -> None:
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "DS_ACCELERATOR": "cpu",
        "CUDA_VISIBLE_DEVICES": "",
    }
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"


@pytest.mark.parametrize(
    "steps_per_batch, warmup_steps, resume_at",
    # (2, 3): two engine steps per update, old log-probs, warm-up lr reaching the engine; and the engine's
    # own checkpoint (Learner.save/load) taken after update 2 and loaded into a fresh learner
    [(1, 0, None), (2, 3, 2)],
)
def test_deepspeed_zero2_matches_plain_learner(tmp_path, steps_per_batch, warmup_steps, resume_at):
    plain, ds = tmp_path / "plain.pt", tmp_path / "ds.pt"
    args = [
        "--updates", "3", "--batch-size", "24", "--loss-type", "dapo", "--lr", "1e-3",
        "--max-grad-norm", "1.0", "--steps-per-batch", str(steps_per_batch),
        "--warmup-steps", str(warmup_steps),
    ]  # fmt: skip
    _run([sys.executable, "-m", WORKER, str(plain), "--strategy", "none", "--micro-batch-size", "5", *args])
    resume = [] if resume_at is None else ["--resume-at", str(resume_at)]
    _run(
        [
            sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
            "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
            "-m", WORKER, str(ds), "--strategy", "deepspeed_zero2", "--micro-batch-size", "4", *args, *resume,
        ]
    )  # fmt: skip
    a, b = torch.load(plain), torch.load(ds)
    assert b["distributed_type"] == "DistributedType.DEEPSPEED" and b["world"] == 2
    if resume_at is not None:
        assert "solver.deepspeed" in b["checkpoint_files"] and "solver.pt" in b["checkpoint_files"]
    assert a["step"] == b["step"] == 3 * steps_per_batch
    assert a["params"].keys() == b["params"].keys()
    max_diff = max((a["params"][k] - b["params"][k]).abs().max().item() for k in a["params"])
    moved = max((a["params"][k] - a["init"][k]).abs().max().item() for k in a["params"])
    print(f"DeepSpeed ZeRO-2 vs plain learner: max parameter difference {max_diff:.3e} (moved {moved:.1e})")
    assert moved > 1e-3  # the updates did train
    assert max_diff < 5e-5
    for ma, mb in zip(a["metrics"], b["metrics"], strict=True):
        assert ma["sequences"] == mb["sequences"] == 24
        assert ma["tokens"] == mb["tokens"]
        assert ma["lr"] == pytest.approx(mb["lr"], rel=1e-12)
        assert ma["grad_norm"] > 1.0  # clipping is active
        assert ma["grad_norm"] == pytest.approx(mb["grad_norm"], rel=1e-4)
        assert ma["loss"] == pytest.approx(mb["loss"], abs=1e-7)
