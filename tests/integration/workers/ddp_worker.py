"""Data-parallel check worker: a few GRPO steps of the tiny task, then save the parameters.

Run with plain ``python`` (one process) or under ``torchrun --nproc_per_node N``; both see the same
global batch (every rank generates all of it with the same seed and trains on its shard), so the
final parameters (and the logged loss and pre-clipping gradient norm, which unlike Adam's update are
sensitive to the gradient's scale) must agree to float rounding. The default dtype is float64: Adam divides by the
gradient's running RMS, which turns float32 rounding noise in gradients that nearly cancel (GRPO
advantages sum to zero per group) into parameter differences of ~lr * 1e-2; in float64 that noise is
~1e-16 and the check isolates the accumulation and all-reduce semantics. Usage:
``python -m tests.integration.workers.ddp_worker OUT.pt --steps 3 --micro-batch-size 4 --loss-type dapo``.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from accelerate import Accelerator  # noqa: E402

from pasodoble.config import GRPOConfig, RoleConfig  # noqa: E402
from pasodoble.learner import Learner  # noqa: E402
from pasodoble.rollout.base import SamplingParams  # noqa: E402
from pasodoble.rollout.hf import HFBackend  # noqa: E402
from pasodoble.testing.tiny import (  # noqa: E402
    build_tiny_model,
    build_tiny_tokenizer,
    digit_reward,
    tiny_grpo_step,
    tiny_task_prompts,
)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--micro-batch-size", type=int, default=4)
    ap.add_argument("--loss-type", default="dapo")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtype", default="float64", choices=("float32", "float64"))
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--steps-per-batch", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(1)

    acc = Accelerator(cpu=True)
    tok = build_tiny_tokenizer()
    model = build_tiny_model(tok, seed=args.seed, dtype=getattr(torch, args.dtype))
    role = RoleConfig(
        learning_rate=args.lr, micro_batch_size=args.micro_batch_size, steps_per_batch=args.steps_per_batch
    )
    learner = Learner(
        "solver",
        model,
        tok,
        role,
        GRPOConfig(loss_type=args.loss_type),
        acc,
        temperature=1.0,
        max_new_tokens=6,
    )
    backend = HFBackend(learner.unwrapped_model, tok)
    prompts = tiny_task_prompts(tok, 4)
    history = []
    for step in range(args.steps):
        params = SamplingParams(temperature=1.0, max_new_tokens=6, n=6, seed=args.seed * 1000 + step)
        reward, metrics = tiny_grpo_step(
            learner, backend, prompts, params, lambda ids: digit_reward(tok, ids)
        )
        history.append(metrics)
        if acc.is_main_process:
            print(f"step {step} world {acc.num_processes} reward {reward:.3f} loss {metrics['loss']:.6f}")
    if acc.is_main_process:
        params = {k: v.detach().clone() for k, v in learner.unwrapped_model.state_dict().items()}
        torch.save({"params": params, "metrics": history}, args.out)
    acc.wait_for_everyone()


if __name__ == "__main__":
    main()
