"""GPU smoke run: 5 online dual-play steps of the toy models per rollout backend, with throughput and memory.

    python scripts/gpu_smoke.py [--device cuda|cpu] [--steps 5] [--out runs/gpu_smoke]

Trains the shipped toy models (``pasodoble/assets/toy``: the cold-start Proposer and Solver, which write
valid problems and answer them, so steps train) with the demo's settings, in bf16 compute on CUDA, with
the transformers backends ``hf`` and ``hf_batched`` and, when vllm is importable and the device is CUDA,
the vLLM backend (colocated). Prints per backend: updates made (must be > 0), generation tokens/s
(completion tokens counted at the backend / generation seconds), training tokens/s (``proposer/tokens`` +
``solver/tokens`` / ``time/update_*`` from metrics.jsonl) and peak GPU memory. ``--device cpu`` runs the
same path in float32 on CPU. The full prepared GPU check is ``scripts/gpu_check.sh``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import torch  # noqa: E402

from pasodoble.rollout import GenerationBackend, make_backend  # noqa: E402
from pasodoble.topology import engine_context_length  # noqa: E402
from pasodoble.train import run_training  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


class CountingBackend(GenerationBackend):
    """Wraps a backend; counts completion tokens and generation seconds; the rest of the lifecycle is the
    inner backend's."""

    def __init__(self, inner, counter: dict) -> None:
        self.inner, self.counter = inner, counter

    def generate(self, prompts, params):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = self.inner.generate(prompts, params)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.counter["seconds"] += time.perf_counter() - t0
        self.counter["tokens"] += sum(len(c.completion_ids) for g in out for c in g)
        return out

    def sync_weights(self, model):
        self.inner.sync_weights(model)

    def pop_sync_seconds(self) -> float:
        return self.inner.pop_sync_seconds()

    def hold(self) -> None:
        self.inner.hold()

    def local(self) -> GenerationBackend:
        return self.inner.local()

    def close(self) -> None:
        self.inner.close()


def run_backend(backend: str, device: str, steps: int, out: Path) -> dict:
    from pasodoble.toy.demo import cache_dir, demo_config, models_dir, world_data

    dtype = "bfloat16" if device == "cuda" else "float32"
    overrides = [
        f"model.dtype={dtype}",
        f"run.device={device}",
        "run.progress=false",
        "run.checkpoint_every=0",
        "eval.every=0",
        f"rollout.backend={backend}",
    ]
    if backend == "vllm":
        overrides += ["vllm.gpu_memory_utilization=0.2", "vllm.enforce_eager=true"]
    heldout, knowledge = world_data(cache_dir() / "data")
    cfg = demo_config(out, 0, models_dir(), knowledge, heldout, steps, None, overrides)
    counter = {"tokens": 0, "seconds": 0.0}

    def factory(role, model, tokenizer):
        inner = make_backend(
            backend,
            model,
            tokenizer,
            generation_batch_size=cfg.rollout.generation_batch_size,
            compute_dtype=getattr(torch, dtype),
            role=role,
            vllm_cfg=cfg.vllm,
            engine_dtype=cfg.model.dtype,
            seed=cfg.run.seed,
            max_model_len=engine_context_length(cfg),
        )
        return CountingBackend(inner, counter)

    if out.exists():
        shutil.rmtree(out)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    summary = run_training(cfg, backend_factory=factory)
    wall = time.perf_counter() - t0
    rows = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    train_tokens = sum(r.get("proposer/tokens", 0) + r.get("solver/tokens", 0) for r in rows)
    train_s = sum(r.get("time/update_proposer", 0) + r.get("time/update_solver", 0) for r in rows)
    return {
        "backend": backend,
        "steps": summary["steps"],
        "updates": summary["updates"],
        "wall_s": round(wall, 2),
        "generation_tokens": counter["tokens"],
        "generation_tokens_per_s": round(counter["tokens"] / max(counter["seconds"], 1e-9), 1),
        "training_tokens": int(train_tokens),
        "training_tokens_per_s": round(train_tokens / train_s, 1) if train_s > 0 else None,
        "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 3) if device == "cuda" else None,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--out", default="runs/gpu_smoke")
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print(
            "gpu_smoke: no CUDA device visible (torch.cuda.is_available() is False); "
            "run on a GPU machine or pass --device cpu",
            file=sys.stderr,
        )
        return 2
    backends = ["hf", "hf_batched"]
    if args.device == "cuda":
        try:
            import vllm  # noqa: F401

            backends.append("vllm")
        except ImportError:
            print("gpu_smoke: vllm not importable: skipping the vLLM backend", flush=True)
    results = []
    for b in backends:
        res = run_backend(b, args.device, args.steps, Path(args.out) / b)
        results.append(res)
        print(json.dumps(res), flush=True)
    print(f"{'backend':8} {'steps':>5} {'updates':>7} {'gen tok/s':>10} {'train tok/s':>11} {'peak GiB':>9}")
    for r in results:
        print(
            f"{r['backend']:8} {r['steps']:>5} {r['updates']:>7} {r['generation_tokens_per_s']:>10} "
            f"{str(r['training_tokens_per_s']):>11} {str(r['peak_memory_gib']):>9}"
        )
    bad = [r for r in results if r["steps"] != args.steps or r["generation_tokens"] == 0 or r["updates"] == 0]
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
