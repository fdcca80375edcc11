"""The demo over several seeds: dual-play, the coin-flip ablation and (for diagnosis) true answers.

    .venv/bin/python benchmarks/demo_seeds.py --out runs/demo-seeds --seeds 0 1 2 --jobs 2

Runs ``pasodoble demo`` for every (variant, seed), ``--jobs`` at a time (sharing the demo's torch
threads: one each with the default two jobs), and
prints per-seed held-out pass@1 before and after, the gain, and the label precision of the run: the
share of the Proposer's answers that are right, over valid questions and over the questions the
Solver trained on. Variants:

- ``dual-play``: the demo as shipped (every label is the Proposer's boxed answer);
- ``random-reward``: ``--ablation random-reward`` (the Solver's correctness reward is a coin flip);
- ``true-answer``: diagnosis only, not PasoDoble: each valid canonical question's label is replaced by
  its true value (computed here, by the toy generator) before the rewards, so the gain of dual-play
  reads against what perfect labels give in the same budget.

The label-precision numbers and the true-answer labels use ``pasodoble.toy.family.evaluate``, which
this script imports; the dual-play code path itself never does (``tests/unit/toy/test_data.py``).
Results go to OUT/results.json, OUT/results.md (the table, with each run's share of worked-style
answers before and after) and OUT/accuracy.png (held-out pass@1 and worked share against step for
every variant and seed, on a 0-100 axis).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

VARIANTS = ("dual-play", "random-reward", "true-answer")


def true_answer(problem: str) -> str | None:
    from pasodoble.toy.family import evaluate, parse_canonical

    expr = parse_canonical(problem.strip())
    return None if expr is None else str(evaluate(expr))


def label_precision(run_dir: Path) -> dict[str, float | int | None]:
    """Right Proposer answers over valid canonical questions, and over those the Solver trained on."""
    valid = valid_right = trained = trained_right = canonical = 0
    for line in (run_dir / "rollouts.jsonl").read_text().splitlines():
        r = json.loads(line)
        if not r.get("valid"):
            continue
        valid += 1
        truth = true_answer(r["problem"])
        if truth is None:
            continue
        canonical += 1
        right = str(r["answer"]).strip() == truth
        valid_right += right
        if r.get("solver_trained"):
            trained += 1
            trained_right += right
    return {
        "valid_questions": valid,
        "canonical_share": canonical / valid if valid else None,
        "label_precision_valid": valid_right / canonical if canonical else None,
        "label_precision_trained": trained_right / trained if trained else None,
        "trained_questions": trained,
    }


def run_one(variant: str, seed: int, out: Path, steps: int, overrides: list[str], models: str | None) -> dict:
    from pasodoble.toy.demo import run_demo

    summary = run_demo(
        out,
        seed=seed,
        steps=steps,
        ablation="random-reward" if variant == "random-reward" else None,
        overrides=overrides,
        overwrite=True,
        relabel=true_answer if variant == "true-answer" else None,
        label=variant,
        models=Path(models) if models else None,
    )
    summary.update(label_precision(out / "run"))
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/demo-seeds")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    ap.add_argument("--steps", type=int, default=None, help="dual-play steps (default: the demo's)")
    ap.add_argument(
        "--jobs", type=int, default=2, help="runs at a time (they share the demo's 2 torch threads)"
    )
    ap.add_argument("--models", default=None, help="toy models directory (default: the demo's)")
    ap.add_argument("--one", nargs=2, metavar=("VARIANT", "SEED"), help=argparse.SUPPRESS)
    ap.add_argument("overrides", nargs="*", help="training config overrides for every run")
    args = ap.parse_args(argv)
    from pasodoble.toy.demo import DEFAULT_STEPS

    steps = args.steps or DEFAULT_STEPS
    out = Path(args.out)
    if args.one:
        variant, seed = args.one[0], int(args.one[1])
        run_one(variant, seed, out / f"{variant}-seed{seed}", steps, args.overrides, args.models)
        return 0

    jobs = [(v, s) for s in args.seeds for v in args.variants]
    out.mkdir(parents=True, exist_ok=True)
    running: list[tuple[subprocess.Popen, str, int]] = []
    failed = []
    started = time.perf_counter()
    from pasodoble.toy.demo import demo_threads

    threads = max(1, demo_threads() // args.jobs)  # the demo's threads shared among the jobs
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    while jobs or running:
        while jobs and len(running) < args.jobs:
            v, s = jobs.pop(0)
            log = open(out / f"{v}-seed{s}.log", "w")
            cmd = [sys.executable, __file__, "--out", str(out), "--steps", str(steps), "--one", v, str(s)]
            if args.models:
                cmd += ["--models", args.models]
            running.append(
                (
                    subprocess.Popen(
                        [*cmd, f"run.threads={threads}", *args.overrides],
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        env=env,
                    ),
                    v,
                    s,
                )
            )
            print(f"started {v} seed {s}", flush=True)
        time.sleep(2)
        for item in list(running):
            proc, v, s = item
            if proc.poll() is not None:
                running.remove(item)
                print(
                    f"finished {v} seed {s} (exit {proc.returncode}) at {time.perf_counter() - started:.0f} s",
                    flush=True,
                )
                if proc.returncode:
                    failed.append((v, s))

    results = {}
    for v in args.variants:
        for s in args.seeds:
            path = out / f"{v}-seed{s}" / "summary.json"
            if path.is_file():
                results[f"{v}-seed{s}"] = json.loads(path.read_text())
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    md = results_markdown(results, args.variants, args.seeds, steps)
    (out / "results.md").write_text(md)
    if results:
        plot_variants(results, out / "accuracy.png", steps)
    print(md)
    if failed:
        print(f"failed runs: {failed} (see their .log files in {out})", file=sys.stderr)
        return 1
    return 0


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def results_markdown(results: dict, variants: list[str], seeds: list[int], steps: int) -> str:
    lines = [
        f"# Demo over seeds ({steps} dual-play steps)",
        "",
        "| variant | seed | before % | after % | gain (points) | worked share before → after % | valid-question rate % | label precision, valid % | label precision, trained % | wall s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for v in variants:
        gains = []
        for s in seeds:
            r = results.get(f"{v}-seed{s}")
            if r is None:
                lines.append(f"| {v} | {s} | failed | | | | | | | |")
                continue
            gains.append(r["gain_points"])
            lines.append(
                f"| {v} | {s} | {_pct(r['accuracy_before'])} | {_pct(r['accuracy_after'])} | {r['gain_points']:+.1f} | "
                f"{_pct(r.get('worked_share_before'))} → {_pct(r.get('worked_share_after'))} | "
                f"{_pct(r['valid_question_rate'])} | {_pct(r.get('label_precision_valid'))} | "
                f"{_pct(r.get('label_precision_trained'))} | {r['wall_time_s']:.0f} |"
            )
        if gains:
            lines.append(f"| **{v} mean** | | | | **{sum(gains) / len(gains):+.1f}** | | | | | |")
    lines.append("")
    return "\n".join(lines)


COLORS = {"dual-play": "tab:blue", "random-reward": "tab:red", "true-answer": "tab:gray"}


def plot_variants(results: dict, path: Path, steps: int) -> None:
    """Held-out pass@1 (left) and worked-style share (right) against step, one colour per variant:
    each seed's in-training curve (thin; the demo's subset of the held-out set) and the full-set
    evaluations at the start and the end (dots), on 0-100 axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharex=True)
    for ax, key, name in zip(
        axes, ("accuracy", "worked_share"), ("held-out pass@1 (%)", "worked-style share (%)"), strict=True
    ):
        labelled = set()
        for run, r in results.items():
            variant = r.get("label") or run.rsplit("-seed", 1)[0]
            color = COLORS.get(variant, "black")
            curve = r.get("curve") or []
            sub = [p for p in curve if p["evaluated_on"] == "subset" and p.get(key) is not None]
            full = [p for p in curve if p["evaluated_on"] == "all" and p.get(key) is not None]
            label = (
                None
                if variant in labelled
                else variant + (" (diagnosis)" if variant == "true-answer" else "")
            )
            labelled.add(variant)
            if sub:
                ax.plot(
                    [p["step"] for p in sub],
                    [100 * p[key] for p in sub],
                    color=color,
                    ls="--" if variant == "true-answer" else "-",
                    lw=1,
                    alpha=0.7,
                    label=label,
                )
                label = None
            ax.plot(
                [p["step"] for p in full], [100 * p[key] for p in full], "o", color=color, ms=6, label=label
            )
        ax.set_ylim(0, 100)
        ax.set_xlabel("dual-play step")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small", loc="lower right")
    fig.suptitle(
        f"Demo over seeds, {steps} steps: lines on the in-training subset, dots on the whole held-out set"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
