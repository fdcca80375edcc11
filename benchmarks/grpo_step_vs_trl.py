"""One GRPO step (generate + score + update) with PasoDoble's learner/backend vs TRL's GRPOTrainer, on CPU.

Same tiny model (``pasodoble.tiny``, ~0.9 M parameters, seed 0), same chat prompts, group size
6, 64 new tokens at temperature 0.6, same reward ('a 7 within the first 5 completion tokens'), dr_grpo
loss, beta 0, one optimizer step per batch. TRL's step is timed between the trainer's
``on_step_begin`` and ``on_step_end`` callbacks (its generation, scoring and update all happen
inside); ours around ``tiny_grpo_step``. To expose both to the same load from other processes, the
two alternate: after each TRL step one of ours runs (from ``on_step_end``, outside TRL's window).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/grpo_step_vs_trl.py [--steps 20] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

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

GROUP, NEW_TOKENS, TEMPERATURE, LR = 6, 64, 0.6, 1e-4


class Ours:
    """PasoDoble's learner and backend on the task; ``step()`` runs one GRPO step, returns seconds."""

    def __init__(self) -> None:
        tok = build_tiny_tokenizer()
        role = RoleConfig(learning_rate=LR, micro_batch_size=GROUP)
        self.learner = Learner(
            "solver", build_tiny_model(tok, seed=0), tok, role, GRPOConfig(), Accelerator(cpu=True),
            temperature=TEMPERATURE, max_new_tokens=NEW_TOKENS,
        )  # fmt: skip
        self.backend = HFBackend(self.learner.unwrapped_model, tok)
        self.prompts = tiny_task_prompts(tok, 8)
        self.reward = lambda ids: digit_reward(tok, ids)
        self.n = 0

    def step(self) -> float:
        params = SamplingParams(temperature=TEMPERATURE, max_new_tokens=NEW_TOKENS, n=GROUP, seed=self.n)
        prompt = [self.prompts[self.n % len(self.prompts)]]
        self.n += 1
        start = time.perf_counter()
        tiny_grpo_step(self.learner, self.backend, prompt, params, self.reward)
        return time.perf_counter() - start


def run_interleaved(steps: int, warmup: int) -> tuple[list[float], list[float]]:
    """TRL trains ``warmup + steps`` steps; after each, one of ours runs. Returns (ours, trl) times."""
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig as TRLConfig
    from trl import GRPOTrainer

    tok = build_tiny_tokenizer()
    texts = [tok.decode(p) for p in tiny_task_prompts(tok, 8)]
    dataset = Dataset.from_dict({"prompt": texts * 64})

    def reward(completions, **kwargs):
        return [digit_reward(tok, tok(c, add_special_tokens=False).input_ids) for c in completions]

    ours = Ours()

    class Timer(TrainerCallback):
        def __init__(self):
            self.trl_times, self.our_times, self._start = [], [], 0.0

        def on_step_begin(self, args, state, control, **kwargs):
            self._start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.trl_times.append(time.perf_counter() - self._start)
            self.our_times.append(ours.step())

    timer = Timer()
    with tempfile.TemporaryDirectory() as out:
        args = TRLConfig(
            output_dir=out, use_cpu=True, per_device_train_batch_size=GROUP, num_generations=GROUP,
            max_completion_length=NEW_TOKENS, temperature=TEMPERATURE, top_k=0, learning_rate=LR, beta=0.0,
            loss_type="dr_grpo", max_steps=warmup + steps, logging_steps=10_000, save_strategy="no",
            report_to="none", disable_tqdm=True, seed=0, bf16=False, dataloader_num_workers=0,
        )  # fmt: skip
        trainer = GRPOTrainer(
            model=build_tiny_model(tok, seed=0), reward_funcs=reward, args=args, train_dataset=dataset,
            processing_class=tok, callbacks=[timer],
        )  # fmt: skip
        trainer.train()
    return timer.our_times[warmup:], timer.trl_times[warmup:]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20, help="timed steps per implementation")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads for both")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ours_times, trl_times = run_interleaved(args.steps, args.warmup)
    m_ours, m_trl = statistics.median(ours_times), statistics.median(trl_times)
    print(
        f"threads={args.threads} group={GROUP} new_tokens={NEW_TOKENS} steps={args.steps} (median of timed steps)"
    )
    print(f"pasodoble step: {m_ours:.3f} s")
    print(f"trl GRPOTrainer step: {m_trl:.3f} s")
    print(f"ratio pasodoble / trl: {m_ours / m_trl:.2f}x")
    ratios = [a / b for a, b in zip(ours_times, trl_times, strict=True)]
    print(f"median of per-pair ratios: {statistics.median(ratios):.2f}x")


if __name__ == "__main__":
    main()
