"""``pasodoble demo``: dual-play on the toy arithmetic world, from cold start to a report, on a CPU.

Stages (each cached, so a second run starts at dual-play):

1. the toy models: the shipped ones (``pasodoble/assets/toy``), else a ``pasodoble toy build`` into
   the cache directory;
2. the held-out set (500 canonical problems) and the knowledge base (the corpus's worked records),
   regenerated deterministically into the cache directory;
3. the cold-start Solver evaluated on the held-out set through the ``pasodoble eval`` machinery;
4. online PasoDoble from the two cold-start models (``DEMO_CONFIG`` plus the user's overrides),
   evaluating the Solver every ``eval.every`` steps on the first ``eval.limit`` held-out problems;
5. the final Solver evaluated the same way; ``report.md``, ``summary.json`` and the plots, with the
   share of worked-style answers (``toy.accuracy.answer_style``) at every evaluation.

The shipped cold-start Solver learned from a teacher that answered about half of its problems
directly, with no working (docs/toy-world.md): what dual-play should teach it is to work problems out.

No answer computed by the toy generator reaches stage 4: the Solver's labels are the Proposer's
boxed answers. (``relabel`` exists for ``benchmarks/demo_seeds.py``'s true-answer diagnosis only.)
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pasodoble.errors import UserError
from pasodoble.rundir import check_out_dir, clear_owned, write_marker
from pasodoble.toy.build import ASSETS, DEMO_TEMPERATURE, MODEL_DIRS, usable_cpus

DEFAULT_STEPS = 20
EVAL_SAMPLES = 4  # samples per held-out problem in every evaluation (pass@1 is their mean)
# torch threads of the demo when run.threads is not overridden: 2 ran a dual-play step 1.3x faster
# than 1 on an idle 2-core machine (docs/toy-world.md); pass run.threads=1 on a shared one.
DEMO_THREADS = 2
ABLATIONS = ("random-reward", "partial-random-reward")
# What a demo writes into its --out directory (--overwrite deletes these and nothing else).
DEMO_MARKER = ".pasodoble-demo"
DEMO_OWNED = (
    DEMO_MARKER,
    "run",
    "eval",
    "solver_cold_start",
    "solver_final",
    "summary.json",
    "report.md",
    "*.png",
)

# The demo's training config (a first guess for this world; see docs/toy-world.md).
# Paths are filled in at run time.
DEMO_CONFIG: dict[str, Any] = {
    "model": {"dtype": "float32"},
    "rollout": {
        "temperature": DEMO_TEMPERATURE,
        "max_prompt_tokens": 192,
        "max_new_tokens": 128,
        "generation_batch_size": 128,
        "open_thinking": False,
    },
    "proposer": {
        "group_size": 12,
        "learning_rate": 2.0e-5,
        "micro_batch_size": 12,
        "temperature": 0.5,
        # The cold-start Proposer writes 182 tokens at the median and 213 at most (16 snippets x 12):
        # at 192, 28% of proposals were cut before their boxed answer and counted invalid.
        "max_new_tokens": 256,
    },
    "solver": {
        "group_size": 8,
        "learning_rate": 3.0e-5,
        "micro_batch_size": 48,
        "max_new_tokens": 128,
    },
    "grpo": {"loss_type": "dr_grpo", "beta": 0.0},
    "knowledge": {"max_snippet_tokens": 160},
    "grader": {"workers": 1, "timeout_s": 5.0},
    # in-training evaluations: the first 100 held-out problems, with the protocol of the full ones
    "eval": {
        "samples": EVAL_SAMPLES,
        "temperature": DEMO_TEMPERATURE,
        "max_new_tokens": 128,
        "limit": 100,
        "every": 5,
    },
    "run": {"mode": "online", "checkpoint_every": 50, "keep_checkpoints": 1},
}


def demo_threads() -> int:
    """``DEMO_THREADS``, or fewer when this process may use fewer CPUs."""
    return max(1, min(DEMO_THREADS, usable_cpus()))


def cache_dir() -> Path:
    """Where the demo keeps what it builds: $PASODOBLE_CACHE, else ~/.cache/pasodoble."""
    root = os.environ.get("PASODOBLE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "pasodoble")
    return Path(root) / "toy"


def models_dir(build_dir: Path | None = None) -> Path:
    """The toy models: the shipped assets when complete, else built (once) into the cache."""
    if all((ASSETS / name / "config.json").is_file() for name in MODEL_DIRS):
        return ASSETS
    from pasodoble.toy.build import build

    target = build_dir or cache_dir() / "build"
    print(
        f"pasodoble demo: no shipped toy models; building them into {target} (pasodoble toy build; "
        "about 80 minutes on 2 CPU cores, once: later runs reuse them)",
        flush=True,
    )
    build(target)
    return target


def world_data(dest: Path) -> tuple[Path, Path]:
    """(held-out benchmark JSONL, knowledge-base JSONL), written once into ``dest``."""
    from pasodoble.toy.build import BuildSettings, evaluation_sets
    from pasodoble.toy.corpus import build_corpus, write_jsonl

    heldout, knowledge = dest / "heldout.jsonl", dest / "knowledge.jsonl"
    if heldout.is_file() and knowledge.is_file():
        return heldout, knowledge
    s = BuildSettings()
    held, _, exclude = evaluation_sets(s)
    corpus = build_corpus(s.corpus, s.corpus_seed, exclude=exclude)
    dest.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest, prefix=".tmp-"))  # concurrent demos never see a partial file
    write_jsonl(held, tmp / "heldout.jsonl")
    write_jsonl([r for r in corpus if r["kind"] == "worked"], tmp / "knowledge.jsonl")
    for name in ("heldout.jsonl", "knowledge.jsonl"):
        os.replace(tmp / name, dest / name)
    shutil.rmtree(tmp, ignore_errors=True)
    return heldout, knowledge


def demo_config(
    out: Path,
    seed: int,
    models: Path,
    knowledge: Path,
    heldout: Path,
    steps: int,
    ablation: str | None,
    overrides: list[str],
):
    from pasodoble.config import apply_overrides, config_from_dict
    from pasodoble.toy.model import PROPOSER_PROMPT, SOLVER_PROMPT

    raw = json.loads(json.dumps(DEMO_CONFIG))
    raw["model"]["name_or_path"] = str(models / "solver_cold_start")
    raw["proposer"].update(model_path=str(models / "proposer_cold_start"), prompt=PROPOSER_PROMPT)
    raw["solver"].update(model_path=str(models / "solver_cold_start"), prompt=SOLVER_PROMPT)
    raw["knowledge"]["source"] = str(knowledge)
    raw["eval"]["benchmarks"] = [str(heldout)]
    raw["run"].update(out_dir=str(out / "run"), seed=seed, max_steps=steps, threads=demo_threads())
    if ablation == "random-reward":
        raw["rewards"] = {"solver_reward": "random"}
    elif ablation == "partial-random-reward":
        raw["rewards"] = {"solver_reward": "partial-random"}
    cfg = config_from_dict(raw)
    return apply_overrides(cfg, overrides) if overrides else cfg


def evaluate_solver(
    model_dir: Path, heldout: Path, out: Path, cfg, *, seed: int, samples: int, limit: int | None = None
) -> float:
    """pass@1 (mean of ``samples`` samples at the run's temperature) on the held-out set, written to ``out``."""
    from pasodoble.config import GraderConfig
    from pasodoble.eval.benchmarks import load_benchmark
    from pasodoble.eval.runner import BackendGenerator, EvalSettings, load_model_for_eval, run_eval
    from pasodoble.rollout.hf import HFBackend
    from pasodoble.verify import Grader

    bench = load_benchmark(str(heldout), limit=limit)
    settings = EvalSettings(
        model=str(model_dir),
        benchmarks=[bench.name],
        samples=samples,
        temperature=cfg.rollout.temperature,
        max_new_tokens=cfg.solver.max_new_tokens or cfg.rollout.max_new_tokens,
        solver_prompt=cfg.solver.prompt,
        seed=seed,
        limit=limit,
    )
    model, tok = load_model_for_eval(str(model_dir), seed=seed, threads=cfg.run.threads or None)
    generator = BackendGenerator(
        HFBackend(model, tok, generation_batch_size=64),
        tok,
        few_shot=0,
        temperature=settings.temperature,
        top_p=1.0,
        max_new_tokens=settings.max_new_tokens,
        template=cfg.solver.prompt,
    )
    with Grader(GraderConfig(workers=1)) as grader:
        results = run_eval(settings, [bench], generator, grader.grade_batch, out, problems_per_call=16)
    return float(results["average"]["pass@1"])


def run_demo(
    out: str | Path,
    *,
    seed: int = 0,
    steps: int = DEFAULT_STEPS,
    ablation: str | None = None,
    overrides: list[str] | None = None,
    overwrite: bool = False,
    relabel: Callable[[str], str | None] | None = None,
    label: str | None = None,
    models: Path | None = None,
    eval_limit: int | None = None,
    cold_start_eval: Path | None = None,
) -> dict[str, Any]:
    """Run the whole demo into ``out``; return ``summary.json``'s content.

    ``cold_start_eval``: a finished evaluation of the same cold-start Solver with the same seed and
    ``eval_limit`` (``OUT/eval/cold_start`` of an earlier demo), copied instead of computed again
    (``benchmarks/paper_in_miniature.py`` runs several variants per seed; the numbers are the same)."""
    from pasodoble.train import run_training, total_steps

    if ablation is not None and ablation not in ABLATIONS:
        raise UserError(f"--ablation must be one of {', '.join(ABLATIONS)}; got {ablation!r}")
    out = Path(out)
    check_out_dir(out, "--out")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise UserError(f"{out} is not empty; pass --overwrite to replace it or choose another --out")
        # only what a demo wrote, in a directory it marked (rundir.clear_owned lists anything else)
        clear_owned(out, marker=DEMO_MARKER, owned=DEMO_OWNED, writer="pasodoble demo", field="--out")
    out.mkdir(parents=True, exist_ok=True)
    write_marker(out, DEMO_MARKER)
    started = time.perf_counter()
    models = models_dir() if models is None else Path(models)
    heldout, knowledge = world_data(cache_dir() / "data")
    cfg = demo_config(out, seed, models, knowledge, heldout, steps, ablation, list(overrides or []))

    # The cold-start Solver, copied next to the final one and evaluated the same way.
    shutil.copytree(models / "solver_cold_start", out / "solver_cold_start")
    reuse = cold_start_eval is not None and (Path(cold_start_eval) / "results.json").is_file()
    if reuse:
        shutil.copytree(Path(cold_start_eval), out / "eval" / "cold_start")
        results = json.loads((out / "eval" / "cold_start" / "results.json").read_text())
        before = float(results["average"]["pass@1"])
    else:
        before = evaluate_solver(
            out / "solver_cold_start",
            heldout,
            out / "eval" / "cold_start",
            cfg,
            seed=seed,
            samples=EVAL_SAMPLES,
            limit=eval_limit,
        )
    print(f"pasodoble demo: cold-start Solver held-out pass@1 = {100 * before:.1f}%")

    t_train = time.perf_counter()
    run_training(cfg, relabel=relabel)
    train_seconds = time.perf_counter() - t_train
    run_dir = Path(cfg.run.out_dir)
    shutil.copytree(run_dir / "solver_final", out / "solver_final")
    after = evaluate_solver(
        out / "solver_final",
        heldout,
        out / "eval" / "final",
        cfg,
        seed=seed,
        samples=EVAL_SAMPLES,
        limit=eval_limit,
    )
    print(f"pasodoble demo: trained Solver held-out pass@1 = {100 * after:.1f}%")

    from pasodoble.toy.report import write_demo_report

    summary = write_demo_report(
        out,
        run_dir,
        accuracy_before=before,
        accuracy_after=after,
        steps=total_steps(cfg),  # offline runs: max_steps phases of K_p + K_s steps
        wall_time_s=time.perf_counter() - started,
        train_time_s=train_seconds,
        seed=seed,
        ablation=ablation,
        label=label,
        true_answers=relabel is not None,
    )
    return summary
