"""DeepSpeed check worker: GRPO learner updates of the tiny model on a fixed batch, then save parameters.

``--strategy none`` runs the plain single-process ``Learner`` (``Accelerator(cpu=True)``);
``--strategy deepspeed_zero2`` builds the ``Accelerator`` from ``topology.accelerator_kwargs`` (a
``DeepSpeedPlugin`` with ZeRO stage 2) and must be started under ``torchrun`` (DeepSpeed's CPU
accelerator, ``DS_ACCELERATOR=cpu``, gloo). Every rank builds the same batch of ``TrainSample``s from a
fixed seed and trains on ``learner.shard(batch)``. The model is float32 and the optimizer torch's
AdamW (DeepSpeed wraps it in its ZeRO-2 optimizer, which keeps fp32 master partitions). Usage:
``deepspeed_worker.py OUT.pt --strategy deepspeed_zero2 --updates 3 --micro-batch-size 4``.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from accelerate import Accelerator  # noqa: E402

from pasodoble.config import Config, GRPOConfig, RoleConfig  # noqa: E402
from pasodoble.learner import Learner, TrainSample  # noqa: E402
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
    ap.add_argument("--strategy", default="none", choices=("none", "deepspeed_zero2"))
    ap.add_argument("--updates", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=24)
    ap.add_argument("--micro-batch-size", type=int, default=4)
    ap.add_argument("--loss-type", default="dapo")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--max-grad-norm", type=float, default=1.0)
    ap.add_argument("--steps-per-batch", type=int, default=1)
    ap.add_argument("--warmup-steps", type=int, default=0)
    ap.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    args = ap.parse_args()
    torch.set_num_threads(1)

    if args.strategy == "none":
        acc = Accelerator(cpu=True)
    else:
        from accelerate.utils import InitProcessGroupKwargs

        from pasodoble.topology import accelerator_kwargs

        cfg = Config()
        cfg.distributed.strategy = args.strategy
        # cpu=True would turn DeepSpeed off (accelerate uses it only off-CPU); without CUDA accelerate
        # then finds no backend and counts one process, so name gloo (DeepSpeed's CPU communicator).
        gloo = InitProcessGroupKwargs(backend="gloo")
        acc = Accelerator(kwargs_handlers=[gloo], **accelerator_kwargs(cfg))
    tok = build_tiny_tokenizer()
    model = build_tiny_model(tok, seed=0, dtype=getattr(torch, args.dtype))
    init = {k: v.detach().clone() for k, v in model.state_dict().items()}
    role = RoleConfig(
        learning_rate=args.lr,
        micro_batch_size=args.micro_batch_size,
        steps_per_batch=args.steps_per_batch,
        max_grad_norm=args.max_grad_norm,
        warmup_steps=args.warmup_steps,
    )
    start = time.perf_counter()
    learner = Learner(
        "solver",
        model,
        tok,
        role,
        GRPOConfig(loss_type=args.loss_type),
        acc,
        temperature=1.0,
        max_new_tokens=8,
    )
    init_s = time.perf_counter() - start
    history = []
    start = time.perf_counter()
    for u in range(args.updates):
        batch = fixed_batch(tok, args.batch_size, seed=u)
        metrics = learner.update(learner.shard(batch))
        history.append(metrics)
        if acc.is_main_process:
            print(
                f"update {u} world {acc.num_processes} {acc.distributed_type} loss {metrics['loss']:.6e} "
                f"grad_norm {metrics['grad_norm']:.6f} lr {metrics['lr']:.2e}"
            )
    update_s = time.perf_counter() - start
    if acc.is_main_process:
        print(f"init {init_s:.1f} s, {args.updates} updates {update_s:.1f} s")
        params = {k: v.detach().clone() for k, v in learner.unwrapped_model.state_dict().items()}
        torch.save(
            {
                "params": params,
                "init": init,
                "metrics": history,
                "distributed_type": str(acc.distributed_type),
                "world": acc.num_processes,
                "step": learner.step,
            },
            args.out,
        )
    acc.wait_for_everyone()


if __name__ == "__main__":
    main()
