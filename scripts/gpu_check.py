"""The one prepared GPU check: what a real run on one GPU needs, measured, one process per check.

    bash scripts/gpu_check.sh [--device cuda|cpu] [--tiny] [--wheels DIR] [--out PATH] [--only NAME ...]
                              [--cap NAME=SECONDS ...] [--budget SECONDS] [--peak-tflops T]

Run it through ``scripts/gpu_check.sh``, which resolves the paths, puts the project on ``PYTHONPATH`` and
the carried wheels in a temporary ``--target`` directory (it installs nothing into the machine's
environment). The time estimates per check, for one H200, and their basis are in that script's header.

How it runs. This process (the orchestrator) imports no torch: it starts each check as its own process
(``gpu_check.py --child NAME``) in a process group of its own, with its own time cap (``CAPS``, changed with
``--cap NAME=SECONDS``), shortened so the whole stays inside ``--budget`` (default 480 s, the sum of the caps). At the cap it
asks the check for its Python stacks (SIGUSR1, faulthandler) and kills its process group. After every
check, and before each one starts (status ``running``), the JSON file ``--out`` (default ``gpu_check.json``
in the current directory) is rewritten atomically (a temporary file, then a rename), so a hang, a crash, an
overrun or the whole script being killed keeps every figure measured before it and names what did not run.
The same JSON is printed on stdout at the end; the checks' own output goes to stderr, prefixed by their
name.

JSON: ``device``, ``tiny``, ``budget_s``, ``setup`` (the wheels route's outcome), ``checks`` (one entry per
check, in run order: ``status`` = ``ok`` / ``failed`` / ``timed_out`` / ``not_run`` (``running`` while it
runs), ``seconds`` (wall time of its process, start-up included), ``cap_s``, ``error`` (one line, when not
ok), ``log_tail`` (its last output, when not ok), ``result`` (its figures, ``goal`` and ``met``)), and
``summary`` (``finished``, the names per status, ``goals_met``, ``seconds``). Exit status 0 when every
check is ok, 1 otherwise, 2 when no CUDA device is visible for ``--device cuda``.

Checks (run in this order):

- ``environment``: torch, transformers, accelerate, math-verify and PasoDoble (imported from ``src/``), the
  device's name, memory and datasheet dense bf16 peak, and a measured bf16 matrix product (TFLOP/s).
- ``precision``: the share of the Solver's weights that one dual-play step (one AdamW update at lr 1e-6)
  changes, through the trainer (``train.Trainer``, scripted rollouts, ``model.dtype=bfloat16``), on a
  random-init Qwen3-1.7B-shaped model, twice: with the trainer's float32 master weights under bf16
  autocast, and with the weights held in bfloat16 (the contrast: the loader hands the trainer bf16 weights
  and the learner's upcast of 16-bit masters is switched off; measured at 1.75% on an H200 against
  99.9%). **Fails** unless the float32-master share is
  > 0.9 and > 10x the bf16-held share; both shares are reported either way.
- ``logprobs``: the largest difference between the generation backends' per-token log-probabilities
  (``hf`` and ``hf_batched``, bf16 compute over float32 weights) and the learner's on the same tokens.
- ``learner``: ``Learner.update`` on 48 sequences of 2,304 tokens, micro-batch 4, activation
  checkpointing, bf16 compute: tokens/s, achieved TFLOP/s and MFU. MFU = model FLOPs per second over the
  datasheet dense bf16 peak of the device (989 TFLOP/s for H100 SXM and H200; ``PEAKS``; an unknown device
  gets ``mfu: null``), with model FLOPs per token = 6·N + 12·L·H·Q·T (PaLM, Chowdhery et al. 2022,
  appendix B; nanoGPT's ``estimate_mfu``): N the parameters that multiply (the tied embedding counted once,
  as the output head; an untied input embedding left out), L layers, H attention heads, Q head dimension,
  T the sequence length; the attention term counts the full T×T score matrix (not halved for the causal
  mask), and the recomputed forward of activation checkpointing is not counted (that would be hardware
  FLOPs). Issue 14's figure (8·N per token over a measured 790 TFLOP/s) is reported beside it as
  ``mfu_issue14_definition``: for 6·N alone it reads (8/6)·(989/790) ≈ 1.67x this MFU. Goal: MFU >= 0.27
  (issue 14's 0.45 converted to this definition); a speed goal, reported, not failed.
- ``decode``: ms per decode step at batch 64 x 256 new tokens for ``hf`` and ``hf_batched``, with the CUDA
  graph captures timed between device synchronizations and taken out of the decode time. Goal:
  ``hf_batched`` <= 5 ms (a speed goal, reported).
- ``fsdp2_resume``: the trainer under ``distributed.strategy=fsdp2`` in one process (set up as
  ``torchrun --nproc_per_node 1`` sets it up, through the environment, so that the cap's kill reaches it),
  4 steps with checkpoints at 2 and 4, then the same directory resumed from its step-2 checkpoint, both with
  ``torch.use_deterministic_algorithms(True, warn_only=True)`` and ``CUBLAS_WORKSPACE_CONFIG=:4096:8``. The
  model has Qwen3-0.6B's layer geometry (hidden 1024, 16 heads of 128, 8 KV heads, MLP 3072) with 2
  decoder layers and the tiny tokenizer's vocabulary (~33 M parameters a role, ~0.8 GB a checkpoint).
  Reported: the largest absolute difference between the final weights of the two runs, the updates made
  after the resume (and by the uninterrupted run over the same steps), the ops that warned of no
  deterministic implementation. **Fails** unless the final weights are bitwise equal and the resumed run
  made updates.
- ``toy_true_answer``: the toy world's true-answer diagnosis (``pasodoble demo`` with every valid question
  relabelled by its true value), 20 steps (dual-play moved held-out pass@1 by about +37 points in 20 steps
  on CPU); held-out pass@1 must improve (a goal, reported).

``--tiny`` runs every check at toy sizes (the tiny model; what CI runs with ``--device cpu``): its figures
check the code path, not a GPU. Test hooks: ``PASODOBLE_GPU_CHECK_HANG=NAME[,NAME]`` makes those checks
sleep forever (the cap must kill them), ``PASODOBLE_GPU_CHECK_CRASH=NAME[,NAME]`` makes them die by SIGSEGV.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime
import importlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(__file__).resolve()
SHAPE = "qwen3-1.7b"

# Each check's time cap in seconds (one H200; estimates and their basis: scripts/gpu_check.sh's header).
# Their sum is the default budget (8 minutes): no cap is cut, and no run, however it goes, takes longer.
CAPS: dict[str, float] = {
    "environment": 30,
    "precision": 70,
    "logprobs": 45,
    "learner": 60,
    "decode": 45,
    "fsdp2_resume": 90,
    "toy_true_answer": 140,
}
DEFAULT_BUDGET = 480.0  # the whole run, every cap included: 8 minutes
MIN_START_S = 5.0  # a check is not started with less of the budget left
# checks whose goal is a correctness assertion: an unmet goal makes them "failed"
ASSERTED = ("precision", "fsdp2_resume")

# Datasheet dense (no sparsity) bf16 tensor-core peaks, TFLOP/s, matched on the device name in this order.
PEAKS: tuple[tuple[tuple[str, ...], float], ...] = (
    (("h100", "pcie"), 756.0),
    (("h100", "nvl"), 835.0),
    (("h200", "nvl"), 835.0),
    (("h100",), 989.0),  # SXM ("NVIDIA H100 80GB HBM3")
    (("h200",), 989.0),  # SXM ("NVIDIA H200")
    (("a100",), 312.0),
)


def datasheet_peak_tflops(device_name: str | None) -> float | None:
    """The dense bf16 peak of a device from its name (``PEAKS``); None for a device not listed."""
    name = (device_name or "").lower()
    for words, peak in PEAKS:
        if all(w in name for w in words):
            return peak
    return None


def model_flops_per_token(model, seq_len: int) -> dict[str, float]:
    """PaLM's model FLOPs per token, 6·N + 12·L·H·Q·T (module docstring), and its parts."""
    cfg = model.config
    params = sum(p.numel() for p in model.parameters())
    embed = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    n = params - (0 if embed is head else embed.numel())
    layers, heads = cfg.num_hidden_layers, cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    attention = 12 * layers * heads * head_dim * seq_len
    return {"parameters": params, "matmul_parameters": n, "dense": 6 * n, "attention": attention}


