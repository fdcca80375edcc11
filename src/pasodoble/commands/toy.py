"""`pasodoble toy build [--out DIR] [--export]`: build the toy world's data, tokenizer and models."""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="toy_command", required=True)
    b = sub.add_parser(
        "build", help="build data, tokenizer, base model and both cold-start models (resumable)"
    )
    b.add_argument("--out", default="runs/toy-build", help="build directory (stages already there are kept)")
    b.add_argument(
        "--export",
        action="store_true",
        help="also copy the three models in bfloat16 into the package (pasodoble/assets/toy), as shipped",
    )


def run(args: argparse.Namespace) -> int:
    from pasodoble.toy.build import build, export_assets

    manifest = build(args.out)
    print(json.dumps({k: manifest[k] for k in ("seconds", "solver_validation_accuracy")}, indent=1))
    if args.export:
        print(f"exported to {export_assets(args.out)}")
    return 0
