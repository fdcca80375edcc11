"""The paper's experiments in the toy world, 3 seeds each, in one table (issue 23).

    .venv/bin/python benchmarks/paper_in_miniature.py --out runs/paper            # 3 seeds, 2 jobs

Every run is ``pasodoble demo`` on the toy models (the shipped ones, or ``--models DIR``) with the
demo's settings (``toy.demo.DEMO_CONFIG``, 20 steps) and one change per variant:

- ``dual-play``: the demo as shipped (online: both roles every step);
- ``offline``: the paper's second mode, alternating phases through the question buffer
  (``run.mode=offline``): ``OFFLINE_PHASES`` phases of K_p = 5 Proposer updates, whose valid trainable
  questions enter the buffer, and K_s = 5 Solver updates on 8 buffered questions each; 20 Solver
  updates at most, as many as the online run's 20 steps;
- ``random-reward``: the Solver's reward is a coin flip (``rewards.solver_reward=random``);
- ``partial-random-reward``: a coin flip only for answers with a boxed final answer, 0 for the others
  (``rewards.solver_reward=partial-random``);
- ``no-knowledge``: the Proposer is prompted without a snippet (``knowledge.enabled=false``);
- ``true-answer``: diagnosis, not PasoDoble: each valid canonical question's label is replaced by its
  true value (``benchmarks/demo_seeds.py``).

Then the memorization analysis of the paper (``pasodoble analyze memorization``): each dual-play and
no-knowledge run's final Proposer gets the first 20/40/60/80% of the tokens of each valid question it
wrote and continues greedily; exact match and ROUGE-L of the continuation against the rest.

Runs go ``--jobs`` at a time, sharing the 2 torch threads (1 each with the default 2 jobs); the
variants of one seed reuse the dual-play run's evaluation of the cold start (the same model, seed and
problems, so the same numbers). Everything is deterministic per seed. Writes OUT/<variant>-seed<S>/
(each a demo directory, with the 95% intervals of its gain), OUT/memorization-<variant>-seed<S>/,
OUT/results.json and OUT/results.md (the tables), and prints the tables.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from demo_seeds import label_precision, true_answer  # noqa: E402

VARIANTS = (
    "dual-play",
    "offline",
    "random-reward",
    "partial-random-reward",
    "no-knowledge",
    "true-answer",
)
ABLATION = {"random-reward": "random-reward", "partial-random-reward": "partial-random-reward"}
# offline: OFFLINE_PHASES x (K_p Proposer + K_s Solver updates); K_s x OFFLINE_PHASES = the online steps
OFFLINE_K = 5
OFFLINE_BATCH = 8  # questions per offline Solver update (the online run trains on about this many)
MEMORIZATION_VARIANTS = ("dual-play", "no-knowledge")
RUN_ORDER = ("dual-play", "offline", "partial-random-reward", "no-knowledge", "random-reward", "true-answer")
PREFIXES = (0.2, 0.4, 0.6, 0.8)


def variant_overrides(variant: str, steps: int) -> tuple[int, list[str]]:
    """(run_demo's steps, config overrides) of a variant."""
    if variant == "offline":
        if steps % OFFLINE_K:
            raise SystemExit(
                f"--steps must be a multiple of {OFFLINE_K} for the offline variant; got {steps}"
            )
        return steps // OFFLINE_K, [
            "run.mode=offline",
            f"proposer.updates_per_phase={OFFLINE_K}",
            f"solver.updates_per_phase={OFFLINE_K}",
            f"solver.batch_questions={OFFLINE_BATCH}",
            f"eval.every={2 * OFFLINE_K}",  # after every phase pair, as often as the online run's every 5
        ]
    if variant == "no-knowledge":
        return steps, ["knowledge.enabled=false"]
    return steps, []


def solver_updates(run_dir: Path) -> int:
    """Steps in which the Solver was updated (online steps and offline Solver steps not skipped)."""
    n = 0
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r.get("phase") in ("online", "offline_solver") and not r.get("step/skipped"):
            n += 1
    return n


