"""``pasodoble toy build``: the toy world's data, tokenizer, base model and cold-start models.

Every stage writes into one directory and is skipped when its output is already there, so an
interrupted build continues where it stopped:

======================  =====================================================================
``data/``               held-out set (500 canonical problems), validation set, corpus (= the
                        pre-training text), knowledge base (the corpus's worked records),
                        the Proposer's cold-start SFT data
``tokenizer/``          the byte-level BPE with digit tokens and the chat template
``base/``               the Qwen3 base model pre-trained on the corpus
``solver_data/``        the Solver's cold-start SFT data (``solver_direct_share`` of the answers
                        direct, the rest worked)
``solver_cold_start/``  the base fine-tuned on the Solver data (``metrics.jsonl``: its curve)
``proposer_cold_start/`` the base fine-tuned on the Proposer data
``build.json``          the settings, per-stage seconds and the cold-start Solver's accuracy
======================  =====================================================================

Each stage reads only some settings and some earlier stages (``STAGES``); its ``.done`` marker holds a
fingerprint of both, and a stage whose fingerprint changed is built again, with every stage after it
that reads it. So a new Solver mix rebuilds ``solver_data/`` and ``solver_cold_start/`` and keeps the
pre-trained base. Everything is deterministic from the settings (string-seeded generators, torch
seeded at the start of every stage, ``threads`` torch threads). With a spare core the Proposer's SFT
runs in a child process beside the Solver's (``build(parallel=...)``), to the same bits.
``export_assets`` copies the three models in bfloat16 into the package (``pasodoble/assets/toy``),
which is what ``pasodoble demo`` loads without building.
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
import os
import shutil
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch

from pasodoble.toy.family import sample_problems

HELDOUT_SEED = 1  # the demo's held-out benchmark: sample_problems(500, HELDOUT_SEED)
VALIDATION_SEED = 2  # the cold-start curve's problems (also kept out of all training data)
ASSETS = Path(__file__).resolve().parent.parent / "assets" / "toy"
MODEL_DIRS = ("base", "solver_cold_start", "proposer_cold_start")

# the style metrics of the cold-start curve (``toy.accuracy.toy_solver_eval``, prefixed val_)
STYLE_KEYS = ("val_worked_share", "val_worked_accuracy", "val_direct_accuracy")

# Sampling temperature of the demo (dual-play rollouts and every accuracy it reports).
DEMO_TEMPERATURE = 1.0


@dataclass
class BuildSettings:
    """What the toy build makes; the defaults are the shipped models' settings."""

    heldout: int = 500
    validation: int = 400
    corpus: int = 180000
    corpus_seed: int = 0
    solver_examples: int = 16000
    # share of the Solver's cold-start answers that are direct (`The answer is \\boxed{V}.`, no working)
    solver_direct_share: float = 0.5
    # the direct answers go only to problems with at least this many operands (2: any problem)
    solver_direct_min_operands: int = 3
    proposer_examples: int = 8000
    data_seed: int = 0
    model_seed: int = 0
    pretrain_epochs: float = 1.0
    pretrain_lr: float = 2e-3
    pretrain_rows: int = 16  # rows of pretrain_length tokens per optimizer step
    pretrain_length: int = 256
    solver_epochs: float = 8.0
    solver_lr: float = 5e-4
    solver_lr_schedule: str = (
        "cosine"  # or "constant" (after warm-up): every curve point is then an SFT of that length
    )
    # also keep the Solver at this SFT step (0: none) in solver_cold_start/step_<n>, e.g. the half of a
    # constant-rate run, so that N and 2N steps can both be evaluated on the held-out set
    solver_snapshot_step: int = 0
    proposer_epochs: float = 1.0
    proposer_lr: float = 5e-4
    sft_batch_size: int = 32
    eval_every: int = 495  # Solver SFT steps between validation-accuracy measurements (495: one epoch)
    eval_samples: int = 4  # samples per validation problem (one fixed seed, so points compare)
    # torch threads. Not in any fingerprint (a stage built with another count is kept), but the count
    # changes float reductions: 1 and 2 threads train to different bits (docs/toy-world.md). The shipped
    # models were built with 1, which is also the faster under load; 2 is faster on an idle machine.
    threads: int = 1


