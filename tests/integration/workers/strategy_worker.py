"""Strategy check worker: GRPO learner updates of the tiny model on fixed batches, then save parameters.

``--strategy none`` runs the plain single-process ``Learner``; ``ddp``, ``fsdp2`` and
``deepspeed_zero2`` build the ``Accelerator`` and the layout with ``parallel.build_accelerator`` (the
trainer's own code) and are started under ``torchrun`` (gloo on CPU; DeepSpeed with its CPU
accelerator, ``DS_ACCELERATOR=cpu``). Every rank builds the same batches of ``TrainSample``s from
fixed seeds and trains on ``learner.shard(batch)``.

``--resume-at U`` saves the learner (``Learner.save``) after U updates, builds a fresh learner from a
differently initialized model, loads the saved state and carries on: the final parameters must be
bitwise those of a run without the interruption. ``--gradient-checkpointing`` turns activation
checkpointing on. The output holds the final float32 parameters (gathered), the initial ones, the
metrics of every update, the layout, and facts about the sharded model. Usage: ``python -m
tests.integration.workers.strategy_worker OUT.pt --strategy fsdp2 --updates 3 --micro-batch-size 4``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from pasodoble.config import GRPOConfig, RoleConfig  # noqa: E402
from pasodoble.learner import Learner, TrainSample  # noqa: E402
from pasodoble.parallel import build_accelerator  # noqa: E402
from pasodoble.testing.tiny import build_tiny_model, build_tiny_tokenizer, tiny_task_prompts  # noqa: E402


def fixed_batch(tok, n: int, seed: int = 0) -> list[TrainSample]:
    """``n`` samples: random completions of 1-8 tokens, group-centred advantages (groups of 6)."""
    g = torch.Generator().manual_seed(seed)
    prompts = tiny_task_prompts(tok, 4)
    out = []
    for i in range(n):
        length = int(torch.randint(1, 9, (1,), generator=g))
        comp = torch.randint(3, len(tok), (length,), generator=g).tolist()
        out.append(TrainSample(prompts[(i // 6) % 4], comp, 0.0, None, length == 8))
    adv = torch.randn(n, generator=g)
    adv = (adv.view(-1, 6) - adv.view(-1, 6).mean(1, keepdim=True)).flatten()
    for s, a in zip(out, adv.tolist(), strict=True):
        s.advantage = a
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--strategy", default="none", choices=("none", "ddp", "fsdp2", "deepspeed_zero2"))
    ap.add_argument("--updates", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=24)
    ap.add_argument("--micro-batch-size", type=int, default=4)
    ap.add_argument("--loss-type", default="dapo")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--max-grad-norm", type=float, default=1.0)
    ap.add_argument("--steps-per-batch", type=int, default=1)
    ap.add_argument("--warmup-steps", type=int, default=0)
    ap.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    ap.add_argument("--compute-dtype", default="float32", choices=("float32", "bfloat16"))
    ap.add_argument("--resume-at", type=int, default=None)
    ap.add_argument("--gradient-checkpointing", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)

    acc, par = build_accelerator(
        args.strategy if args.strategy != "none" else "ddp", args.compute_dtype, cpu=True
    )
    assert args.strategy == par.strategy, f"asked for {args.strategy}, got {par.describe()}"
    tok = build_tiny_tokenizer()
    role = RoleConfig(
        learning_rate=args.lr,
        micro_batch_size=args.micro_batch_size,
        steps_per_batch=args.steps_per_batch,
        max_grad_norm=args.max_grad_norm,
        warmup_steps=args.warmup_steps,
    )

    def learner(seed: int) -> Learner:
        model = build_tiny_model(tok, seed=seed, dtype=getattr(torch, args.dtype))
        return Learner(
            "solver",
            model,
            tok,
            role,
            GRPOConfig(loss_type=args.loss_type),
            acc,
            temperature=1.0,
            max_new_tokens=8,
            gradient_checkpointing=args.gradient_checkpointing,
            parallelism=par,
        )

    init = {k: v.detach().clone() for k, v in build_tiny_model(tok, seed=0).state_dict().items()}
    start = time.perf_counter()
    current = learner(0)
    init_s = time.perf_counter() - start
    facts = {
        "dtensor_params": sum(hasattr(p, "full_tensor") for p in current.model.parameters()),
        "params": sum(1 for _ in current.model.parameters()),
        "checkpoint_wrappers": sum(type(m).__name__ == "CheckpointWrapper" for m in current.model.modules()),
        "gradient_checkpointing": bool(getattr(current.unwrapped_model, "is_gradient_checkpointing", False)),
        "param_dtypes": sorted({str(p.dtype) for p in current.model.parameters()}),
    }
    history = []
    start = time.perf_counter()
    ckpt_dir = None
    for u in range(args.updates):
        if args.resume_at is not None and u == args.resume_at:
            ckpt_dir = tempfile.mkdtemp(prefix="strategy-worker-") if acc.is_main_process else None
            from pasodoble import distributed as dist

            ckpt_dir = dist.broadcast(ckpt_dir)
            current.save(ckpt_dir)
            current = learner(99)  # other initial weights: everything must come from the checkpoint
            current.load(ckpt_dir)
            assert current.step == u * args.steps_per_batch
        metrics = current.update(current.shard(fixed_batch(tok, args.batch_size, seed=u)))
        history.append(metrics)
        if acc.is_main_process:
            print(
                f"update {u} world {acc.num_processes} {par.strategy} loss {metrics['loss']:.6e} "
                f"grad_norm {metrics['grad_norm']:.6f} lr {metrics['lr']:.2e}"
            )
    update_s = time.perf_counter() - start
    params = current.full_state_dict()
    if acc.is_main_process:
        print(f"init {init_s:.1f} s, {args.updates} updates {update_s:.1f} s")
        torch.save(
            {
                "params": {k: v.detach().clone().cpu() for k, v in params.items()},
                "init": init,
                "metrics": history,
                "distributed_type": str(acc.distributed_type),
                "strategy": par.strategy,
                "world": acc.num_processes,
                "step": current.step,
                "facts": facts,
                "checkpoint_files": sorted(os.listdir(ckpt_dir)) if ckpt_dir else [],
            },
            args.out,
        )
    acc.wait_for_everyone()


if __name__ == "__main__":
    main()
