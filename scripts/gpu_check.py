"""The one prepared GPU check (issue 14): what a real run on one GPU needs, measured, as one JSON object.

    bash scripts/gpu_check.sh [--device cuda|cpu] [--tiny] [--wheels DIR] [--out DIR] [--only NAME ...]

Checks (each one's figures, goal and whether it was met go under "checks"; an exception in one check is
recorded there and the others still run):

- ``precision``: the share of the Solver's weights that one dual-play update at lr 1e-6 changes, with
  ``model.dtype=float32`` and with ``model.dtype=bfloat16``, on a random-init Qwen3-1.7B-shaped model,
  through the trainer's own engine (``train.Trainer`` with the scripted rollout backend, one online step;
  the step's checkpoint is not written: a 1.7B run's two learners hold 55 GB of state). Goal: the bf16
  share >= 0.99 of the float32 share (weights held in bf16 moved 1.75% on an H200).
- ``logprobs``: the largest difference between the generation backends' per-token log-probabilities
  (``hf`` and ``hf_batched``, bf16 compute over float32 weights) and the learner's on the same tokens.
- ``learner``: ``Learner.update`` tokens/s and MFU (8·P per token, activation checkpointing) on
  48 sequences of 2,304 tokens in micro-batches of 4, bf16 compute. Goal: MFU >= 0.45.
- ``decode``: ms per decode step at batch 64 for ``hf`` and ``hf_batched`` (``rollout.bench``). Goal:
  ``hf_batched`` <= 5 ms.
- ``fsdp2_resume``: ``torchrun --nproc_per_node 1`` runs of the trainer under ``distributed.strategy=fsdp2``
  (4 steps, checkpoints at 2 and 4; then the same directory resumed from its step-2 checkpoint): the final
  weights must be bitwise equal. The model is 1.7B-wide with 2 decoder layers: a full-depth 1.7B checkpoint of both
  roles is 41 GB and two of them do not fit the 64 GB disk of the machine this was written for.
- ``toy_true_answer``: the toy world's true-answer diagnosis (``pasodoble demo`` with every valid question
  relabelled by its true value) for 60 steps; held-out pass@1 must improve.

``--tiny`` runs every check at toy sizes (the tiny model; what CI runs with ``--device cpu``); its
figures check the code path, not a GPU. The grader needs math-verify: on a machine without it, pass
``--wheels DIR`` holding its wheels to ``gpu_check.sh``.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHAPE = "qwen3-1.7b"


# --------------------------------------------------------------------------------------------------
# Models


def make_model(shape: str, device: str, *, seed: int = 0, layers: int | None = None):
    """A random-init model (float32) of ``shape`` ('tiny' or a ``rollout.bench.SHAPES`` name), optionally
    with fewer decoder layers, and the tiny tokenizer (token ids only; no download)."""
    from pasodoble.rollout.bench import random_model

    model, tok = random_model(shape, device=device, dtype=torch.float32, seed=seed)
    if layers is not None and layers < model.config.num_hidden_layers:
        model.model.layers = model.model.layers[:layers]
        model.config.num_hidden_layers = layers
        if getattr(model.config, "layer_types", None):
            model.config.layer_types = model.config.layer_types[:layers]
    return model, tok


@contextlib.contextmanager
def patched_loader(shape: str, device: str, layers: int | None = None):
    """Make the trainer load a random-init model of ``shape`` for every role (same seed, same weights)."""
    import pasodoble.train as train_mod

    original = train_mod.load_model_and_tokenizer

    def load(name_or_path, model_cfg, *, seed=0, dtype=None, field=None):
        return make_model(shape, device, seed=seed, layers=layers)

    train_mod.load_model_and_tokenizer = load
    try:
        yield
    finally:
        train_mod.load_model_and_tokenizer = original


def parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def free(device: str) -> None:
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


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


# --------------------------------------------------------------------------------------------------
# Checks


def check_precision(args) -> dict[str, Any]:
    from pasodoble.config import load_config
    from pasodoble.testing.scripted import scripted_factory
    from pasodoble.train import Trainer

    shares, trained = {}, {}
    shape = "tiny" if args.tiny else SHAPE
    for dtype in ("float32", "bfloat16"):
        out = Path(tempfile.mkdtemp(prefix=f"gpu-check-precision-{dtype}-", dir=args.work))
        cfg = load_config(None, tiny_overrides(args.device, out, dtype, 1e-6))
        with patched_loader(shape, args.device):
            trainer = Trainer(cfg, out, resume=False, backend_factory=scripted_factory)
        try:
            model = trainer.engine.solver.learner.unwrapped_model
            before = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            for step in range(5):  # the scripted Proposer's first steps may all be skipped (no band question)
                if trainer.engine.online_step(step).trained:
                    break
            trained[dtype] = step + 1
            moved = total = 0
            for k, v in model.state_dict().items():
                moved += int((v.detach().cpu() != before[k]).sum())
                total += v.numel()
            shares[dtype] = moved / total
            params = parameter_count(model)
        finally:
            trainer.close()
            del trainer
            free(args.device)
        shutil.rmtree(out, ignore_errors=True)
    ratio = shares["bfloat16"] / shares["float32"] if shares["float32"] else 0.0
    return {
        "shape": shape,
        "parameters": params,
        "share_moved_float32": round(shares["float32"], 5),
        "share_moved_bfloat16_compute": round(shares["bfloat16"], 5),
        "ratio": round(ratio, 5),
        "steps_until_first_update": trained,
        "goal": "bf16 share >= 0.99 x float32 share after one update",
        "met": ratio >= 0.99,
    }


def check_logprobs(args) -> dict[str, Any]:
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
        samples = [TrainSample(c.prompt_ids, c.completion_ids, 0.0) for grp in groups for c in grp]
        mine = learner.logprobs(samples)
        diffs = [
            abs(a - b)
            for grp, lps in zip([c for grp in groups for c in grp], mine, strict=True)
            for a, b in zip(grp.logprobs, lps, strict=True)
        ]
        out[name] = {
            "tokens": len(diffs),
            "max_abs_diff": round(max(diffs), 5),
            "mean_abs_diff": round(sum(diffs) / len(diffs), 6),
        }
        del backend
        free(args.device)
    del learner, model
    free(args.device)
    return out


def check_learner(args) -> dict[str, Any]:
    from pasodoble.config import GRPOConfig, RoleConfig
    from pasodoble.learner import Learner, TrainSample
    from pasodoble.parallel import Parallelism

    shape = "tiny" if args.tiny else SHAPE
    n, prompt_len, comp_len, mbs = (8, 16, 48, 4) if args.tiny else (48, 256, 2048, 4)
    model, tok = make_model(shape, args.device)
    P = parameter_count(model)
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
    tokens = n * (prompt_len + comp_len)
    rate = tokens / seconds
    mfu = 8 * P * rate / (args.peak_tflops * 1e12)
    out = {
        "shape": shape,
        "parameters": P,
        "sequences": n,
        "tokens_per_sequence": prompt_len + comp_len,
        "micro_batch_size": mbs,
        "seconds": round(seconds, 3),
        "tokens_per_s": round(rate, 1),
        "mfu": round(mfu, 4),
        "peak_tflops_assumed": args.peak_tflops,
        "grad_norm": round(float(metrics["grad_norm"]), 5),
        "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)
        if args.device == "cuda"
        else None,
        "goal": "MFU >= 0.45 (8·P per token, activation checkpointing)",
        "met": mfu >= 0.45,
    }
    del learner, model
    free(args.device)
    return out


def check_decode(args) -> dict[str, Any]:
    from pasodoble.rollout.bench import decode_benchmark

    shape = "tiny" if args.tiny else SHAPE
    model, tok = make_model(shape, args.device)
    kwargs = {"batch": 8, "new_tokens": 32} if args.tiny else {"batch": 64, "new_tokens": 256}
    result = decode_benchmark(model, tok, compute_dtype=torch.bfloat16, **kwargs)
    del model
    free(args.device)
    ms = result.get("hf_batched", {}).get("decode_ms_per_step")
    return {
        "shape": shape,
        **kwargs,
        **result,
        "goal": "hf_batched decode <= 5 ms per step at batch 64 (one H200)",
        "met": ms is not None and ms <= 5.0,
    }


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_fsdp2_resume(args) -> dict[str, Any]:
    """An uninterrupted 4-step run (checkpoints at steps 2 and 4), then the same directory resumed from
    its step-2 checkpoint (the step-4 checkpoint and final models removed first): the resumed run must end
    with bitwise the same weights. Two launches, no copy of the checkpoints (disk)."""
    from safetensors.torch import load_file

    from pasodoble.checkpoint import list_checkpoints

    work = Path(tempfile.mkdtemp(prefix="gpu-check-fsdp2-", dir=args.work))
    shape, layers = ("tiny", None) if args.tiny else (SHAPE, 2)

    def launch(out: Path, *extra: str) -> dict[str, Any]:
        cmd = [
            sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1",
            "--master_addr", "127.0.0.1", "--master_port", str(_port()), str(Path(__file__).resolve()),
            "--fsdp2-worker", str(out), "--device", args.device, "--shape", shape,
            *(["--layers", str(layers)] if layers else []), *extra,
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
        if proc.returncode != 0:
            raise RuntimeError(f"FSDP2 run {' '.join(extra) or 'from scratch'} failed: {proc.stderr[-1500:]}")
        return json.loads(proc.stdout.strip().splitlines()[-1])

    started = time.perf_counter()
    run = work / "run"
    summary = launch(run)
    final = {r: load_file(run / f"{r}_final" / "model.safetensors") for r in ("proposer", "solver")}
    checkpoints = list_checkpoints(run)
    layout = json.loads((checkpoints[0] / "state.json").read_text())["state"]["layout"]
    shards = sorted(p.name for p in (checkpoints[0] / "solver.dcp").iterdir())
    for path in [checkpoints[-1], run / "proposer_final", run / "solver_final"]:
        shutil.rmtree(path)  # as if the run had been killed after its step-2 checkpoint
    resumed = launch(run, "--resume")
    equal = all(
        torch.equal(final[r][k], t)
        for r in final
        for k, t in load_file(run / f"{r}_final" / "model.safetensors").items()
    )
    shutil.rmtree(work, ignore_errors=True)
    return {
        "shape": shape,
        "decoder_layers": layers,
        "steps": summary["steps"],
        "updates": summary["updates"],
        "resumed_from_step": int(checkpoints[0].name.split("_")[1]),
        "resumed_updates": resumed["updates"],
        "checkpoint_layout": layout,
        "solver_dcp_files": shards,
        "bitwise_equal_after_resume": equal,
        "seconds": round(time.perf_counter() - started, 1),
        "goal": "one-process FSDP2 run resumed from its step-2 checkpoint ends bitwise equal; updates > 0",
        "met": equal and summary["updates"] > 0,
    }


def fsdp2_worker(args) -> int:
    """One process of ``check_fsdp2_resume``: the trainer under fsdp2 with the scripted backend."""
    from pasodoble.config import load_config
    from pasodoble.testing.scripted import scripted_factory
    from pasodoble.train import resume_training, run_training

    out = Path(args.fsdp2_worker)
    with patched_loader(args.shape, args.device, args.layers):
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
    from pasodoble import distributed as dist

    if dist.is_main():
        print(json.dumps(summary), flush=True)
    return 0


def check_toy_true_answer(args) -> dict[str, Any]:
    from pasodoble.toy.demo import run_demo
    from pasodoble.toy.family import evaluate, parse_canonical

    def true_answer(problem: str) -> str | None:
        expr = parse_canonical(problem.strip())
        return None if expr is None else str(evaluate(expr))

    out = Path(tempfile.mkdtemp(prefix="gpu-check-toy-", dir=args.work))
    steps = 2 if args.tiny else 60
    started = time.perf_counter()
    small = ["eval.every=0", "solver.max_new_tokens=64", "run.threads=1"] if args.tiny else []
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
    seconds = time.perf_counter() - started
    before = summary.get("accuracy_before")
    after = summary.get("accuracy_after")
    shutil.rmtree(out, ignore_errors=True)
    return {
        "steps": steps,
        "heldout_pass@1_before": before,
        "heldout_pass@1_after": after,
        "worked_share_before": summary.get("worked_share_before"),
        "worked_share_after": summary.get("worked_share_after"),
        "seconds": round(seconds, 1),
        "goal": "held-out pass@1 improves after 60 true-answer steps",
        "met": before is not None and after is not None and after > before,
    }


CHECKS = {
    "precision": check_precision,
    "logprobs": check_logprobs,
    "learner": check_learner,
    "decode": check_decode,
    "fsdp2_resume": check_fsdp2_resume,
    "toy_true_answer": check_toy_true_answer,
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--tiny", action="store_true", help="toy sizes: checks the code path (what CI runs)")
    ap.add_argument("--only", nargs="*", choices=list(CHECKS), help="run only these checks")
    ap.add_argument("--out", default=None, help="also write the JSON object to this file")
    ap.add_argument("--peak-tflops", type=float, default=790.0, help="bf16 peak for the MFU (H200: ~790)")
    # the fsdp2 check's worker (internal)
    ap.add_argument("--fsdp2-worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--shape", default=SHAPE, help=argparse.SUPPRESS)
    ap.add_argument("--layers", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--resume", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.fsdp2_worker:
        return fsdp2_worker(args)
    if args.device == "cuda" and not torch.cuda.is_available():
        print(
            "gpu_check: no CUDA device visible to torch; run on a GPU machine or pass --device cpu",
            file=sys.stderr,
        )
        return 2
    torch.set_num_threads(
        max(1, min(4, os.cpu_count() or 1)) if args.device == "cpu" else torch.get_num_threads()
    )
    args.work = tempfile.mkdtemp(prefix="gpu-check-")
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name(0) if args.device == "cuda" else platform.processor() or "cpu",
        "tiny": args.tiny,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "checks": {},
    }
    started = time.perf_counter()
    for name in args.only or list(CHECKS):
        t0 = time.perf_counter()
        try:
            with contextlib.redirect_stdout(sys.stderr):  # stdout carries the one JSON object only
                report["checks"][name] = CHECKS[name](args)
        except Exception as exc:  # noqa: BLE001 - recorded; the other checks still run
            report["checks"][name] = {
                "error": f"{type(exc).__name__}: {str(exc)[:600]}",
                "where": traceback.format_exc(limit=3)[-800:],
                "met": False,
            }
        report["checks"][name]["check_seconds"] = round(time.perf_counter() - t0, 1)
        print(f"gpu_check: {name} done in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    report["seconds"] = round(time.perf_counter() - started, 1)
    report["errors"] = [n for n, c in report["checks"].items() if "error" in c]
    report["goals_met"] = {n: c.get("met") for n, c in report["checks"].items() if "met" in c}
    shutil.rmtree(args.work, ignore_errors=True)
    text = json.dumps(report, indent=1)
    print(text, flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
