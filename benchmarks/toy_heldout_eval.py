"""Held-out pass@1 of a toy Solver with the demo's protocol (the 500 held-out problems x 4 samples at
the training temperature, one seed per problem), without a dual-play run.

    .venv/bin/python benchmarks/toy_heldout_eval.py --model runs/probe/solver_cold_start --seed 0 --out runs/probe-final-eval

Prints ``{"heldout_pass@1": ..., "interval": [lo, hi]}`` (the 95% bootstrap interval over problems) and
writes the evaluation (``pasodoble eval`` format) to OUT. The number equals what ``pasodoble demo
--models DIR --seed S`` reports as "before" for that Solver (same function, same seed).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="a toy Solver model directory")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--limit", type=int, default=None, help="only the first N held-out problems")
    args = ap.parse_args(argv)
    from pasodoble.toy.build import ASSETS
    from pasodoble.toy.demo import EVAL_SAMPLES, cache_dir, demo_config, evaluate_solver, world_data
    from pasodoble.toy.intervals import bootstrap_interval, per_problem
    from pasodoble.toy.report import read_samples

    out = Path(args.out)
    heldout, knowledge = world_data(cache_dir() / "data")
    cfg = demo_config(out, args.seed, ASSETS, knowledge, heldout, 1, None, [f"run.threads={args.threads}"])
    acc = evaluate_solver(
        Path(args.model), heldout, out / "eval", cfg, seed=args.seed, samples=EVAL_SAMPLES, limit=args.limit
    )
    scores = per_problem(read_samples(out / "eval"))
    print(json.dumps({"heldout_pass@1": acc, "interval": list(bootstrap_interval(list(scores.values())))}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