# --------------------------------------------------------------------------------------------------
# Helpers of the checks (run in the check's own process; torch is imported there)


def _torch():
    import torch

    return torch


def make_model(shape: str, device: str, *, seed: int = 0, dtype=None):
    """A random-init model ('tiny', a ``rollout.bench.SHAPES`` name, or 'fsdp2-small') and the tiny
    tokenizer (token ids only; no download). float32 unless ``dtype``."""
    torch = _torch()
    from pasodoble.rollout.bench import random_model

    if shape == "fsdp2-small":
        from transformers import Qwen3Config, Qwen3ForCausalLM

        from pasodoble.tiny import build_tiny_tokenizer
        from pasodoble.topology import KNOWN_ARCHITECTURES

        tok = build_tiny_tokenizer()
        a = KNOWN_ARCHITECTURES["Qwen/Qwen3-0.6B-Base"]
        config = Qwen3Config(
            vocab_size=len(tok),
            hidden_size=a.hidden_size,
            intermediate_size=a.intermediate_size,
            num_hidden_layers=2,
            num_attention_heads=a.num_heads,
            num_key_value_heads=a.num_kv_heads,
            head_dim=a.head_dim,
            tie_word_embeddings=True,
            max_position_embeddings=4096,
            attn_implementation="sdpa",
            architectures=["Qwen3ForCausalLM"],
        )
        torch.manual_seed(seed)
        with torch.device(device):
            model = Qwen3ForCausalLM(config)
        model = model.eval()
    else:
        model, tok = random_model(shape, device=device, dtype=torch.float32, seed=seed)
    if dtype is not None:
        model = model.to(dtype)
    return model, tok