# stage -> (the settings it reads, the earlier stages it reads); the order is the build order.
STAGES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "data": (("heldout", "validation", "corpus", "corpus_seed", "proposer_examples", "data_seed"), ()),
    "tokenizer": ((), ("data",)),
    "base": (
        ("model_seed", "pretrain_epochs", "pretrain_lr", "pretrain_rows", "pretrain_length"),
        ("data", "tokenizer"),
    ),
    "solver_data": (
        (
            "heldout",
            "validation",
            "solver_examples",
            "solver_direct_share",
            "solver_direct_min_operands",
            "data_seed",
        ),
        (),
    ),
    "solver_cold_start": (
        (
            "solver_epochs",
            "solver_lr",
            "solver_lr_schedule",
            "solver_snapshot_step",
            "sft_batch_size",
            "eval_every",
            "eval_samples",
            "data_seed",
        ),
        ("data", "base", "solver_data"),
    ),
    "proposer_cold_start": (
        ("proposer_epochs", "proposer_lr", "sft_batch_size", "data_seed"),
        ("data", "base"),
    ),
}


# what a stage writes, where that changed with no setting: a stage made by earlier code is built again
STAGE_OUTPUTS = {"base": "bfloat16"}  # issue 23: was float32


def stage_fingerprints(s: BuildSettings) -> dict[str, str]:
    """A hash per stage of the settings it reads, of the fingerprints of the stages it reads and of its
    ``STAGE_OUTPUTS`` entry."""
    values = asdict(s)
    prints: dict[str, str] = {}
    for name, (keys, upstream) in STAGES.items():
        spec = {"settings": {k: values[k] for k in keys}, "upstream": {u: prints[u] for u in upstream}}
        if name in STAGE_OUTPUTS:
            spec["output"] = STAGE_OUTPUTS[name]
        prints[name] = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    return prints


def parse_setting(text: str) -> tuple[str, Any]:
    """``key=value`` of a ``BuildSettings`` field, the value converted to the field's type."""
    from pasodoble.errors import UserError

    key, sep, raw = text.partition("=")
    types = {f.name: f.type for f in fields(BuildSettings)}
    if not sep or key not in types:
        raise UserError(f"--set takes KEY=VALUE with KEY one of {', '.join(types)}; got {text!r}")
    kind = {"int": int, "float": float, "str": str}[types[key]]
    try:
        return key, kind(raw)
    except ValueError:
        raise UserError(
            f"--set {key} needs a{'n' if kind is int else ''} {kind.__name__}; got {raw!r}"
        ) from None


def heldout_problems(n: int = 500) -> list[dict[str, str]]:
    return sample_problems(n, HELDOUT_SEED)


def evaluation_sets(s: BuildSettings) -> tuple[list[dict[str, str]], list[dict[str, str]], set[str]]:
    """(held-out problems, validation problems, every problem text kept out of the training data)."""
    heldout = heldout_problems(s.heldout)
    held_texts = {r["problem"] for r in heldout}
    validation = [
        r for r in sample_problems(s.validation + 100, VALIDATION_SEED) if r["problem"] not in held_texts
    ][: s.validation]
    return heldout, validation, held_texts | {r["problem"] for r in validation}


def _stage(out: Path, name: str, fingerprint: str, timings: dict[str, float], fn, seed: int) -> bool:
    """Build stage ``name`` unless its marker holds ``fingerprint``; True when it was built now."""
    marker = out / name / ".done"
    if _done(out, name, fingerprint):
        return False
    if (out / name).exists():
        why = "was built with other settings" if marker.is_file() else "was not finished"
        print(f"toy build: {name} {why}; building it again", flush=True)
        shutil.rmtree(out / name)
    (out / name).mkdir(parents=True)
    torch.manual_seed(seed)  # every stage starts from the same RNG state, whichever ran before it
    started = time.perf_counter()
    fn(out / name)
    marker.write_text(fingerprint + "\n")
    timings[name] = round(time.perf_counter() - started, 1)
    print(f"toy build: {name} done in {timings[name]:.0f} s", flush=True)
    return True


