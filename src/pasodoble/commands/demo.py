"""`pasodoble demo --out DIR [--seed S] [--ablation random-reward|partial-random-reward]`: dual-play on the toy world, on CPU."""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from pasodoble.toy.demo import ABLATIONS, DEFAULT_STEPS

    parser.add_argument(
        "--out", default="runs/demo", help="demo directory (report.md, summary.json, plots, models)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the dual-play run and the evaluations")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="online dual-play steps")
    parser.add_argument(
        "--ablation",
        choices=ABLATIONS,
        default=None,
        help="random-reward: the Solver's correctness reward is a coin flip (the paper's control); "
        "partial-random-reward: a coin flip only for answers with a boxed final answer, 0 otherwise",
    )
    parser.add_argument(
        "--models",
        default=None,
        help="directory of toy models from `pasodoble toy build` (default: the shipped ones)",
    )
    parser.add_argument(
        "--eval-limit",
        type=int,
        default=None,
        help="evaluate before and after on the first N held-out problems only (quick checks; default all 500)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing demo directory")
    parser.add_argument(
        "overrides", nargs="*", help="training config overrides, e.g. solver.learning_rate=3e-5"
    )


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pasodoble.config import MAX_SEED, parse_overrides
    from pasodoble.errors import UserError
    from pasodoble.rundir import check_writable
    from pasodoble.toy.demo import MODEL_DIRS, run_demo

    if args.steps < 1:
        raise UserError(f"--steps must be >= 1; got {args.steps}")
    if not 0 <= args.seed <= MAX_SEED:
        raise UserError(f"--seed must be in 0..{MAX_SEED} (2^32 - 1); got {args.seed}")
    if "out_dir" in parse_overrides(args.overrides).get("run", {}):
        raise UserError(
            f"run.out_dir is the demo's own ({args.out}/run, which report.md describes); choose the demo "
            "directory with --out instead"
        )
    out = Path(args.out)
    refused = out.is_dir() and any(out.iterdir()) and not args.overwrite  # run_demo says so first
    if args.models and not refused:
        missing = [name for name in MODEL_DIRS if not (Path(args.models) / name / "config.json").is_file()]
        if missing:
            raise UserError(
                f"--models {args.models} is not a toy build's model directory (no {', '.join(missing)} with a "
                "config.json); give the --out of `pasodoble toy build`, or omit --models for the shipped ones"
            )
    check_writable(Path(args.out), "--out")
    if args.eval_limit is not None and args.eval_limit < 1:
        raise UserError(f"--eval-limit must be >= 1; got {args.eval_limit}")
    summary = run_demo(
        args.out,
        seed=args.seed,
        steps=args.steps,
        ablation=args.ablation,
        overrides=args.overrides,
        overwrite=args.overwrite,
        models=Path(args.models) if args.models else None,
        eval_limit=args.eval_limit,
    )
    print(json.dumps(summary, indent=2))
    print(f"wrote {args.out}/report.md, summary.json, plots, solver_cold_start/ and solver_final/")
    return 0