@contextlib.contextmanager
def patched_loader(shape: str, device: str, *, held_dtype=None):
    """Make the trainer load a random-init model of ``shape`` for every role (same seed, same weights).

    The trainer asks for float32 weights (its masters; anything else raises here). ``held_dtype`` hands it
    weights of that dtype instead and switches off the training layer's upcast of 16-bit masters
    (``trainable.upcast_master``): the precision check's contrast, the trainer's own step on weights held in
    the compute dtype."""
    torch = _torch()
    import pasodoble.trainable as trainable_mod

    train_mod = importlib.import_module("pasodoble.train")  # `import pasodoble.train as` gives pd.train

    original = train_mod.load_model_and_tokenizer
    upcast = trainable_mod.upcast_master

    def load(name_or_path, model_cfg, *, seed=0, dtype=None, field=None, progress=True):
        if dtype not in (None, "float32"):
            raise AssertionError(f"the trainer asked for {dtype} weights; its masters must be float32")
        return make_model(shape, device, seed=seed, dtype=held_dtype or torch.float32)

    train_mod.load_model_and_tokenizer = load
    if held_dtype is not None:
        trainable_mod.upcast_master = lambda model: model
    try:
        yield
    finally:
        train_mod.load_model_and_tokenizer = original
        trainable_mod.upcast_master = upcast


def free(device: str) -> None:
    import gc

    gc.collect()
    if device == "cuda":
        _torch().cuda.empty_cache()


def sync(device: str) -> None:
    if device == "cuda":
        _torch().cuda.synchronize()


def tiny_overrides(device: str, out: Path, dtype: str, lr: float) -> list[str]:
    return [
        "model.name_or_path=tiny",
        f"model.dtype={dtype}",
        f"run.device={device}",
        f"run.out_dir={out}",
        "run.progress=false",
        "run.checkpoint_every=0",
        f"proposer.learning_rate={lr}",
        f"solver.learning_rate={lr}",
        "proposer.group_size=4",
        "solver.group_size=4",
        "rollout.max_new_tokens=32",
        "knowledge.source=tiny",
        "knowledge.max_snippet_tokens=48",
        "grader.workers=1",
        "distributed.check_memory=false",
    ]


def device_name(device: str) -> str:
    if device == "cuda":
        return _torch().cuda.get_device_name(0)
    return platform.processor() or platform.machine() or "cpu"


# --------------------------------------------------------------------------------------------------
# Checks: each returns its figures (a dict with "goal" and "met" where it has a goal)


def check_environment(args) -> dict[str, Any]:
    torch = _torch()
    import accelerate
    import transformers

    import pasodoble

    if args.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"no CUDA device visible to torch {torch.__version__} (CUDA {torch.version.cuda}); "
            "run on a GPU machine or pass --device cpu"
        )
    try:
        import math_verify

        mv = f"importable from {Path(math_verify.__file__).resolve().parent.parent}"
    except ImportError as exc:
        mv = f"not importable: {exc}"
    out: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "transformers": transformers.__version__,
        "accelerate": accelerate.__version__,
        "math_verify": mv,
        "pasodoble_from": str(Path(pasodoble.__file__).resolve().parent),
        "device_name": device_name(args.device),
    }
    if args.device == "cuda":
        props = torch.cuda.get_device_properties(0)
        out["capability"] = f"{props.major}.{props.minor}"
        out["memory_gib"] = round(props.total_memory / 2**30, 1)
        out["multiprocessors"] = props.multi_processor_count
    out["peak_bf16_dense_tflops_datasheet"] = (
        datasheet_peak_tflops(out["device_name"]) if args.device == "cuda" else None
    )
    # a measured bf16 matrix product, for scale (not the MFU's denominator)
    n = 1024 if args.tiny else 8192
    a = torch.randn(n, n, device=args.device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=args.device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    sync(args.device)
    reps = 3 if args.tiny else 20
    started = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(args.device)
    seconds = time.perf_counter() - started
    out["matmul_bf16"] = {"n": n, "tflops": round(2 * n**3 * reps / seconds / 1e12, 2)}
    return out


def _share_moved(trainer, device: str) -> tuple[float, int, int]:
    """Run online steps until the Solver updates once; the share of its weights that changed."""
    model = trainer.engine.solver.learner.unwrapped_model
    params = list(dict.fromkeys(model.parameters()))  # a tied weight once
    before = [p.detach().to("cpu", copy=True) for p in params]
    steps = 0
    for step in range(5):  # the scripted Proposer's first steps may all be skipped (no band question)
        steps = step + 1
        if trainer.engine.online_step(step).trained:
            break
    moved = total = 0
    for p, b in zip(params, before, strict=True):
        moved += int((p.detach() != b.to(p.device)).sum())
        total += p.numel()
    return moved / total, steps, total


def check_precision(args) -> dict[str, Any]:
    torch = _torch()
    from pasodoble.config import load_config
    from pasodoble.testing.scripted import scripted_factory
    from pasodoble.train import Trainer

    shape = "tiny" if args.tiny else SHAPE
    runs = {"fp32_masters": None, "bf16_held": torch.bfloat16}
    shares: dict[str, float] = {}
    steps: dict[str, int] = {}
    dtypes: dict[str, str] = {}
    params = 0
    for label, held in runs.items():
        out = Path(tempfile.mkdtemp(prefix=f"precision-{label}-", dir=args.work))
        cfg = load_config(None, tiny_overrides(args.device, out, "bfloat16", 1e-6))
        with patched_loader(shape, args.device, held_dtype=held):
            trainer = Trainer(cfg, out, resume=False, backend_factory=scripted_factory)
        try:
            weights = next(trainer.engine.solver.learner.unwrapped_model.parameters())
            dtypes[label] = str(weights.dtype).removeprefix("torch.")
            wanted = "bfloat16" if held is not None else "float32"
            if dtypes[label] != wanted:
                raise AssertionError(f"{label}: the Solver's weights are {dtypes[label]}, not {wanted}")
            shares[label], steps[label], params = _share_moved(trainer, args.device)
        finally:
            trainer.close()
            del trainer
            free(args.device)
        shutil.rmtree(out, ignore_errors=True)
        print(f"precision: {label} ({dtypes[label]} weights): share moved {shares[label]:.5f}", flush=True)
    fp32, held = shares["fp32_masters"], shares["bf16_held"]
    ratio = fp32 / held if held else None
    met = fp32 > 0.9 and (held == 0 or fp32 > 10 * held)
    return {
        "shape": shape,
        "parameters": params,
        "learning_rate": 1e-6,
        "compute_dtype": "bfloat16",
        "weights_dtype": dtypes,
        "share_moved_fp32_masters": round(fp32, 5),
        "share_moved_bf16_held": round(held, 5),
        "ratio_fp32_to_bf16_held": round(ratio, 2) if ratio is not None else None,
        "steps_until_first_update": steps,
        "goal": "fp32-master share > 0.9 and > 10x the bf16-held share after one update at lr 1e-6",
        "met": met,
    }


def check_logprobs(args) -> dict[str, Any]:
    torch = _torch()
    from pasodoble.config import GRPOConfig, RoleConfig
    from pasodoble.learner import Learner, TrainSample
    from pasodoble.parallel import Parallelism
    from pasodoble.rollout import make_backend
    from pasodoble.rollout.base import SamplingParams

    shape = "tiny" if args.tiny else SHAPE
    model, tok = make_model(shape, args.device)
    learner = Learner(
        "solver",
        model,
        tok,
        RoleConfig(micro_batch_size=8),
        GRPOConfig(),
        temperature=1.0,
        max_new_tokens=64,
        parallelism=Parallelism("none", torch.bfloat16, 1),
    )
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(10, len(tok) - 10, (32,), generator=g).tolist() for _ in range(8)]
    params = SamplingParams(temperature=1.0, max_new_tokens=64, n=2, seed=0, return_logprobs=True)
    out: dict[str, Any] = {"shape": shape, "compute_dtype": "bfloat16", "weights_dtype": "float32"}
    for name in ("hf", "hf_batched"):
        backend = make_backend(name, learner.unwrapped_model, tok, compute_dtype=torch.bfloat16)
        groups = backend.generate(prompts, params)
        completions = [c for grp in groups for c in grp]
        samples = [TrainSample(c.prompt_ids, c.completion_ids, 0.0) for c in completions]
        mine = learner.logprobs(samples)
        diffs = [
            abs(a - b)
            for c, lps in zip(completions, mine, strict=True)
            for a, b in zip(c.logprobs, lps, strict=True)
        ]
        out[name] = {
            "tokens": len(diffs),
            "max_abs_diff": round(max(diffs), 5),
            "mean_abs_diff": round(sum(diffs) / len(diffs), 6),
        }
        del backend
        free(args.device)
    return out


