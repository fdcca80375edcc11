"""`pasodoble report`: compare evaluation results side by side (the paper's Table 1 layout) with a chart,
or plot training runs' metrics.jsonl.

    pasodoble report RUN_A RUN_B ... [--labels base,cold,online,offline] [--metric pass@1] --out DIR
    pasodoble report RUN_DIR [RUN_DIR ...] [--labels ...] [--out DIR]

Each RUN is a results.json or a directory holding one (or holding eval/results.json). A training run
directory (one holding metrics.jsonl) gets plots of its metrics over the steps instead: rewards, pass and
valid rates, losses, gradient norms, lengths, updates and skips, the buffer and held-out pass@1 where
logged; several run directories are drawn together; one run directory writes into RUN_DIR/report unless
--out is given. Writes OUT/report.md, OUT/report.json and OUT/report.png.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "results",
        nargs="+",
        help="results.json files or directories containing one, or training run directories",
    )
    parser.add_argument(
        "--labels", default=None, help="comma-separated row labels (default: directory names)"
    )
    parser.add_argument("--metric", default="pass@1", help="pass@1 (default), maj@k or pass@k")
    parser.add_argument(
        "--out",
        default=None,
        help="output directory (default for one training run directory: RUN_DIR/report)",
    )


def run(args: argparse.Namespace) -> int:
    from pasodoble.errors import UserError
    from pasodoble.eval.report import is_run_dir, write_report, write_training_report
    from pasodoble.rundir import check_output_dir

    labels = [x.strip() for x in args.labels.split(",")] if args.labels else None
    runs = [is_run_dir(p) for p in args.results]
    if any(runs) and not all(runs):
        mixed = [p for p, r in zip(args.results, runs, strict=True) if r]
        raise UserError(
            f"{mixed[0]} is a training run directory and other arguments are evaluation results; report either "
            "training runs (their metrics.jsonl) or evaluation results, not both"
        )
    if all(runs):
        out = args.out
        if out is None:
            if len(args.results) > 1:
                raise UserError("give --out DIR for a report of several training runs")
            out = str(Path(args.results[0]) / "report")
        check_output_dir(out)
        summary = write_training_report(args.results, out, labels=labels)
        panels = ", ".join(summary["panels"])
        print(f"wrote {out}/report.md, report.json, report.png ({panels})")
        return 0
    if args.out is None:
        raise UserError("give --out DIR for the report of evaluation results")
    check_output_dir(args.out)
    write_report(args.results, args.out, labels=labels, metric=args.metric)
    print((Path(args.out) / "report.md").read_text(), end="")
    print(f"wrote {args.out}/report.md, report.json, report.png")
    return 0
