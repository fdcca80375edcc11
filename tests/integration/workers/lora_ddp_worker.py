"""LoRA learner updates of the tiny model on fixed batches, one process or DDP (``torchrun``, gloo).

``python -m tests.integration.workers.lora_ddp_worker OUT.pt`` runs 3 GRPO updates of 24 samples (dapo
loss, micro-batches of 4) of a float64 tiny model with rank-4 adapters on every linear layer; every rank
trains on ``learner.shard(batch)``. The main process saves the merged weights, the adapters and the metrics.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from accelerate import Accelerator  # noqa: E402

from pasodoble import lora  # noqa: E402
from pasodoble.config import GRPOConfig, LoRAConfig, RoleConfig  # noqa: E402
from pasodoble.learner import Learner, TrainSample  # noqa: E402
from pasodoble.testing.tiny import build_tiny_model, build_tiny_tokenizer, tiny_task_prompts  # noqa: E402


def batch(tok, n: int, seed: int) -> list[TrainSample]:
    g = torch.Generator().manual_seed(seed)
    prompts = tiny_task_prompts(tok, 4)
    adv = torch.randn(n, generator=g).view(-1, 6)
    adv = (adv - adv.mean(1, keepdim=True)).flatten().tolist()
    out = []
    for i in range(n):
        length = int(torch.randint(1, 9, (1,), generator=g))
        comp = torch.randint(3, len(tok), (length,), generator=g).tolist()
        out.append(TrainSample(prompts[(i // 6) % 4], comp, adv[i]))
    return out


def main() -> None:
    torch.set_num_threads(1)
    acc = Accelerator(cpu=True)
    tok = build_tiny_tokenizer()
    torch.manual_seed(0)  # the adapters' A matrices: the same on every process
    model = lora.wrap(
        build_tiny_model(tok, seed=0, dtype=torch.float64), LoRAConfig(roles=["solver"], rank=4)
    )
    role = RoleConfig(learning_rate=1e-2, micro_batch_size=4, max_grad_norm=1.0)
    learner = Learner(
        "solver", model, tok, role, GRPOConfig(loss_type="dapo"), acc, temperature=1.0, max_new_tokens=8
    )
    history = [learner.update(learner.shard(batch(tok, 24, seed=u))) for u in range(3)]
    merged = learner.full_state_dict()
    if acc.is_main_process:
        torch.save(
            {
                "world": acc.num_processes,
                "merged": merged,
                "adapters": {k: v.clone() for k, v in lora.adapter_state_dict(learner.peft_model).items()},
                "metrics": history,
            },
            sys.argv[1],
        )
    acc.wait_for_everyone()


if __name__ == "__main__":
    main()