def check_learner(args) -> dict[str, Any]:
    torch = _torch()
    from pasodoble.config import GRPOConfig, RoleConfig
    from pasodoble.learner import Learner, TrainSample
    from pasodoble.parallel import Parallelism

    shape = "tiny" if args.tiny else SHAPE
    n, prompt_len, comp_len, mbs = (8, 16, 48, 4) if args.tiny else (48, 256, 2048, 4)
    seq = prompt_len + comp_len
    model, tok = make_model(shape, args.device)
    flops = model_flops_per_token(model, seq)
    learner = Learner(
        "solver",
        model,
        tok,
        RoleConfig(learning_rate=1e-6, micro_batch_size=mbs),
        GRPOConfig(),
        temperature=1.0,
        max_new_tokens=comp_len,
        gradient_checkpointing=True,
        parallelism=Parallelism("none", torch.bfloat16, 1),
    )
    g = torch.Generator().manual_seed(0)

    def batch() -> list[TrainSample]:
        adv = torch.randn(n, generator=g)
        return [
            TrainSample(
                torch.randint(10, len(tok) - 10, (prompt_len,), generator=g).tolist(),
                torch.randint(10, len(tok) - 10, (comp_len,), generator=g).tolist(),
                float(a),
            )
            for a in adv
        ]

    learner.update(batch())  # warm-up (allocator, kernels)
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    sync(args.device)
    started = time.perf_counter()
    metrics = learner.update(batch())
    sync(args.device)
    seconds = time.perf_counter() - started
    tokens = n * seq
    rate = tokens / seconds
    per_token = flops["dense"] + flops["attention"]
    achieved = per_token * rate / 1e12
    name = device_name(args.device)
    peak = args.peak_tflops or (datasheet_peak_tflops(name) if args.device == "cuda" else None)
    mfu = achieved / peak if peak else None
    return {
        "shape": shape,
        "device_name": name,
        "parameters": flops["parameters"],
        "matmul_parameters": flops["matmul_parameters"],
        "sequences": n,
        "tokens_per_sequence": seq,
        "micro_batch_size": mbs,
        "update_seconds": round(seconds, 3),
        "tokens_per_s": round(rate, 1),
        "model_flops_per_token": per_token,
        "attention_flops_per_token": flops["attention"],
        "achieved_tflops": round(achieved, 2),
        "peak_tflops": peak,
        "peak_source": "--peak-tflops" if args.peak_tflops else ("datasheet" if peak else None),
        "mfu": round(mfu, 4) if mfu is not None else None,
        "mfu_definition": "(6·N + 12·L·H·Q·T) per token x tokens/s over the dense bf16 peak (PaLM app. B)",
        "mfu_issue14_definition": round(8 * flops["parameters"] * rate / 790e12, 4),
        "grad_norm": round(float(metrics["grad_norm"]), 5),
        "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)
        if args.device == "cuda"
        else None,
        "goal": "MFU >= 0.27 (issue 14's 0.45 in its 8·P-over-790 definition, converted)",
        "met": mfu is not None and mfu >= 0.27,
    }