def run_variant(
    variant: str,
    seed: int,
    out: Path,
    steps: int,
    overrides: list[str],
    models: str | None,
    eval_limit: int | None = None,
) -> None:
    from pasodoble.toy.demo import run_demo

    run_steps, extra = variant_overrides(variant, steps)
    cold = out / f"dual-play-seed{seed}" / "eval" / "cold_start"
    ready = (
        variant != "dual-play" and (cold / "results.json").is_file() and (cold / "samples.jsonl").is_file()
    )
    summary = run_demo(
        out / f"{variant}-seed{seed}",
        seed=seed,
        steps=run_steps,
        ablation=ABLATION.get(variant),
        overrides=[*extra, *overrides],
        overwrite=True,
        relabel=true_answer if variant == "true-answer" else None,
        label=variant,
        models=Path(models) if models else None,
        cold_start_eval=cold if ready else None,
        eval_limit=eval_limit,
    )
    run_dir = out / f"{variant}-seed{seed}" / "run"
    summary.update(label_precision(run_dir))
    summary["solver_updates"] = solver_updates(run_dir)
    summary["cold_start_eval_reused"] = ready
    (out / f"{variant}-seed{seed}" / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


def run_memorization(variant: str, seed: int, out: Path, threads: int) -> None:
    from pasodoble.errors import UserError
    from pasodoble.eval.memorization import analyze_memorization, read_questions, write_memorization
    from pasodoble.eval.runner import load_model_for_eval

    run = out / f"{variant}-seed{seed}" / "run"
    try:
        questions = read_questions(run / "rollouts.jsonl", valid_only=True)
    except UserError:  # the run wrote no valid question: nothing to analyze (n = 0 at every prefix)
        questions = []
    if questions:
        model, tok = load_model_for_eval(str(run / "proposer_final"), threads=threads)
        summary, details = analyze_memorization(model, tok, questions, PREFIXES, batch_size=32)
    else:
        summary = [
            {"prefix": x, "n": 0, "skipped": 0, "exact_match": None, "rouge_l": None} for x in PREFIXES
        ]
        dest = out / f"memorization-{variant}-seed{seed}"
        dest.mkdir(parents=True, exist_ok=True)
        payload = {"model": str(run / "proposer_final"), "n_questions": 0, "prefixes": summary}
        (dest / "memorization.json").write_text(json.dumps(payload, indent=2) + "\n")
        return
    write_memorization(
        out / f"memorization-{variant}-seed{seed}",
        summary,
        details,
        model=str(run / "proposer_final"),
        questions=str(run / "rollouts.jsonl"),
        n_questions=len(questions),
    )


def _mean_sd(xs: list[float]) -> str:
    xs = [x for x in xs if x is not None]
    if not xs:
        return "-"
    if len(xs) == 1:
        return f"{xs[0]:.1f}"  # one seed: no spread to show
    return f"{statistics.mean(xs):.1f} ± {statistics.stdev(xs):.1f}"


def _pct(x: float | None) -> float | None:
    return None if x is None else 100 * x


def results_markdown(
    results: dict, memorization: dict, seeds: list[int], steps: int, wall: float | None
) -> str:
    lines = [
        f"# The paper in miniature ({steps} Solver updates at most per run, seeds {', '.join(map(str, seeds))})",
        "",
        "Held-out pass@1: 500 canonical problems x 4 samples at temperature 1.0, before and after. Mean ± "
        "standard deviation over the seeds; the per-seed gains with their 95% intervals (paired bootstrap "
        "over problems) follow.",
        "",
        "| variant | seeds | gain (points) | before % | after % | valid-question rate % | Solver pass rate % | "
        "label precision, trained % | Solver updates | worked share after % |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for v in VARIANTS:
        rs = [results[f"{v}-seed{s}"] for s in seeds if f"{v}-seed{s}" in results]
        if not rs:
            continue
        lines.append(
            f"| {v} | {len(rs)} | **{_mean_sd([r['gain_points'] for r in rs])}** | "
            f"{_mean_sd([_pct(r['accuracy_before']) for r in rs])} | "
            f"{_mean_sd([_pct(r['accuracy_after']) for r in rs])} | "
            f"{_mean_sd([_pct(r['valid_question_rate']) for r in rs])} | "
            f"{_mean_sd([_pct(r['mean_pass_rate']) for r in rs])} | "
            f"{_mean_sd([_pct(r.get('label_precision_trained')) for r in rs])} | "
            f"{_mean_sd([r.get('solver_updates') for r in rs])} | "
            f"{_mean_sd([_pct(r.get('worked_share_after')) for r in rs])} |"
        )
    lines += [
        "",
        "| variant | seed | before % | after % | gain (points) | 95% interval of the gain | wall s |",
    ]
    lines.append("| --- | --- | --- | --- | --- | --- | --- |")
    for v in VARIANTS:
        for s in seeds:
            r = results.get(f"{v}-seed{s}")
            if r is None:
                continue
            ci = r.get("gain_points_ci") or [None, None]
            lines.append(
                f"| {v} | {s} | {100 * r['accuracy_before']:.1f} | {100 * r['accuracy_after']:.1f} | "
                f"{r['gain_points']:+.1f} | {ci[0]:+.1f} to {ci[1]:+.1f} | {r['wall_time_s']:.0f} |"
            )
    if memorization:
        lines += [
            "",
            "Memorization of the Proposer's valid questions (its final model continues the first x% of each "
            "question's tokens greedily; mean ± sd over seeds, %):",
            "",
            "| prefix | exact match, with knowledge | ROUGE-L, with knowledge | exact match, no knowledge | "
            "ROUGE-L, no knowledge |",
            "| --- | --- | --- | --- | --- |",
        ]
        for x in PREFIXES:
            row = [f"| {int(100 * x)}%"]
            for v in MEMORIZATION_VARIANTS:
                for key in ("exact_match", "rouge_l"):
                    vals = []
                    for s in seeds:
                        m = memorization.get(f"{v}-seed{s}")
                        if m:
                            vals += [100 * p[key] for p in m if abs(p["prefix"] - x) < 1e-9 and p["n"]]
                    row.append(_mean_sd(vals))
            lines.append(" | ".join(row) + " |")
        counts = {k: m[0]["n"] + m[0]["skipped"] for k, m in memorization.items()}
        lines += [
            "",
            "Distinct valid questions analyzed per run: " + ", ".join(f"{k} {n}" for k, n in counts.items()),
        ]
    if wall is not None:
        lines += ["", f"Wall time of the whole command: {wall / 60:.1f} minutes."]
    lines.append("")
    return "\n".join(lines)


def collect(out: Path, seeds: list[int]) -> tuple[dict, dict]:
    results, memorization = {}, {}
    for v in VARIANTS:
        for s in seeds:
            path = out / f"{v}-seed{s}" / "summary.json"
            if path.is_file():
                results[f"{v}-seed{s}"] = json.loads(path.read_text())
    for v in MEMORIZATION_VARIANTS:
        for s in seeds:
            path = out / f"memorization-{v}-seed{s}" / "memorization.json"
            if path.is_file():
                data = json.loads(path.read_text())
                memorization[f"{v}-seed{s}"] = data["prefixes"]
    return results, memorization


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/paper")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    ap.add_argument(
        "--steps", type=int, default=None, help="online steps = Solver updates (default: the demo's)"
    )
    ap.add_argument(
        "--jobs", type=int, default=2, help="runs at a time (they share the demo's 2 torch threads)"
    )
    ap.add_argument("--models", default=None, help="toy models directory (default: the demo's)")
    ap.add_argument(
        "--eval-limit",
        type=int,
        default=None,
        help="held-out problems before and after (quick checks; default 500)",
    )
    ap.add_argument("--no-memorization", action="store_true", help="skip the memorization analysis")
    ap.add_argument(
        "--resume",
        action="store_true",
        help="keep the runs of OUT that finished (summary.json) and run the rest",
    )
    ap.add_argument("--table-only", action="store_true", help="only (re)write the tables from OUT")
    ap.add_argument("--one", nargs=2, metavar=("VARIANT", "SEED"), help=argparse.SUPPRESS)
    ap.add_argument("--memorize", nargs=2, metavar=("VARIANT", "SEED"), help=argparse.SUPPRESS)
    ap.add_argument("overrides", nargs="*", help="training config overrides for every run")
    args = ap.parse_args(argv)
    from pasodoble.toy.demo import DEFAULT_STEPS, demo_threads

    steps = args.steps or DEFAULT_STEPS
    out = Path(args.out)
    threads = max(1, demo_threads() // args.jobs)
    if args.one:
        run_variant(args.one[0], int(args.one[1]), out, steps, args.overrides, args.models, args.eval_limit)
        return 0
    if args.memorize:
        run_memorization(args.memorize[0], int(args.memorize[1]), out, threads)
        return 0

    started = time.perf_counter()
    failed: list[str] = []
    if not args.table_only:
        out.mkdir(parents=True, exist_ok=True)
        # seed-major, each seed in RUN_ORDER: the dual-play run (whose cold-start evaluation the others
        # reuse) first, the controls that issue 18 already measured with the same command last, then the
        # memorization analyses; so a partial run has every variant of its first seeds
        jobs: list[tuple[str, list[str]]] = []
        for s in args.seeds:
            for v in sorted(args.variants, key=RUN_ORDER.index):
                if args.resume and (out / f"{v}-seed{s}" / "summary.json").is_file():
                    continue
                cmd = ["--one", v, str(s), "--steps", str(steps)]
                if args.models:
                    cmd += ["--models", args.models]
                if args.eval_limit:
                    cmd += ["--eval-limit", str(args.eval_limit)]
                jobs.append((f"{v}-seed{s}", [*cmd, f"run.threads={threads}", *args.overrides]))
            for v in MEMORIZATION_VARIANTS:
                done = (out / f"memorization-{v}-seed{s}" / "memorization.json").is_file()
                if v in args.variants and not args.no_memorization and not (args.resume and done):
                    jobs.append((f"memorization-{v}-seed{s}", ["--memorize", v, str(s)]))
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        running: list[tuple[subprocess.Popen, str]] = []
        while jobs or running:
            while jobs and len(running) < args.jobs:
                # the first job that can start: a memorization waits for its run to finish
                pick = None
                for k, (name, _) in enumerate(jobs):
                    source = name.removeprefix("memorization-")
                    if name == source or (out / source / "summary.json").is_file():
                        pick = k
                        break
                    if not any(n == source for _, n in running) and not any(n == source for n, _ in jobs):
                        pick = k  # its run failed
                        break
                if pick is None:
                    break
                name, cmd = jobs.pop(pick)
                source = name.removeprefix("memorization-")
                if name != source and not (out / source / "summary.json").is_file():
                    failed.append(name)
                    continue
                log = open(out / f"{name}.log", "w")
                proc = subprocess.Popen(
                    [sys.executable, __file__, "--out", str(out), *cmd],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                )
                running.append((proc, name))
                print(f"started {name} at {time.perf_counter() - started:.0f} s", flush=True)
            time.sleep(2)
            for item in list(running):
                proc, name = item
                if proc.poll() is not None:
                    running.remove(item)
                    print(
                        f"finished {name} (exit {proc.returncode}) at {time.perf_counter() - started:.0f} s",
                        flush=True,
                    )
                    if proc.returncode:
                        failed.append(name)
    wall = None if args.table_only else time.perf_counter() - started
    results, memorization = collect(out, args.seeds)
    (out / "results.json").write_text(
        json.dumps({"runs": results, "memorization": memorization, "wall_time_s": wall}, indent=2) + "\n"
    )
    md = results_markdown(results, memorization, args.seeds, steps, wall)
    (out / "results.md").write_text(md)
    print(md)
    if failed:
        print(f"failed: {failed} (see their .log files in {out})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
