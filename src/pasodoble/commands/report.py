"""`pasodoble report`: compare evaluation results side by side (the paper's Table 1 layout) with a chart.

    pasodoble report RUN_A RUN_B ... [--labels base,cold,online,offline] [--metric pass@1] --out DIR

Each RUN is a results.json or a directory holding one (or holding eval/results.json). Writes
OUT/report.md, OUT/report.json and OUT/report.png.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", nargs="+", help="results.json files or directories containing one")
    parser.add_argument(
        "--labels", default=None, help="comma-separated row labels (default: directory names)"
    )
    parser.add_argument("--metric", default="pass@1", help="pass@1 (default), maj@k or pass@k")
    parser.add_argument("--out", required=True, help="output directory")


def run(args: argparse.Namespace) -> int:
    from pasodoble.eval.report import write_report
    from pasodoble.rundir import check_output_dir

    check_output_dir(args.out)

    labels = [x.strip() for x in args.labels.split(",")] if args.labels else None
    write_report(args.results, args.out, labels=labels, metric=args.metric)
    print((Path(args.out) / "report.md").read_text(), end="")
    print(f"wrote {args.out}/report.md, report.json, report.png")
    return 0