def check_decode(args) -> dict[str, Any]:
    """Each backend's decode ms per step; graph captures timed between device synchronizations (the
    backend's own ``capture_s`` starts its clock without one) and left out of the decode time."""
    torch = _torch()
    from pasodoble.rollout.base import SamplingParams
    from pasodoble.rollout.hf import HFBackend
    from pasodoble.rollout.hf_batched import HFBatchedBackend

    shape = "tiny" if args.tiny else SHAPE
    model, tok = make_model(shape, args.device)
    batch, new_tokens, prompt_tokens = (8, 32, 16) if args.tiny else (64, 256, 128)
    captured: list[float] = []
    original_capture = HFBatchedBackend._capture

    def timed_capture(self, *a, **kw):
        sync(args.device)
        started = time.perf_counter()
        try:
            return original_capture(self, *a, **kw)
        finally:
            sync(args.device)
            captured.append(time.perf_counter() - started)

    HFBatchedBackend._capture = timed_capture
    vocab = model.get_output_embeddings().weight.shape[0]
    gen = torch.Generator().manual_seed(0)
    prompts = torch.randint(3, vocab, (batch, prompt_tokens), generator=gen).tolist()
    never = [vocab]  # a stop id outside the vocabulary: every row runs to new_tokens
    out: dict[str, Any] = {
        "shape": shape,
        "batch": batch,
        "prompt_tokens": prompt_tokens,
        "new_tokens": new_tokens,
        "compute_dtype": "bfloat16",
        "weights_dtype": "float32",
    }
    try:
        for name, cls in (("hf", HFBackend), ("hf_batched", HFBatchedBackend)):
            backend = cls(
                model, tok, generation_batch_size=batch, eos_token_ids=never, compute_dtype=torch.bfloat16
            )
            backend.generate(prompts, SamplingParams(temperature=1.0, max_new_tokens=8, seed=0))  # warm-up
            captured.clear()
            sync(args.device)
            started = time.perf_counter()
            gens = backend.generate(
                prompts, SamplingParams(temperature=1.0, max_new_tokens=new_tokens, seed=0)
            )
            sync(args.device)
            seconds = time.perf_counter() - started
            stats = backend.last_stats
            forwards = max(1, stats["decode_steps"] - 1)
            capture_s = sum(captured)
            out[name] = {
                "decode_ms_per_step": round(1000 * (stats["decode_s"] - capture_s) / forwards, 3),
                "capture_s": round(capture_s, 3),
                "graphs": stats.get("graphs", 0),
                "prefill_s": round(stats["prefill_s"], 3),
                "seconds": round(seconds, 3),
                "tokens_per_s": round(sum(len(g[0].completion_ids) for g in gens) / seconds, 1),
                "graph_error": getattr(backend, "graph_error", None),
            }
            del backend
            free(args.device)
    finally:
        HFBatchedBackend._capture = original_capture
    ms = out["hf_batched"]["decode_ms_per_step"]
    out["goal"] = "hf_batched decode <= 5 ms per step at batch 64 (one H200)"
    out["met"] = ms <= 5.0
    return out


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_fsdp2_resume(args) -> dict[str, Any]:
    """An uninterrupted 4-step run (checkpoints at steps 2 and 4), then the same directory resumed from
    its step-2 checkpoint (the step-4 checkpoint and final models removed first): the resumed run must end
    with bitwise the same weights. Two launches, no copy of the checkpoints."""
    torch = _torch()
    from safetensors.torch import load_file

    from pasodoble.checkpoint import list_checkpoints, read_checkpoint_state

    work = Path(tempfile.mkdtemp(prefix="fsdp2-", dir=args.work))
    shape = "tiny" if args.tiny else "fsdp2-small"

    def launch(out: Path, *extra: str) -> dict[str, Any]:
        # what torchrun --nproc_per_node 1 gives its process, in this process group (the cap kills it)
        env = {
            **os.environ,
            "RANK": "0",
            "LOCAL_RANK": "0",
            "WORLD_SIZE": "1",
            "LOCAL_WORLD_SIZE": "1",
            "GROUP_RANK": "0",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(_port()),
            "CUBLAS_WORKSPACE_CONFIG": ":4096:8",
        }
        cmd = [sys.executable, str(SCRIPT), "--fsdp2-worker", str(out), "--device", args.device]
        cmd += ["--shape", shape, *extra]
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        if proc.returncode != 0:
            raise RuntimeError(
                f"FSDP2 run {' '.join(extra) or 'from scratch'} exited with {proc.returncode} (its output above)"
            )
        return json.loads(proc.stdout.strip().splitlines()[-1])

    run = work / "run"
    first = launch(run)
    final = {r: load_file(run / f"{r}_final" / "model.safetensors") for r in ("proposer", "solver")}
    checkpoints = list_checkpoints(run)
    state = read_checkpoint_state(checkpoints[0])["state"]
    at_resume = int(state["counters"]["updates"])
    size_gb = sum(f.stat().st_size for f in checkpoints[0].rglob("*") if f.is_file()) / 1e9
    for path in [checkpoints[-1], run / "proposer_final", run / "solver_final"]:
        shutil.rmtree(path)  # as if the run had been killed after its step-2 checkpoint
    resumed = launch(run, "--resume")
    max_diff = 0.0
    differing = 0
    for r in final:
        again = load_file(run / f"{r}_final" / "model.safetensors")
        if set(again) != set(final[r]):
            raise RuntimeError(f"{r}: the resumed run's final tensors are not the uninterrupted run's")
        for k, t in again.items():
            d = float((t.double() - final[r][k].double()).abs().max()) if t.numel() else 0.0
            max_diff = max(max_diff, d)
            differing += int(not torch.equal(t, final[r][k]))
    shutil.rmtree(work, ignore_errors=True)
    after = resumed["updates"] - at_resume
    equal = differing == 0
    return {
        "shape": shape,
        "parameters_per_role": first.get("parameters"),
        "steps": first["steps"],
        "resumed_from_step": int(state["counters"]["step"]),
        "updates_uninterrupted_after_step": first["updates"] - at_resume,
        "updates_after_resume": after,
        "checkpoint_gb": round(size_gb, 3),
        "checkpoint_layout": state["layout"],
        "deterministic_algorithms": True,
        "nondeterministic_op_warnings": sorted(
            set(first.get("nondeterministic", [])) | set(resumed.get("nondeterministic", []))
        ),
        "tensors_differing": differing,
        "max_abs_diff": max_diff,
        "bitwise_equal_after_resume": equal,
        "goal": "resumed from its step-2 checkpoint, the run ends bitwise equal; it makes updates after the resume",
        "met": equal and after > 0,
    }