def usable_cpus() -> int:
    """The CPUs this process may use (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _beside(out: Path, prints: dict[str, str], s: BuildSettings, until: str | None, parallel: bool | None):
    """The stage to build beside the Solver's SFT ("proposer_cold_start"), or None."""
    if parallel is None:
        parallel = usable_cpus() >= 2 * s.threads
    pending = [n for n in ("solver_cold_start", "proposer_cold_start") if not _done(out, n, prints[n])]
    wanted = until in (None, "proposer_cold_start")
    return "proposer_cold_start" if parallel and wanted and len(pending) == 2 else None


def _done(out: Path, name: str, fingerprint: str) -> bool:
    marker = out / name / ".done"
    return marker.is_file() and marker.read_text().strip() == fingerprint


def _stage_builders(out: Path, s: BuildSettings) -> dict[str, Callable[[Path], None]]:
    """Each stage's builder (called with the stage's directory), in ``STAGES`` order."""
    stages = {
        "data": lambda d: build_data(d, s),
        "tokenizer": lambda d: build_tokenizer(d, out / "data"),
        "base": lambda d: pretrain(d, out, s),
        "solver_data": lambda d: build_solver_data(d, s),
        "solver_cold_start": lambda d: cold_start(d, out, "solver", s),
        "proposer_cold_start": lambda d: cold_start(d, out, "proposer", s),
    }
    assert list(stages) == list(STAGES)
    return stages


def _stage_in_child(out: str, name: str, fingerprint: str, s: BuildSettings, log: str) -> float:
    """``_stage`` in a child process (``build(parallel=...)``), its output into ``log``; its seconds."""
    torch.set_num_threads(s.threads)
    timings: dict[str, float] = {}
    with open(log, "w", encoding="utf-8") as fh:
        sys.stdout = sys.stderr = fh  # the progress bar too: two bars on one terminal garble each other
        _stage(Path(out), name, fingerprint, timings, _stage_builders(Path(out), s)[name], s.model_seed)
    return timings[name]


# --------------------------------------------------------------------------------------------------
# Stages


def build_data(dest: Path, s: BuildSettings) -> None:
    from pasodoble.toy.cold_start import proposer_examples
    from pasodoble.toy.corpus import build_corpus, write_jsonl
    from pasodoble.toy.model import PROPOSER_PROMPT

    heldout, validation, exclude = evaluation_sets(s)
    corpus = build_corpus(s.corpus, s.corpus_seed, exclude=exclude)
    worked = [r for r in corpus if r["kind"] == "worked"]
    write_jsonl(heldout, dest / "heldout.jsonl")
    write_jsonl(validation, dest / "validation.jsonl")
    write_jsonl(corpus, dest / "corpus.jsonl")
    write_jsonl(worked, dest / "knowledge.jsonl")
    write_jsonl(
        proposer_examples(
            worked, s.proposer_examples, s.data_seed, exclude=exclude, template=PROPOSER_PROMPT
        ),
        dest / "proposer_sft.jsonl",
    )


def build_solver_data(dest: Path, s: BuildSettings) -> None:
    from pasodoble.toy.cold_start import solver_examples
    from pasodoble.toy.corpus import write_jsonl
    from pasodoble.toy.model import SOLVER_PROMPT

    _, _, exclude = evaluation_sets(s)
    examples = solver_examples(
        s.solver_examples,
        s.data_seed,
        exclude=exclude,
        template=SOLVER_PROMPT,
        direct_share=s.solver_direct_share,
        direct_min_operands=s.solver_direct_min_operands,
    )
    write_jsonl(examples, dest / "solver_sft.jsonl")