def fsdp2_worker(args) -> int:
    """One process of ``check_fsdp2_resume``: the trainer under fsdp2 with the scripted backend."""
    import warnings

    torch = _torch()
    torch.use_deterministic_algorithms(True, warn_only=True)
    seen: list[str] = []
    show = warnings.showwarning

    def record(message, category, filename, lineno, file=None, line=None):
        text = str(message)
        if "deterministic" in text:
            seen.append(text.split("\n")[0][:200])
        show(message, category, filename, lineno, file, line)

    warnings.showwarning = record
    warnings.simplefilter("always")
    from pasodoble import distributed as dist
    from pasodoble.config import load_config
    from pasodoble.testing.scripted import scripted_factory
    from pasodoble.train import resume_training, run_training

    out = Path(args.fsdp2_worker)
    with contextlib.redirect_stdout(sys.stderr), patched_loader(args.shape, args.device):
        if args.resume:
            summary = resume_training(out, backend_factory=scripted_factory)
        else:
            overrides = tiny_overrides(args.device, out, "bfloat16", 1e-5) + [
                "distributed.strategy=fsdp2",
                "run.max_steps=4",
                "run.checkpoint_every=2",
                "run.keep_checkpoints=2",
                "run.seed=3",
            ]
            summary = run_training(load_config(None, overrides), backend_factory=scripted_factory)
    model, _ = make_model(args.shape, "cpu")
    summary["parameters"] = sum(p.numel() for p in dict.fromkeys(model.parameters()))
    summary["nondeterministic"] = sorted(set(seen))
    if dist.is_main():
        print(json.dumps(summary), flush=True)
    return 0


def check_toy_true_answer(args) -> dict[str, Any]:
    from pasodoble.toy.demo import run_demo
    from pasodoble.toy.family import evaluate, parse_canonical

    def true_answer(problem: str) -> str | None:
        expr = parse_canonical(problem.strip())
        return None if expr is None else str(evaluate(expr))

    out = Path(tempfile.mkdtemp(prefix="toy-", dir=args.work))
    steps = 2 if args.tiny else 20
    small = [
        "eval.every=0",
        "proposer.group_size=6",
        "proposer.micro_batch_size=6",
        "solver.group_size=4",
        "solver.max_new_tokens=64",
        "run.threads=1",
    ]
    small = small if args.tiny else []
    summary = run_demo(
        out,
        seed=0,
        steps=steps,
        overrides=[f"run.device={args.device}", "run.progress=false", *small],
        overwrite=True,
        relabel=true_answer,
        label="true-answer (diagnosis)",
        eval_limit=8 if args.tiny else None,
    )
    before = summary.get("accuracy_before")
    after = summary.get("accuracy_after")
    shutil.rmtree(out, ignore_errors=True)
    return {
        "steps": steps,
        "heldout_pass@1_before": before,
        "heldout_pass@1_after": after,
        "worked_share_before": summary.get("worked_share_before"),
        "worked_share_after": summary.get("worked_share_after"),
        "goal": f"held-out pass@1 improves after {steps} true-answer steps",
        "met": before is not None and after is not None and after > before,
    }


CHECKS = {
    "environment": check_environment,
    "precision": check_precision,
    "logprobs": check_logprobs,
    "learner": check_learner,
    "decode": check_decode,
    "fsdp2_resume": check_fsdp2_resume,
    "toy_true_answer": check_toy_true_answer,
}
assert list(CHECKS) == list(CAPS)