def _read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def build_tokenizer(dest: Path, data: Path) -> None:
    from pasodoble.toy.model import PROPOSER_PROMPT, build_toy_tokenizer

    texts = [r["text"] for r in _read(data / "corpus.jsonl")]
    texts.append(PROPOSER_PROMPT)
    texts += [ex["messages"][1]["content"] for ex in _read(data / "proposer_sft.jsonl")[:2000]]
    build_toy_tokenizer(texts).save_pretrained(dest)


def pretrain(dest: Path, out: Path, s: BuildSettings) -> None:
    """Causal-LM pre-training on the corpus texts (each followed by EOS), packed into fixed rows."""
    import numpy as np
    from tqdm import tqdm
    from transformers import get_scheduler

    from pasodoble.models import load_tokenizer
    from pasodoble.toy.model import build_toy_model

    tok = load_tokenizer(str(out / "tokenizer"))
    model = build_toy_model(tok, s.model_seed)
    texts = [r["text"] for r in _read(out / "data" / "corpus.jsonl")]
    encoded = [ids + [tok.eos_token_id] for ids in tok(texts, add_special_tokens=False).input_ids]
    L, B = s.pretrain_length, s.pretrain_rows
    tokens_per_epoch = sum(len(e) for e in encoded)
    steps = max(1, math.ceil(s.pretrain_epochs * tokens_per_epoch / (L * B)))
    opt = torch.optim.AdamW(model.parameters(), lr=s.pretrain_lr, weight_decay=0.01, betas=(0.9, 0.98))
    sched = get_scheduler("cosine", opt, num_warmup_steps=max(1, steps // 20), num_training_steps=steps)
    rng = np.random.default_rng(s.model_seed)

    def stream():
        while True:
            for i in rng.permutation(len(encoded)):
                yield from encoded[int(i)]

    it = stream()
    model.train()
    history = []
    bar = tqdm(range(steps), desc="toy build: pre-train", unit="step", dynamic_ncols=True)
    for step in bar:
        batch = torch.tensor([[next(it) for _ in range(L)] for _ in range(B)], dtype=torch.long)
        loss = model(input_ids=batch, labels=batch, use_cache=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        history.append({"step": step + 1, "loss": float(loss.detach())})
        bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
    # saved in bfloat16, as the package ships it: both cold starts are fine-tuned (in float32) from
    # exactly the base that ships, so the shipped cold starts follow from the shipped base alone
    model.to(torch.bfloat16).save_pretrained(dest)
    tok.save_pretrained(dest)
    with open(dest / "metrics.jsonl", "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(h) + "\n" for h in history)


def cold_start(dest: Path, out: Path, role: str, s: BuildSettings) -> None:
    from pasodoble.sft.train import SFTConfig, train_sft
    from pasodoble.toy.accuracy import toy_solver_eval

    validation = _read(out / "data" / "validation.jsonl")

    def on_eval(model, tokenizer, step):
        if role == "solver" and s.solver_snapshot_step and step == s.solver_snapshot_step:
            model.save_pretrained(dest / f"step_{step}")
            tokenizer.save_pretrained(dest / f"step_{step}")
        result = toy_solver_eval(
            model, tokenizer, validation, temperature=DEMO_TEMPERATURE, seed=0, samples=s.eval_samples
        )
        return {f"val_{k}": v for k, v in result.items()}

    cfg = SFTConfig(
        role=role,
        data=str(out / ("solver_data" if role == "solver" else "data") / f"{role}_sft.jsonl"),
        model=str(out / "base"),
        out=str(dest),
        epochs=s.solver_epochs if role == "solver" else s.proposer_epochs,
        lr=s.solver_lr if role == "solver" else s.proposer_lr,
        batch_size=s.sft_batch_size,
        micro_batch_size=s.sft_batch_size,
        max_length=512,
        eval_fraction=0.01,
        seed=s.data_seed,
        warmup_ratio=0.02,
        lr_schedule=s.solver_lr_schedule if role == "solver" else "cosine",
        checkpoint_every=0,
        keep_checkpoints=1,
        eval_every=s.eval_every if role == "solver" else 0,
    )
    shutil.rmtree(dest, ignore_errors=True)
    train_sft(cfg, on_eval=on_eval if role == "solver" else None)
    shutil.rmtree(dest / "checkpoints", ignore_errors=True)


def build(
    out: str | Path,
    settings: BuildSettings | None = None,
    until: str | None = None,
    parallel: bool | None = None,
) -> dict[str, Any]:
    """Run (or finish) every stage into ``out`` (up to and including ``until``); return the manifest
    written to ``out/build.json``. Stages built with other settings are built again (``STAGES``).

    ``parallel``: build the Proposer's SFT in a child process beside the Solver's when both are to be
    built (None: when this process may use ``2 * threads`` CPUs). Either way gives the same bits.
    """
    import transformers

    s = settings or BuildSettings()
    if until is not None and until not in STAGES:
        from pasodoble.errors import UserError

        raise UserError(f"--until must be one of {', '.join(STAGES)}; got {until!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / "build.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    timings: dict[str, float] = manifest.get("seconds", {})
    prints = stage_fingerprints(s)
    torch.set_num_threads(s.threads)

    def save_manifest(**extra: Any) -> dict[str, Any]:
        # written after every stage, so an interrupted build keeps its stages' timings
        # the software versions with the settings: the same settings on other versions may train to other bits
        manifest = {
            "settings": asdict(s),
            "seconds": timings,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            **extra,
        }
        manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
        return manifest

    stages = _stage_builders(out, s)
    beside = _beside(out, prints, s, until, parallel)
    for name, fn in stages.items():
        if name == beside:
            continue  # built in its own process beside the Solver's SFT, below
        if name == "solver_cold_start" and beside:
            # the Proposer's SFT reads only the data and the base: on a spare core it runs beside the
            # Solver's, in a child process with the same seed and thread count (the same bits)
            log = out / f"{beside}.log"
            print(f"toy build: {beside} runs beside {name} (its progress: {log})", flush=True)
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
                child = pool.submit(_stage_in_child, str(out), beside, prints[beside], s, str(log))
                _stage(out, name, prints[name], timings, fn, s.model_seed)
                save_manifest()
                seconds = child.result()
            timings[beside] = seconds
            print(f"toy build: {beside} done in {seconds:.0f} s", flush=True)
            save_manifest()
            if until == beside:
                return save_manifest()
            continue
        _stage(out, name, prints[name], timings, fn, s.model_seed)
        save_manifest()
        if name == until:
            return save_manifest()
    curve = _read(out / "solver_cold_start" / "metrics.jsonl")
    from pasodoble.toy.report import plot_cold_start_curve

    plot_cold_start_curve(curve, out / "solver_cold_start_curve.png")
    manifest = save_manifest(
        solver_validation_accuracy=[
            {"step": r["step"], "accuracy": r["val_accuracy"]} for r in curve if "val_accuracy" in r
        ],
        solver_validation_styles=[
            {k.removeprefix("val_"): r[k] for k in ("step", *STYLE_KEYS) if k in r}
            for r in curve
            if "val_accuracy" in r
        ],
    )
    return manifest


def export_assets(out: str | Path, dest: Path = ASSETS) -> Path:
    """Copy the built models into the package in bfloat16 (what the repository ships)."""
    from transformers import AutoModelForCausalLM

    from pasodoble.models import load_tokenizer

    out = Path(out)
    dest.mkdir(parents=True, exist_ok=True)
    for name in MODEL_DIRS:
        target = dest / name
        shutil.rmtree(target, ignore_errors=True)
        model = AutoModelForCausalLM.from_pretrained(str(out / name), dtype=torch.bfloat16)
        model.save_pretrained(target)
        load_tokenizer(str(out / name)).save_pretrained(target)
    shutil.copy(out / "build.json", dest / "build.json")
    shutil.copy(out / "solver_cold_start" / "metrics.jsonl", dest / "solver_cold_start_curve.jsonl")
    return dest