def _hooked(variable: str, name: str) -> bool:
    return name in {n.strip() for n in os.environ.get(variable, "").split(",") if n.strip()}


def run_child(args) -> int:
    """One check in this process: its figures (or its error) go to ``--result`` as JSON."""
    import faulthandler

    faulthandler.register(signal.SIGUSR1, all_threads=True)  # the orchestrator asks for stacks at the cap
    name = args.child
    result_path = Path(args.result)

    def write(payload: dict[str, Any]) -> None:
        tmp = result_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(payload, default=str))
        os.replace(tmp, result_path)

    if _hooked("PASODOBLE_GPU_CHECK_CRASH", name):
        print(f"{name}: PASODOBLE_GPU_CHECK_CRASH names this check: dying by SIGSEGV", flush=True)
        os.kill(os.getpid(), signal.SIGSEGV)
    if _hooked("PASODOBLE_GPU_CHECK_HANG", name):
        print(f"{name}: PASODOBLE_GPU_CHECK_HANG names this check: sleeping until killed", flush=True)
        while True:
            time.sleep(3600)
    started = time.perf_counter()
    try:
        torch = _torch()
        if (
            args.device == "cpu"
        ):  # toy sizes: one thread (models.set_cpu_threads: 2 are 20-90x slower when shared)
            torch.set_num_threads(1)
        result = CHECKS[name](args)
    except Exception as exc:  # noqa: BLE001 - reported as this check's one-line error
        traceback.print_exc()
        line = " ".join(f"{type(exc).__name__}: {exc}".split())
        write({"error": line[:500], "where": traceback.format_exc(limit=4)[-1500:]})
        return 1
    result["check_s"] = round(time.perf_counter() - started, 2)
    write({"result": result})
    return 0


# --------------------------------------------------------------------------------------------------
# The orchestrator (no torch here)


class Report:
    def __init__(self, path: Path, names: list[str], args, caps: dict[str, float]):
        self.path = path
        self.started = time.perf_counter()
        self.data: dict[str, Any] = {
            "started_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "device": args.device,
            "device_name": None,
            "tiny": args.tiny,
            "budget_s": args.budget,
            "command": " ".join(sys.argv),
            "setup": {
                "pythonpath": os.environ.get("PYTHONPATH", ""),
                "wheels": os.environ.get("PASODOBLE_GPU_CHECK_WHEELS") or None,
                "error": os.environ.get("PASODOBLE_GPU_CHECK_SETUP_ERROR") or None,
            },
            "checks": {n: {"status": "not_run", "cap_s": caps[n]} for n in names},
            "summary": {},
        }
        self.summarize(finished=False)

    def summarize(self, *, finished: bool) -> None:
        checks = self.data["checks"]
        by = {s: [n for n, c in checks.items() if c["status"] == s] for s in ("ok", "failed", "timed_out")}
        self.data["summary"] = {
            "finished": finished,
            **by,
            "not_run": [n for n, c in checks.items() if c["status"] in ("not_run", "running")],
            "goals_met": {
                n: c["result"].get("met") for n, c in checks.items() if "met" in (c.get("result") or {})
            },
            "seconds": round(time.perf_counter() - self.started, 1),
        }

    def write(self, *, finished: bool = False) -> str:
        self.summarize(finished=finished)
        text = json.dumps(self.data, indent=1, default=str)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(text + "\n")
        os.replace(tmp, self.path)
        return text


def _reader(stream, name: str, tail: collections.deque) -> None:
    for line in iter(stream.readline, ""):
        tail.append(line)
        sys.stderr.write(f"[{name}] {line}")
        sys.stderr.flush()
    stream.close()


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


def _child_command(args, name: str, result: Path) -> list[str]:
    cmd = [sys.executable, str(SCRIPT), "--child", name, "--result", str(result), "--work", args.work]
    cmd += ["--device", args.device]
    if args.tiny:
        cmd.append("--tiny")
    if args.peak_tflops:
        cmd += ["--peak-tflops", str(args.peak_tflops)]
    return cmd


class Stopped(Exception):
    pass


def run_one(args, name: str, cap: float, stop: dict[str, Any]) -> dict[str, Any]:
    """Run one check's process under ``cap`` seconds; its entry for the report."""
    result_path = Path(args.work) / f"{name}.result.json"
    tail: collections.deque = collections.deque(maxlen=40)
    started = time.perf_counter()
    proc = subprocess.Popen(
        _child_command(args, name, result_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        errors="replace",
        cwd=ROOT,
        start_new_session=True,  # its own process group: the cap kills it and everything it started
    )
    stop["proc"] = proc
    reader = threading.Thread(target=_reader, args=(proc.stdout, name, tail), daemon=True)
    reader.start()
    timed_out = False
    try:
        proc.wait(timeout=cap)
    except subprocess.TimeoutExpired:
        timed_out = True
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGUSR1)  # faulthandler: where it is stuck, into its log
        time.sleep(1.0)
    finally:
        stop["proc"] = None
    seconds = round(time.perf_counter() - started, 1)
    _kill_group(proc)  # at the cap, the check; after it, anything it left running (GPU memory held)
    reader.join(timeout=5)
    entry: dict[str, Any] = {"cap_s": cap, "seconds": seconds}
    payload = None
    if result_path.is_file():
        with contextlib.suppress(ValueError):
            payload = json.loads(result_path.read_text())
    log_tail = "".join(tail)[-3000:]
    if stop.get("signal"):
        entry.update(
            status="timed_out", error=f"stopped by {stop['signal']} sent to gpu_check after {seconds} s"
        )
    elif timed_out:
        entry.update(status="timed_out", error=f"exceeded its {cap:g} s cap; killed (its stacks in log_tail)")
    elif payload and "result" in payload:
        result = payload["result"]
        entry.update(status="ok", result=result)
        if name in ASSERTED and result.get("met") is False:
            entry.update(status="failed", error=f"goal not met: {result.get('goal')}")
    elif payload and "error" in payload:
        entry.update(status="failed", error=payload["error"], where=payload.get("where"))
    else:
        rc = proc.returncode
        how = f"killed by {signal.Signals(-rc).name}" if rc is not None and rc < 0 else f"exited with {rc}"
        last = next((ln.strip() for ln in reversed(tail) if ln.strip()), "")
        entry.update(status="failed", error=f"its process {how} without a result; last output: {last[:300]}")
    if entry["status"] != "ok":
        entry["log_tail"] = log_tail
    return entry


def orchestrate(args) -> int:
    names = args.only or list(CHECKS)
    caps = dict(CAPS)
    for spec in args.cap or []:
        key, _, value = spec.partition("=")
        if key not in CAPS or not value:
            raise SystemExit(
                f"gpu_check: --cap wants NAME=SECONDS with NAME one of {', '.join(CAPS)}; got {spec!r}"
            )
        caps[key] = float(value)
    out = Path(args.out or "gpu_check.json").expanduser().resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    args.work = tempfile.mkdtemp(prefix="gpu-check-")
    report = Report(out, names, args, caps)
    report.write()
    print(f"gpu_check: writing {out} after every check", file=sys.stderr, flush=True)
    stop: dict[str, Any] = {"signal": None, "proc": None}

    def on_signal(signum, frame):
        stop["signal"] = signal.Signals(signum).name
        proc = stop.get("proc")
        if proc is not None:
            _kill_group(proc)
        raise Stopped

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    deadline = report.started + args.budget
    code = 0
    try:
        for name in names:
            left = deadline - time.perf_counter()
            entry = report.data["checks"][name]
            if left < MIN_START_S:
                entry["reason"] = f"the budget of {args.budget:g} s was spent"
                continue
            if stop.get("skip_rest"):
                entry["reason"] = stop["skip_rest"]
                continue
            cap = min(caps[name], left)
            entry.update(status="running", cap_s=round(cap, 1))
            report.write()
            print(f"gpu_check: {name} (cap {cap:.0f} s)", file=sys.stderr, flush=True)
            started = time.perf_counter()
            try:
                entry.update(run_one(args, name, cap, stop))
            except Stopped:
                entry.update(
                    status="timed_out",
                    seconds=round(time.perf_counter() - started, 1),
                    error=f"stopped by {stop['signal']} sent to gpu_check",
                )
                raise
            entry.pop("reason", None)
            print(f"gpu_check: {name} {entry['status']} in {entry['seconds']} s", file=sys.stderr, flush=True)
            if name == "environment":
                res = entry.get("result") or {}
                report.data["device_name"] = res.get("device_name")
                if entry["status"] != "ok":
                    stop["skip_rest"] = "the environment check did not pass"
                    code = 2
            report.write()
    except Stopped:
        for entry in report.data["checks"].values():
            if entry["status"] in ("not_run", "running"):
                entry["status"] = "not_run"
                entry["reason"] = f"gpu_check was stopped by {stop['signal']}"
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        text = report.write(finished=stop["signal"] is None)
        shutil.rmtree(args.work, ignore_errors=True)
        site = os.environ.get("PASODOBLE_GPU_CHECK_SITE")
        if site and Path(site).name.startswith("pasodoble-gpu-check-site."):  # gpu_check.sh's --target
            shutil.rmtree(site, ignore_errors=True)
    print(text, flush=True)
    summary = report.data["summary"]
    if code:
        return code
    return 0 if not (summary["failed"] or summary["timed_out"] or summary["not_run"]) else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--tiny", action="store_true", help="toy sizes: checks the code path (what CI runs)")
    ap.add_argument("--only", nargs="*", choices=list(CHECKS), help="run only these checks (in run order)")
    ap.add_argument(
        "--out", default=None, help="the JSON file, rewritten after every check (default gpu_check.json)"
    )
    ap.add_argument("--cap", action="append", metavar="NAME=SECONDS", help="change one check's time cap")
    ap.add_argument("--budget", type=float, default=DEFAULT_BUDGET, help="seconds for the whole run")
    ap.add_argument(
        "--peak-tflops", type=float, default=None, help="the MFU's peak (default: datasheet by name)"
    )
    # a check's own process, and the fsdp2 check's worker (internal)
    ap.add_argument("--child", choices=list(CHECKS), help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    ap.add_argument("--fsdp2-worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--shape", default=SHAPE, help=argparse.SUPPRESS)
    ap.add_argument("--resume", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.only is not None:
        args.only = [n for n in CHECKS if n in args.only]
    if args.fsdp2_worker:
        return fsdp2_worker(args)
    if args.child:
        return run_child(args)
    return orchestrate(args)


if __name__ == "__main__":
    raise SystemExit(main())
